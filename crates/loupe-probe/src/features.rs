//! Binary features of tokens, as a probe config names them (`[[feature]]`) and resolved against a
//! store: each token's value of a feature.
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

use loupe_data::packing::NO_LABEL;
use loupe_data::reader::Store;
use loupe_model::Tokenizer;
use loupe_util::Problems as _;
use serde::{Deserialize, Serialize};

use crate::dataset::Tokens;
use crate::{Error, Result};

/// Token-level or document-level examples.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// One example per stored token.
    #[default]
    Token,
    /// One example per document: the mean of its tokens' activations.
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
        /// The label field, as the capture's corpus section named it (`lang`).
        field: String,
        /// The positive value (`de`); `None` makes one feature per value.
        #[serde(default)]
        value: Option<String>,
        /// `token` (each token) or `document` (the mean of a document's tokens).
        #[serde(default)]
        level: Level,
        /// The feature's name in outputs, allowed only with a `value`; default `field=value`, with
        /// `@doc` appended at document level.
        #[serde(default)]
        name: Option<String>,
    },
    /// Tokens that are numbers.
    Digit {
        /// The feature's name in outputs; default `digit`.
        #[serde(default)]
        name: Option<String>,
    },
    /// Tokens inside a quotation.
    Quoted {
        /// The feature's name in outputs; default `quoted`.
        #[serde(default)]
        name: Option<String>,
    },
    /// The second word of a two-word compound ("high school"); `words` default [`COMPOUNDS`].
    Compound {
        /// The compounds, each two words separated by a space (`"high school"`).
        #[serde(default)]
        words: Option<Vec<String>>,
        /// The feature's name in outputs; default `compound`.
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
    /// The feature's name, used in file and directory names (`lang=de`, `digit`).
    pub name: String,
    /// Whether it is probed on tokens or on documents.
    pub level: Level,
    /// What makes an example positive.
    pub kind: FeatureKind,
}

/// What makes an example positive for a [`Feature`].
#[derive(Clone, Debug, PartialEq)]
pub enum FeatureKind {
    /// Label field index and the id of the positive value in the store's label vocabulary.
    Label {
        /// Index of the label field in the store's label vocabulary.
        field: usize,
        /// The positive value's label id; tokens with no value for the field are left out.
        value: u32,
    },
    /// The token's text, trimmed, is all ASCII digits.
    Digit,
    /// The token lies inside a quotation of its document (tokens holding a quote mark are negative).
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
