//! Patched generation from one target prompt: its tokens before the patched position are run
//! once and their keys and values shared by every row ([`KvCache::repeat_rows`]), since a patch
//! cannot change what comes before it; each row then runs the rest of the prompt with its own
//! activation patched in, and all rows generate together as one batch.

use candle_core::{DType, Tensor};
use loupe_model::{
    generate_from, Batch, Edit, GenerateConfig, Generation, HookPoint, Hooks, Intervention, KvCache, Logits,
    Model, Positions,
};

use crate::Result;

/// Rows whose fluency is computed together.
const FLUENCY_ROWS: usize = 16;

/// A target prompt prepared for patching: the part before the patched position already run and its
/// keys and values cached, shared by every patched row.
pub struct PatchedTarget {
    /// Keys and values of the tokens before `position` (none when it is 0).
    prefix: Option<KvCache>,
    /// The tokens from `position` on.
    suffix: Vec<u32>,
    position: usize,
}

/// One row: replace the activation at `hook` (at the target position) by `value`.
pub struct Patch<'a> {
    /// The hook whose activation is replaced.
    pub hook: HookPoint,
    /// The new activation, the hook's width.
    pub value: &'a [f32],
}

impl PatchedTarget {
    /// Runs `target_ids[..position]` through the model once.
    pub fn new(model: &Model, target_ids: &[u32], position: usize) -> Result<Self> {
        let prefix = if position > 0 {
            let mut cache = KvCache::new(model.n_layers());
            let batch =
                Batch::left_padded(&[target_ids[..position].to_vec()], model.pad_id(), model.device())?;
            model.prefill(&batch, &mut Hooks::new(), &mut cache)?;
            Some(cache)
        } else {
            None
        };
        Ok(PatchedTarget {
            prefix,
            suffix: target_ids[position..].to_vec(),
            position,
        })
    }

    /// The target's tokens each row runs itself (from the patched position on).
    pub fn suffix_len(&self) -> usize {
        self.suffix.len()
    }

    /// Generates once per patch, all rows as one batch, and returns the generations and the
    /// first new token's logits (`[rows, vocab]`).
    pub fn generate(
        &self,
        model: &Model,
        patches: &[Patch],
        config: &GenerateConfig,
    ) -> Result<(Vec<Generation>, Tensor)> {
        let device = model.device();
        let rows = patches.len();
        let sequences = vec![self.suffix.clone(); rows];
        let (mut cache, batch) = match &self.prefix {
            Some(prefix) => (
                prefix.repeat_rows(rows)?,
                Batch::continuing(&sequences, self.position, device)?,
            ),
            None => (
                KvCache::new(model.n_layers()),
                Batch::left_padded(&sequences, model.pad_id(), device)?,
            ),
        };
        let mut hooks = Hooks::new();
        for (row, patch) in patches.iter().enumerate() {
            hooks = hooks.intervene(Intervention {
                rows: Some(vec![row]),
                ..Intervention::new(
                    patch.hook,
                    Positions::Only(vec![self.position]),
                    Edit::Replace(Tensor::from_slice(patch.value, patch.value.len(), device)?),
                )
            });
        }
        Ok(generate_from(model, &mut cache, batch, &mut hooks, config)?)
    }

    /// Fluency of generations made from this target: for each row, the mean surprisal (nats per
    /// token) of its generated tokens under the unpatched model reading the target prompt and then
    /// the generation, in one batched pass from the shared prefix. `None` for an empty generation.
    pub fn fluency(&self, model: &Model, generated: &[&[u32]]) -> Result<Vec<Option<f32>>> {
        // A few rows at a time: the log-probabilities of every vocabulary entry at every generated
        // position are held at once.
        let mut out = Vec::with_capacity(generated.len());
        for chunk in generated.chunks(FLUENCY_ROWS) {
            out.extend(self.fluency_of_rows(model, chunk)?);
        }
        Ok(out)
    }

    fn fluency_of_rows(&self, model: &Model, generated: &[&[u32]]) -> Result<Vec<Option<f32>>> {
        let longest = generated.iter().map(|g| g.len()).max().unwrap_or(0);
        if longest == 0 {
            return Ok(vec![None; generated.len()]);
        }
        // Shorter generations are padded at the end: causal attention keeps the padding from
        // reaching the positions that are read.
        let sequences: Vec<Vec<u32>> = generated
            .iter()
            .map(|g| {
                let mut ids = self.suffix.clone();
                ids.extend_from_slice(g);
                ids.resize(self.suffix.len() + longest, model.pad_id());
                ids
            })
            .collect();
        let (mut cache, batch) = match &self.prefix {
            Some(prefix) => (
                prefix.repeat_rows(sequences.len())?,
                Batch::continuing(&sequences, self.position, model.device())?,
            ),
            None => (
                KvCache::new(model.n_layers()),
                Batch::left_padded(&sequences, model.pad_id(), model.device())?,
            ),
        };
        let logits = model.forward_cached(&batch, &mut Hooks::new(), &mut cache, Logits::All)?;
        // The logits at the column before each generated token predict it.
        let first = self.suffix.len() - 1;
        let predicting = logits.narrow(1, first, longest)?.to_dtype(DType::F32)?;
        let log_probs = candle_nn::ops::log_softmax(&predicting, candle_core::D::Minus1)?;
        let mut out = Vec::with_capacity(generated.len());
        for (row, tokens) in generated.iter().enumerate() {
            if tokens.is_empty() {
                out.push(None);
                continue;
            }
            let row_log_probs = log_probs.get(row)?.to_vec2::<f32>()?;
            let total: f32 = tokens
                .iter()
                .enumerate()
                .map(|(j, &token)| -row_log_probs[j][token as usize])
                .sum();
            out.push(Some(total / tokens.len() as f32));
        }
        Ok(out)
    }
}
