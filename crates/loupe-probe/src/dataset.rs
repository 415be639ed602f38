//! Probe datasets: the examples of a feature (see [`crate::features`]) over the tokens of an
//! activation store, or over its documents (a document's example is the mean of its tokens'
//! activations), split into training and held-out examples by document.

use std::collections::HashMap;
use std::path::Path;

use loupe_data::packing::NO_DOC;
use loupe_data::reader::{ShardFields, Split, Store};
use loupe_model::HookPoint;
use loupe_util::Progress;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::features::{Feature, Level};
use crate::matrix::Matrix;
use crate::{Error, Result};

/// What every hook of a store shares: per stored token, where it comes from and its labels
/// (`labels[field][row]`).
pub type Tokens = ShardFields;

/// One hook's activations over the first `max_tokens` tokens of a store.
pub struct Examples {
    /// The hook point the activations are from.
    pub hook: HookPoint,
    /// Where each row comes from, and its labels.
    pub tokens: Tokens,
    /// The activations, `[tokens, width]`, one row per stored token in store order.
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
    // The shards that hold the first `limit` tokens, and where each starts in the matrix.
    let mut shards = Vec::new();
    let mut rows = 0;
    for shard in 0..store.manifest.shards.len() {
        if rows >= limit {
            break;
        }
        shards.push((shard, rows));
        rows += store.shard_rows(shard)?;
    }
    // Whole shards are decoded into one buffer, several at once, and the buffer is laid out in
    // parallel too: reading, converting and the kernel's mapping of fresh pages run on every
    // core. Rows past `limit` are cut off after.
    let mut data: Vec<f32> = loupe_util::memory::large_vec(rows * width);
    data.par_extend(rayon::iter::repeat_n(0.0, rows * width));
    let mut slices = Vec::with_capacity(shards.len());
    let mut rest = data.as_mut_slice();
    for (i, &(shard, _)) in shards.iter().enumerate() {
        let end = shards.get(i + 1).map_or(rows, |&(_, start)| start);
        let (mine, tail) = rest.split_at_mut((end - shards[i].1) * width);
        slices.push((shard, mine));
        rest = tail;
    }
    let fields: Vec<ShardFields> = slices
        .into_par_iter()
        .map(|(shard, values)| Ok(store.read_shard_into(shard, hook, values)?))
        .collect::<Result<_>>()?;
    progress.advance(limit.min(rows) as u64);
    data.truncate(limit.min(rows) * width);
    let mut tokens = Tokens {
        labels: vec![Vec::new(); store.manifest.labels.fields.len()],
        ..Default::default()
    };
    for s in &fields {
        tokens.append(s, limit - tokens.len());
    }
    let rows = tokens.token_ids.len();
    Ok(Examples {
        hook,
        tokens,
        x: Matrix::new(rows, width, data),
    })
}

/// One feature's examples, split by document.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// The feature's name (as in file and directory names).
    pub feature: String,
    /// Whether the rows are tokens or document means.
    pub level: Level,
    /// Rows of the example matrix (the token matrix, or the document means for document level).
    pub train: Vec<usize>,
    /// Whether each training row has the feature, aligned with `train`.
    pub train_labels: Vec<bool>,
    /// Held-out rows of the example matrix (whole documents held out).
    pub held_out: Vec<usize>,
    /// Whether each held-out row has the feature, aligned with `held_out`.
    pub held_out_labels: Vec<bool>,
}

/// Positive and negative examples on each side of the split.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassBalance {
    /// Training examples that have the feature.
    pub train_positive: usize,
    /// Training examples that do not.
    pub train_negative: usize,
    /// Held-out examples that have the feature.
    pub held_out_positive: usize,
    /// Held-out examples that do not.
    pub held_out_negative: usize,
}

impl Dataset {
    /// Counts the positive and negative examples of each side of the split.
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
    /// `[documents, width]`: the mean activation of each document's tokens.
    pub x: Matrix,
    /// The document index of each row of `x`.
    pub doc_ids: Vec<u32>,
    /// For each row of `x`, the row of one of its document's tokens in the token matrix.
    pub first_row: Vec<usize>,
}

/// Averages the token rows of `examples` per document (separators left out), f64 accumulation.
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
