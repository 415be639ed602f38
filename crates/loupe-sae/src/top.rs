//! What each latent responds to: its firing frequency, its largest activations, and the contexts
//! they occur in, with the latent's activation on every token around them (the raw material of a
//! Neuronpedia-style feature page; `report.rs` renders it).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use candle_core::Tensor;
use loupe_data::reader::{Split, Store};
use loupe_model::{HookPoint, Tokenizer};
use loupe_util::Progress;
use serde::{Deserialize, Serialize};

use crate::{Result, Sae};

/// What [`top_activations`] looks at: which split, how many tokens, and how much context.
#[derive(Clone, Debug)]
pub struct TopConfig {
    /// Which documents of the store to read.
    pub split: Split,
    /// Stop after this many tokens of the store.
    pub max_tokens: usize,
    /// Examples kept per latent.
    pub examples: usize,
    /// Tokens shown before and after each example's token.
    pub before: usize,
    /// Tokens shown after each example's token.
    pub after: usize,
}

/// Per latent, how often it fires and its strongest examples.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TopReport {
    /// Tokens read.
    pub tokens: u64,
    /// One summary per latent, by latent index.
    pub latents: Vec<LatentSummary>,
}

/// How one latent behaves over the tokens read.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LatentSummary {
    /// The latent's index, below `d_sae`.
    pub latent: u32,
    /// Tokens it fired on.
    pub fired: u64,
    /// fired / tokens
    pub frequency: f64,
    /// Its largest activation.
    pub max_activation: f32,
    /// Mean over the tokens it fired on.
    pub mean_activation: f32,
    /// Largest first.
    pub examples: Vec<Example>,
}

/// One token where a latent fires strongly, with its surroundings.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Example {
    /// The latent's activation at the token.
    pub activation: f32,
    /// Index of the token's context in the store.
    pub context: u32,
    /// The token's position in its context.
    pub position: u32,
    /// The tokens around the example, as text: one entry per token, except that the byte tokens
    /// of a multi-byte character are one entry ([`Tokenizer::decode_pieces`]).
    pub tokens: Vec<String>,
    /// The latent's activation on each entry (the largest of its tokens').
    pub activations: Vec<f32>,
    /// Index of the entry holding the example's own token in `tokens`.
    pub highlight: usize,
}

/// A candidate example: (activation, shard, row), ordered by activation.
#[derive(Clone, Copy, PartialEq)]
struct Candidate(f32, u32, u32);
impl Eq for Candidate {}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0
            .total_cmp(&other.0)
            .then(self.1.cmp(&other.1))
            .then(self.2.cmp(&other.2))
    }
}

/// Encodes up to `config.max_tokens` rows of `store` at `hook` and collects every latent's
/// statistics and top examples, shards in store order.
pub fn top_activations(
    sae: &Sae,
    store: &Store,
    hook: HookPoint,
    tokenizer: &Tokenizer,
    config: &TopConfig,
    progress: &mut dyn Progress,
) -> Result<TopReport> {
    let n = sae.d_sae;
    let mut fired = vec![0u64; n];
    let mut sums = vec![0f64; n];
    let mut maxima = vec![0f32; n];
    // A min-heap of the best examples so far, per latent.
    let mut best: Vec<BinaryHeap<Reverse<Candidate>>> = vec![BinaryHeap::new(); n];
    let mut tokens = 0u64;
    progress.start("encoding", config.max_tokens as u64, 0);
    'shards: for shard in 0..store.manifest.shards.len() {
        let data = store.read_shard(shard, hook)?;
        let rows: Vec<u32> = (0..data.fields.doc_ids.len() as u32)
            .filter(|&r| config.split.contains(data.fields.doc_ids[r as usize]))
            .collect();
        for chunk in rows.chunks(4096) {
            if tokens as usize >= config.max_tokens || progress.should_stop() {
                break 'shards;
            }
            let take = chunk.len().min(config.max_tokens - tokens as usize);
            let chunk = &chunk[..take];
            let index = Tensor::from_slice(chunk, chunk.len(), &candle_core::Device::Cpu)?;
            let code = sae.encode_sparse(&data.activations.index_select(&index, 0)?)?;
            for (i, &row) in chunk.iter().enumerate() {
                for p in code.offsets[i]..code.offsets[i + 1] {
                    let (l, v) = (code.latents[p] as usize, code.values[p]);
                    fired[l] += 1;
                    sums[l] += v as f64;
                    maxima[l] = maxima[l].max(v);
                    let candidate = Candidate(v, shard as u32, row);
                    let heap = &mut best[l];
                    if heap.len() < config.examples {
                        heap.push(Reverse(candidate));
                    } else if heap.peek().is_some_and(|Reverse(min)| candidate > *min) {
                        heap.pop();
                        heap.push(Reverse(candidate));
                    }
                }
            }
            tokens += chunk.len() as u64;
            progress.advance(chunk.len() as u64);
        }
    }
    if progress.should_stop() {
        // Maxima from part of the store would be read as the latents' maxima (clamping uses them).
        return Err(crate::Error::Stopped {
            what: "the top contexts were not written, since they would cover only part of the store".into(),
        });
    }

    // Second pass: the context around each example, with the latent's activation on each token.
    let mut wanted: BTreeMap<u32, Vec<(usize, u32, f32)>> = BTreeMap::new(); // shard -> (latent, row, act)
    for (l, heap) in best.iter().enumerate() {
        for Reverse(Candidate(v, shard, row)) in heap.iter() {
            wanted.entry(*shard).or_default().push((l, *row, *v));
        }
    }
    let mut examples: Vec<Vec<Example>> = vec![Vec::new(); n];
    for (&shard, items) in &wanted {
        let data = store.read_shard(shard as usize, hook)?;
        let rows_total = data.fields.context_ids.len();
        // Rows around each example that stay in its context.
        let window = |row: usize| -> (usize, usize) {
            let c = data.fields.context_ids[row];
            let mut start = row;
            while start > 0 && row - start < config.before && data.fields.context_ids[start - 1] == c {
                start -= 1;
            }
            let mut end = row + 1;
            while end < rows_total && end - row <= config.after && data.fields.context_ids[end] == c {
                end += 1;
            }
            (start, end)
        };
        let mut needed: Vec<u32> = items
            .iter()
            .flat_map(|&(_, row, _)| {
                let (s, e) = window(row as usize);
                (s as u32)..(e as u32)
            })
            .collect();
        needed.sort_unstable();
        needed.dedup();
        let index = Tensor::from_slice(&needed, needed.len(), &candle_core::Device::Cpu)?;
        let code = sae.encode_sparse(&data.activations.index_select(&index, 0)?)?;
        let activation_of = |row: usize, latent: usize| -> f32 {
            let i = needed.binary_search(&(row as u32)).expect("encoded");
            (code.offsets[i]..code.offsets[i + 1])
                .find(|&p| code.latents[p] as usize == latent)
                .map_or(0.0, |p| code.values[p])
        };
        for &(latent, row, value) in items {
            let row = row as usize;
            let (s, e) = window(row);
            // Byte tokens of one character are shown together, with the largest activation among them.
            let pieces = tokenizer.decode_pieces(&data.fields.token_ids[s..e])?;
            examples[latent].push(Example {
                activation: value,
                context: data.fields.context_ids[row],
                position: data.fields.positions[row],
                tokens: pieces.iter().map(|p| p.text.clone()).collect(),
                activations: pieces
                    .iter()
                    .map(|p| {
                        p.tokens
                            .clone()
                            .map(|i| activation_of(s + i, latent))
                            .fold(0.0, f32::max)
                    })
                    .collect(),
                highlight: pieces
                    .iter()
                    .position(|p| p.tokens.contains(&(row - s)))
                    .expect("the pieces cover every token"),
            });
        }
    }
    let latents = (0..n)
        .map(|l| {
            let mut ex = std::mem::take(&mut examples[l]);
            ex.sort_by(|a, b| b.activation.total_cmp(&a.activation));
            LatentSummary {
                latent: l as u32,
                fired: fired[l],
                frequency: fired[l] as f64 / tokens.max(1) as f64,
                max_activation: maxima[l],
                mean_activation: if fired[l] > 0 {
                    (sums[l] / fired[l] as f64) as f32
                } else {
                    0.0
                },
                examples: ex,
            }
        })
        .collect();
    Ok(TopReport { tokens, latents })
}
