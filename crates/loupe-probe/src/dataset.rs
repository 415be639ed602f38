//! Probe datasets: binary features over the tokens of an activation store, or over its documents
//! (a document's example is the mean of its tokens' activations), split into training and
//! held-out examples by document.
//!
//! A feature is one of:
//! - `label`: a label field the store carries (`lang`, `source`, span labels): positive where the
//!   field has `value`, negative where it has another value. Without `value`, one feature per value
//!   ("is German", "is English", ... against the rest).
//! - `digit`: the token is a digit (SmolLM2 splits numbers into single digits).
//! - `quoted`: the token lies inside a quotation ("…", “…”, „…“, «…») of its document.
//! - `compound`: the token is the second word of a common English compound ("high *school*",
//!   "credit *card*"), the first word being the token before it.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use loupe_data::packing::{NO_DOC, NO_LABEL};
use loupe_data::reader::{Split, Store};
use loupe_model::{HookPoint, Tokenizer};
use loupe_util::Progress;
use serde::{Deserialize, Serialize};

use crate::matrix::Matrix;
use crate::{Error, Result};

/// Token-level or document-level examples.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    #[default]
    Token,
    Document,
}

/// A feature as a config names it (`[[feature]]`): its `kind` and that kind's fields (a field
/// of another kind is an error). `name` is the feature's name in files and tables; by default
/// `field=value` (`field=value@doc` at document level) or the kind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum FeatureSpec {
    /// A label the store carries, e.g. `field = "lang"`: tokens with `value` against the rest;
    /// without a value, one feature per value the store has.
    Label {
        field: String,
        #[serde(default)]
        value: Option<String>,
        /// `token` (each token) or `document` (the mean of a document's tokens).
        #[serde(default)]
        level: Level,
        #[serde(default)]
        name: Option<String>,
    },
    /// Tokens that are numbers.
    Digit {
        #[serde(default)]
        name: Option<String>,
    },
    /// Tokens inside a quotation.
    Quoted {
        #[serde(default)]
        name: Option<String>,
    },
    /// The second word of a two-word compound ("high school"); `words` default [`COMPOUNDS`].
    Compound {
        #[serde(default)]
        words: Option<Vec<String>>,
        #[serde(default)]
        name: Option<String>,
    },
}

/// Which feature kinds each kind-specific field belongs to, for errors about a misplaced one.
pub const FEATURE_FIELD_KINDS: &[(&str, &str)] = &[
    ("field", "label"),
    ("value", "label"),
    ("level", "label"),
    ("words", "compound"),
];

impl FeatureSpec {
    /// The name the config gives, if any.
    pub fn name(&self) -> Option<&String> {
        match self {
            FeatureSpec::Label { name, .. }
            | FeatureSpec::Digit { name }
            | FeatureSpec::Quoted { name }
            | FeatureSpec::Compound { name, .. } => name.as_ref(),
        }
    }
}

/// Common English two-word compounds.
pub const COMPOUNDS: &[&str] = &[
    "high school",
    "credit card",
    "ice cream",
    "living room",
    "post office",
    "real estate",
    "stock market",
    "health care",
    "bus stop",
    "swimming pool",
    "front door",
    "hot dog",
    "video game",
    "phone call",
    "police officer",
    "parking lot",
    "birth day",
    "life insurance",
    "bank account",
    "science fiction",
    "human rights",
    "united states",
    "new york",
    "prime minister",
    "white house",
    "home town",
    "good morning",
    "old man",
    "young man",
    "little girl",
];

/// A feature resolved against a store.
#[derive(Clone, Debug, PartialEq)]
pub struct Feature {
    pub name: String,
    pub level: Level,
    pub kind: FeatureKind,
}

#[derive(Clone, Debug, PartialEq)]
pub enum FeatureKind {
    /// Label field index and the id of the positive value in the store's label vocabulary.
    Label {
        field: usize,
        value: u32,
    },
    Digit,
    Quoted,
    /// (first word, second word), lower case.
    Compound(BTreeSet<(String, String)>),
}

/// Resolves `specs` against the store's label vocabulary: names each feature and expands a label
/// feature without a value into one feature per value.
pub fn resolve_features(specs: &[FeatureSpec], store: &Store) -> Result<Vec<Feature>> {
    let vocab = &store.manifest.labels;
    let mut features = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let at = |what: &str| format!("feature[{i}].{what}");
        let named = |default: String| spec.name().cloned().unwrap_or(default);
        let token_feature = |default: &str, kind: FeatureKind| Feature {
            name: named(default.into()),
            level: Level::Token,
            kind,
        };
        match spec {
            FeatureSpec::Label {
                field: field_name,
                value,
                level,
                name,
            } => {
                // Document-level features are named apart from the token-level ones they mirror.
                let suffix = if *level == Level::Document { "@doc" } else { "" };
                let field = vocab.fields.iter().position(|f| f == field_name).ok_or_else(|| {
                    Error::dataset(format!(
                        "{}: the store {} carries no label '{field_name}' (it has: {}); capture with labels = [\"{field_name}\"] in the corpus section",
                        at("field"),
                        store.dir.display(),
                        list(&vocab.fields)
                    ))
                })?;
                let values = &vocab.values[field];
                let chosen: Vec<u32> = match value {
                    Some(v) => vec![values.iter().position(|x| x == v).ok_or_else(|| {
                        Error::dataset(format!(
                            "{}: no token of the store {} has {field_name} = '{v}' (its values: {})",
                            at("value"),
                            store.dir.display(),
                            list(values)
                        ))
                    })? as u32],
                    None => (0..values.len() as u32).collect(),
                };
                if chosen.len() > 1 && name.is_some() {
                    return Err(Error::config(
                        &at("name"),
                        "a name fits one feature: give a value too, or leave the name out",
                    ));
                }
                for value in chosen {
                    features.push(Feature {
                        name: named(format!("{field_name}={}{}", values[value as usize], suffix)),
                        level: *level,
                        kind: FeatureKind::Label { field, value },
                    });
                }
            }
            FeatureSpec::Digit { .. } => features.push(token_feature("digit", FeatureKind::Digit)),
            FeatureSpec::Quoted { .. } => features.push(token_feature("quoted", FeatureKind::Quoted)),
            FeatureSpec::Compound { words, .. } => {
                let words: Vec<String> = match words {
                    Some(w) => w.clone(),
                    None => COMPOUNDS.iter().map(|s| s.to_string()).collect(),
                };
                let mut pairs = BTreeSet::new();
                for w in &words {
                    let parts: Vec<&str> = w.split_whitespace().collect();
                    let [first, second] = parts[..] else {
                        return Err(Error::config(&at("words"), format!("'{w}' is not two words")));
                    };
                    pairs.insert((first.to_lowercase(), second.to_lowercase()));
                }
                features.push(token_feature("compound", FeatureKind::Compound(pairs)));
            }
        }
    }
    for (i, f) in features.iter().enumerate() {
        if features[..i].iter().any(|g| g.name == f.name) {
            return Err(Error::config(
                "feature",
                format!("two features are named '{}'; give one a different `name`", f.name),
            ));
        }
    }
    Ok(features)
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

/// What every hook of a store shares: per stored token, where it comes from and its labels.
#[derive(Clone, Debug, Default)]
pub struct Tokens {
    pub token_ids: Vec<u32>,
    pub doc_ids: Vec<u32>,
    pub context_ids: Vec<u32>,
    pub positions: Vec<u32>,
    /// `labels[field][row]`.
    pub labels: Vec<Vec<u32>>,
}

/// One hook's activations over the first `max_tokens` tokens of a store.
pub struct Examples {
    pub hook: HookPoint,
    pub tokens: Tokens,
    pub x: Matrix,
}

/// Reads `hook` from the store's shards, in order, until `max_tokens` tokens.
pub fn load_examples(
    store: &Store,
    hook: HookPoint,
    max_tokens: Option<usize>,
    progress: &mut dyn Progress,
) -> Result<Examples> {
    let width = store
        .manifest
        .hook(hook)
        .ok_or_else(|| {
            let held: Vec<String> = store.manifest.hooks.iter().map(|h| h.name.to_string()).collect();
            Error::dataset(format!(
                "the store {} holds no activations for {hook}; it has {}",
                store.dir.display(),
                held.join(", ")
            ))
        })?
        .width;
    let limit = max_tokens
        .unwrap_or(usize::MAX)
        .min(store.manifest.tokens as usize);
    progress.start(&format!("reading {hook}"), limit as u64, 0);
    let mut tokens = Tokens {
        labels: vec![Vec::new(); store.manifest.labels.fields.len()],
        ..Default::default()
    };
    let mut data: Vec<f32> = Vec::with_capacity(limit * width);
    for shard in 0..store.manifest.shards.len() {
        let rows = tokens.token_ids.len();
        if rows >= limit {
            break;
        }
        let s = store.read_shard(shard, hook)?;
        let take = s.token_ids.len().min(limit - rows);
        let flat = s.activations.flatten_all()?.to_vec1::<f32>()?;
        data.extend_from_slice(&flat[..take * width]);
        tokens.token_ids.extend_from_slice(&s.token_ids[..take]);
        tokens.doc_ids.extend_from_slice(&s.doc_ids[..take]);
        tokens.context_ids.extend_from_slice(&s.context_ids[..take]);
        tokens.positions.extend_from_slice(&s.positions[..take]);
        for (all, field) in tokens.labels.iter_mut().zip(&s.labels) {
            all.extend_from_slice(&field[..take]);
        }
        progress.advance(take as u64);
    }
    let rows = tokens.token_ids.len();
    Ok(Examples {
        hook,
        tokens,
        x: Matrix::new(rows, width, data),
    })
}

/// Each token's value of `feature`: `Some(true/false)`, or `None` where it has none (a token
/// without the label field, a separator).
pub fn token_labels(feature: &Feature, tokens: &Tokens, tokenizer: &Tokenizer) -> Vec<Option<bool>> {
    let n = tokens.token_ids.len();
    let mut texts: HashMap<u32, String> = HashMap::new();
    let mut text = |id: u32| -> String {
        texts
            .entry(id)
            .or_insert_with(|| tokenizer.token_text(id))
            .clone()
    };
    match &feature.kind {
        FeatureKind::Label { field, value } => tokens.labels[*field]
            .iter()
            .map(|&l| (l != NO_LABEL).then_some(l == *value))
            .collect(),
        FeatureKind::Digit => tokens
            .token_ids
            .iter()
            .map(|&id| {
                let t = text(id);
                let t = t.trim();
                Some(!t.is_empty() && t.chars().all(|c| c.is_ascii_digit()))
            })
            .collect(),
        FeatureKind::Quoted => {
            let mut out = Vec::with_capacity(n);
            let mut inside = false;
            for row in 0..n {
                if row == 0 || tokens.doc_ids[row] != tokens.doc_ids[row - 1] {
                    inside = false;
                }
                let t = text(tokens.token_ids[row]);
                let mut has_quote = false;
                for c in t.chars() {
                    // '"' toggles; „ « open; ” » close; “ opens English quotes and closes German.
                    inside = match c {
                        '"' => !inside,
                        '„' | '«' => true,
                        '”' | '»' => false,
                        '“' => !inside,
                        _ => continue,
                    };
                    has_quote = true;
                }
                out.push(Some(inside && !has_quote));
            }
            out
        }
        FeatureKind::Compound(pairs) => {
            let same_doc = |a: usize, b: usize| tokens.doc_ids[a] == tokens.doc_ids[b];
            let mut out = Vec::with_capacity(n);
            for row in 0..n {
                let second = text(tokens.token_ids[row]);
                if row == 0 || !same_doc(row - 1, row) || !second.starts_with(' ') {
                    out.push(Some(false));
                    continue;
                }
                let first = text(tokens.token_ids[row - 1]);
                // The first word starts a word (a leading space, the document's start, or
                // whitespace before it) and the second ends one (no letter or digit follows).
                let first_starts_word = first.starts_with(' ')
                    || row < 2
                    || !same_doc(row - 2, row)
                    || text(tokens.token_ids[row - 2]).ends_with(char::is_whitespace);
                let second_ends_word = row + 1 == n
                    || !same_doc(row, row + 1)
                    || !text(tokens.token_ids[row + 1]).starts_with(char::is_alphanumeric);
                let pair = (first.trim().to_lowercase(), second.trim().to_lowercase());
                out.push(Some(
                    first_starts_word && second_ends_word && pairs.contains(&pair),
                ));
            }
            out
        }
    }
}

/// One feature's examples, split by document.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub feature: String,
    pub level: Level,
    /// Rows of the example matrix (the token matrix, or the document means for document level).
    pub train: Vec<usize>,
    pub train_labels: Vec<bool>,
    pub held_out: Vec<usize>,
    pub held_out_labels: Vec<bool>,
}

/// Positive and negative examples on each side of the split.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassBalance {
    pub train_positive: usize,
    pub train_negative: usize,
    pub held_out_positive: usize,
    pub held_out_negative: usize,
}

impl Dataset {
    pub fn balance(&self) -> ClassBalance {
        let count = |l: &[bool]| l.iter().filter(|&&y| y).count();
        ClassBalance {
            train_positive: count(&self.train_labels),
            train_negative: self.train_labels.len() - count(&self.train_labels),
            held_out_positive: count(&self.held_out_labels),
            held_out_negative: self.held_out_labels.len() - count(&self.held_out_labels),
        }
    }
}

/// Document means of a token matrix: one row per document (in order of first appearance), the
/// document ids, and one token row of each document (to read its labels from).
pub struct DocumentMeans {
    pub x: Matrix,
    pub doc_ids: Vec<u32>,
    pub first_row: Vec<usize>,
}

pub fn document_means(examples: &Examples) -> DocumentMeans {
    let width = examples.x.cols;
    let mut index: HashMap<u32, usize> = HashMap::new();
    let mut sums: Vec<f64> = Vec::new();
    let mut counts: Vec<f64> = Vec::new();
    let mut doc_ids = Vec::new();
    let mut first_row = Vec::new();
    for (row, &doc) in examples.tokens.doc_ids.iter().enumerate() {
        if doc == NO_DOC {
            continue;
        }
        let d = *index.entry(doc).or_insert_with(|| {
            doc_ids.push(doc);
            first_row.push(row);
            sums.resize(sums.len() + width, 0.0);
            counts.push(0.0);
            doc_ids.len() - 1
        });
        counts[d] += 1.0;
        for (s, &v) in sums[d * width..(d + 1) * width]
            .iter_mut()
            .zip(examples.x.row(row))
        {
            *s += v as f64;
        }
    }
    let data = sums
        .chunks(width.max(1))
        .zip(&counts)
        .flat_map(|(row, &c)| row.iter().map(move |s| (s / c) as f32))
        .collect();
    DocumentMeans {
        x: Matrix::new(doc_ids.len(), width, data),
        doc_ids,
        first_row,
    }
}

/// The examples of one feature, split by document with `held_out` and `seed`. `store` names the
/// data in errors.
pub fn build_dataset(
    feature: &Feature,
    labels: &[Option<bool>],
    tokens: &Tokens,
    documents: Option<&DocumentMeans>,
    held_out: f64,
    seed: u64,
    store: &Path,
) -> Result<Dataset> {
    let train_split = Split::Train { held_out, seed };
    let mut data = Dataset {
        feature: feature.name.clone(),
        level: feature.level,
        train: Vec::new(),
        train_labels: Vec::new(),
        held_out: Vec::new(),
        held_out_labels: Vec::new(),
    };
    let mut push = |row: usize, doc: u32, label: Option<bool>| {
        let Some(y) = label else { return };
        if doc == NO_DOC {
            return;
        }
        if train_split.contains(doc) {
            data.train.push(row);
            data.train_labels.push(y);
        } else {
            data.held_out.push(row);
            data.held_out_labels.push(y);
        }
    };
    match feature.level {
        Level::Token => {
            for (row, (&doc, &label)) in tokens.doc_ids.iter().zip(labels).enumerate() {
                push(row, doc, label);
            }
        }
        Level::Document => {
            let docs = documents.expect("document means are computed for document-level features");
            for (row, (&doc, &first)) in docs.doc_ids.iter().zip(&docs.first_row).enumerate() {
                push(row, doc, labels[first]);
            }
        }
    }
    let b = data.balance();
    let level = match feature.level {
        Level::Token => "tokens",
        Level::Document => "documents",
    };
    if b.train_positive == 0 || b.train_negative == 0 {
        return Err(Error::dataset(format!(
            "feature '{}': the training split of {} has {} positive and {} negative {level}; a probe needs both classes. Use a store with text that has (and lacks) the feature, or change held_out / seed",
            feature.name,
            store.display(),
            b.train_positive,
            b.train_negative
        )));
    }
    if b.held_out_positive == 0 || b.held_out_negative == 0 {
        return Err(Error::dataset(format!(
            "feature '{}': the held-out split of {} has {} positive and {} negative {level}; the metrics need both classes. Raise held_out (now {held_out}) or use more tokens",
            feature.name,
            store.display(),
            b.held_out_positive,
            b.held_out_negative
        )));
    }
    Ok(data)
}
