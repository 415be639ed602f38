//! Small labelled activation stores for tests: random activations with one planted feature neuron,
//! written in the store format so the whole path (store → dataset → sweep → files) is exercised.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use loupe_data::packing::LabelVocab;
use loupe_data::store::{HookInfo, Manifest, ModelInfo, StoreDType};
use loupe_model::HookPoint;
use loupe_util::Problems as _;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::Result;

/// Activations with token ids, documents and one label field, row by row.
pub struct LabelledRows {
    /// Neurons per row.
    pub width: usize,
    /// `[rows × width]`.
    pub x: Vec<f32>,
    /// Per row: its token id.
    pub token_ids: Vec<u32>,
    /// Per row: its document index.
    pub doc_ids: Vec<u32>,
    /// The label field's name and each row's value.
    pub field: String,
    /// Per row: its value of the label field (`"a"` or `"b"`).
    pub values: Vec<String>,
}

/// `docs` documents of `tokens_per_doc` tokens, each labelled `lang` = "a" (a third of them) or
/// "b"; every neuron is standard normal noise except that in "a" documents neuron `planted` is
/// shifted by +2.5 and two distractors (`planted + 1`, `planted + 2`) by +0.6.
pub fn planted(width: usize, docs: usize, tokens_per_doc: usize, planted: usize, seed: u64) -> LabelledRows {
    let mut rng = StdRng::seed_from_u64(seed);
    let rows = docs * tokens_per_doc;
    let mut x = Vec::with_capacity(rows * width);
    let mut values = Vec::with_capacity(rows);
    let mut doc_ids = Vec::with_capacity(rows);
    for doc in 0..docs {
        let positive = doc % 3 == 0;
        for _ in 0..tokens_per_doc {
            for j in 0..width {
                let shift = match (positive, j) {
                    (true, j) if j == planted => 2.5,
                    (true, j) if j == planted + 1 || j == planted + 2 => 0.6,
                    _ => 0.0,
                };
                x.push(gaussian(&mut rng) + shift);
            }
            values.push(if positive { "a" } else { "b" }.to_string());
            doc_ids.push(doc as u32);
        }
    }
    LabelledRows {
        width,
        x,
        token_ids: (0..rows).map(|r| (r % 50) as u32 + 3).collect(),
        doc_ids,
        field: "lang".into(),
        values,
    }
}

fn gaussian(rng: &mut StdRng) -> f32 {
    // Box-Muller.
    let u: f64 = rng.random_range(1e-12..1.0);
    let v: f64 = rng.random();
    ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
}

/// Writes `rows` as a store at `dir` holding `hook`, one context per document.
pub fn write_store(dir: &Path, hook: HookPoint, rows: &LabelledRows, model_name: &str) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| crate::Error::file(dir, e))?;
    let d = rows.width;
    let n = rows.token_ids.len();
    let mut vocab = LabelVocab::new(vec![rows.field.clone()]);
    let label_ids: Vec<u32> = rows
        .values
        .iter()
        .map(|v| match vocab.values[0].iter().position(|x| x == v) {
            Some(i) => i as u32,
            None => {
                vocab.values[0].push(v.clone());
                (vocab.values[0].len() - 1) as u32
            }
        })
        .collect();
    let mut manifest = Manifest::without_shards(
        ModelInfo {
            name: model_name.into(),
            sha256: format!("sha-of-{model_name}"),
            d_model: d,
        },
        vec![HookInfo { name: hook, width: d }],
        StoreDType::F32,
        129,
    );
    manifest.labels = vocab;
    // Position in the document's context (1-based: the separator would be 0).
    let positions: Vec<u32> = (0..n)
        .scan((u32::MAX, 0u32), |(doc, pos), r| {
            if rows.doc_ids[r] != *doc {
                (*doc, *pos) = (rows.doc_ids[r], 0);
            }
            *pos += 1;
            Some(*pos)
        })
        .collect();
    let shard_rows = 4096;
    let mut start = 0;
    let mut index = 0;
    while start < n {
        let end = (start + shard_rows).min(n);
        let m = end - start;
        let u32s = |v: &[u32]| Tensor::from_slice(&v[start..end], m, &Device::Cpu);
        let mut tensors = HashMap::new();
        tensors.insert(
            hook.to_string(),
            Tensor::from_slice(&rows.x[start * d..end * d], (m, d), &Device::Cpu)?,
        );
        tensors.insert("token_ids".to_string(), u32s(&rows.token_ids)?);
        tensors.insert("doc_ids".to_string(), u32s(&rows.doc_ids)?);
        tensors.insert("context_ids".to_string(), u32s(&rows.doc_ids)?);
        tensors.insert("positions".to_string(), u32s(&positions)?);
        tensors.insert(format!("labels.{}", rows.field), u32s(&label_ids)?);
        // Contexts are counted per shard (as a capture's are), whichever documents they hold.
        let first = manifest.contexts;
        let contexts = (rows.doc_ids[end - 1] - rows.doc_ids[start]) as u64 + 1;
        manifest.shards.push(loupe_data::store::write_shard(
            dir, index, &tensors, first, contexts,
        )?);
        manifest.tokens += m as u64;
        manifest.contexts += contexts;
        start = end;
        index += 1;
    }
    manifest.write(dir)?;
    Ok(())
}
