//! Evaluating a trained SAE on held-out data: reconstruction metrics on stored activations, and
//! the SAE spliced into the model at its hook (the reconstruction replaces the activation for
//! everything downstream): next-token cross-entropy clean, with the SAE, with the activation
//! zero-ablated, the fraction of the ablation's loss the SAE recovers, and the KL divergence from
//! the clean next-token distribution.

use std::collections::BTreeMap;
use std::sync::Arc;

use candle_core::{DType, Tensor, D};
use loupe_data::reader::{Split, Store};
use loupe_model::{Batch, Edit, HookPoint, Hooks, Intervention, Logits, Model, Positions};
use loupe_util::Progress;
use serde::{Deserialize, Serialize};

use crate::metrics::{ReconstructionMetrics, Tally};
use crate::{Error, Result, Sae};

/// The SAE spliced into the model, averaged over predicted tokens.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SplicedMetrics {
    /// Contexts run through the model.
    pub contexts: usize,
    /// Next-token predictions scored.
    pub tokens: usize,
    /// Mean next-token cross-entropy of the unchanged model, nats.
    pub ce_clean: f64,
    /// The same with the SAE's reconstruction in place of the activation.
    pub ce_sae: f64,
    /// The same with the activation set to zero.
    pub ce_zero_ablation: f64,
    /// (CE_zero − CE_sae) / (CE_zero − CE_clean): 1 when splicing loses nothing.
    /// `None` when zero-ablating the hook does not change the loss: there is nothing to recover.
    pub ce_loss_recovered: Option<f64>,
    /// KL(clean ‖ with the SAE) of the next-token distributions, nats.
    pub kl_sae: f64,
    /// KL(clean ‖ zero-ablated), nats.
    pub kl_zero_ablation: f64,
}

/// The width of `store`'s activations at `hook`, or an error listing the hooks it has.
pub fn store_hook_width(store: &Store, hook: HookPoint) -> Result<usize> {
    match store.manifest.hook(hook) {
        Some(h) => Ok(h.width),
        None => Err(Error::Mismatch {
            message: format!(
                "store {} holds no activations for {hook} (it has: {})",
                store.dir.display(),
                store
                    .manifest
                    .hooks
                    .iter()
                    .map(|h| h.name.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}

/// Refuses an SAE that does not belong to this store and hook: another width, another hook,
/// another model file.
pub fn check_sae_matches_store(sae: &Sae, sae_origin: &str, store: &Store, hook: HookPoint) -> Result<()> {
    let store_dir = store.dir.display();
    let width = store_hook_width(store, hook)?;
    if width != sae.d_in {
        return Err(Error::Mismatch {
            message: format!(
                "SAE {sae_origin} reads d_in = {} but store {store_dir} has {hook} activations of width {}",
                sae.d_in, width
            ),
        });
    }
    if !sae.metadata.hook_name.is_empty() && sae.metadata.hook_name != hook.to_string() {
        return Err(Error::Mismatch {
            message: format!(
                "SAE {sae_origin} was trained on {} but the activations asked for are {hook}",
                sae.metadata.hook_name
            ),
        });
    }
    if let Some(sha) = &sae.metadata.model_sha256 {
        if *sha != store.manifest.model.sha256 {
            return Err(Error::Mismatch {
                message: format!(
                    "SAE {sae_origin} was trained on activations of another model file (sha256 {sha}) than store {store_dir} ({}, sha256 {})",
                    store.manifest.model.name, store.manifest.model.sha256
                ),
            });
        }
    }
    Ok(())
}

/// Reconstruction metrics over up to `tokens` rows of `split`.
pub fn reconstruction(
    sae: &Sae,
    store: &Store,
    hook: HookPoint,
    split: Split,
    tokens: usize,
    dense_threshold: f64,
) -> Result<ReconstructionMetrics> {
    let mut tally = Tally::new(sae.d_in, sae.d_sae);
    let mut seen = 0;
    for batch in store.batches(hook, 4096, 4096, split, 0)? {
        let batch = sae.rows_in_range(&batch?)?;
        let take = batch.dim(0)?.min(tokens - seen);
        tally.add_batch(sae, &batch.narrow(0, 0, take)?)?;
        seen += take;
        if seen >= tokens {
            break;
        }
    }
    if seen == 0 {
        return Err(Error::Mismatch {
            message: format!(
                "store {}: the held-out split holds no activations of {hook}, so there is nothing to measure \
                 (a metric from no data would read as perfect); raise --held-out, or pass another --store",
                store.dir.display()
            ),
        });
    }
    Ok(tally.metrics(dense_threshold))
}

/// A context rebuilt from a store: its tokens (separators where the store kept no row) and the
/// positions the store holds activations for (where the SAE is spliced in).
pub struct StoredContext {
    /// The context's token ids, in order.
    pub tokens: Vec<u32>,
    /// Positions in the context that the store holds activations for.
    pub positions: Vec<usize>,
}

/// Up to `max` whole contexts of `split`, in store order, rebuilt from the token ids the store
/// keeps (a context counts when every document in it is in the split).
pub fn stored_contexts(
    store: &Store,
    hook: HookPoint,
    split: Split,
    max: usize,
) -> Result<Vec<StoredContext>> {
    let mut out = Vec::new();
    for shard in 0..store.manifest.shards.len() {
        let data = store.read_shard(shard, hook)?;
        let mut by_context: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for (row, &c) in data.fields.context_ids.iter().enumerate() {
            by_context.entry(c).or_default().push(row);
        }
        for rows in by_context.values() {
            if !rows.iter().all(|&r| split.contains(data.fields.doc_ids[r])) {
                continue;
            }
            let len = rows
                .iter()
                .map(|&r| data.fields.positions[r] as usize + 1)
                .max()
                .unwrap_or(0);
            let mut tokens = vec![store.manifest.separator_token; len];
            let mut positions = Vec::with_capacity(rows.len());
            for &r in rows {
                tokens[data.fields.positions[r] as usize] = data.fields.token_ids[r];
                positions.push(data.fields.positions[r] as usize);
            }
            out.push(StoredContext { tokens, positions });
            if out.len() >= max {
                return Ok(out);
            }
        }
    }
    Ok(out)
}

/// Splices `sae` into `model` at `hook` over `contexts` and compares next-token predictions
/// with the clean model and with the activation zero-ablated, `batch_size` contexts at a time.
pub fn spliced(
    model: &Model,
    sae: &Sae,
    hook: HookPoint,
    contexts: &[StoredContext],
    batch_size: usize,
    progress: &mut dyn Progress,
) -> Result<SplicedMetrics> {
    let sae = Arc::new(sae.clone());
    let total_tokens: usize = contexts.iter().map(|c| c.tokens.len()).sum();
    progress.start("CE with the SAE spliced in", total_tokens as u64 * 3, 0);
    let (mut ce, mut kl) = ([0.0f64; 3], [0.0f64; 2]);
    let mut scored = 0usize;
    for chunk in contexts.chunks(batch_size.max(1)) {
        let sequences: Vec<Vec<u32>> = chunk.iter().map(|c| c.tokens.clone()).collect();
        let batch = Batch::left_padded(&sequences, model.pad_id(), model.device())?;
        let splice = |edit: Edit| {
            let mut hooks = Hooks::new();
            for (row, c) in chunk.iter().enumerate() {
                hooks = hooks.intervene(Intervention {
                    rows: Some(vec![row]),
                    ..Intervention::new(hook, Positions::Only(c.positions.clone()), edit.clone())
                });
            }
            hooks
        };
        let sae_fn = sae.clone();
        let with_sae = splice(Edit::Apply(Arc::new(move |x: &Tensor| {
            sae_fn
                .forward(x)
                .map_err(|e| candle_core::Error::Msg(e.to_string()))
        })));
        let zeroed = splice(Edit::Scale(0.0));
        let mut log_probs = Vec::new();
        for mut hooks in [Hooks::new(), with_sae, zeroed] {
            if progress.should_stop() {
                return Err(Error::Stopped {
                    what: "the evaluation was not finished and its report not written".into(),
                });
            }
            let logits = model.forward(&batch, &mut hooks, Logits::All)?;
            log_probs.push(log_softmax(&logits.to_dtype(DType::F32)?)?);
            progress.advance(sequences.iter().map(Vec::len).sum::<usize>() as u64);
        }
        for (row, c) in chunk.iter().enumerate() {
            let pad = batch.pads()[row];
            // Predictions from every spliced position that has a next token.
            let from: Vec<u32> = c
                .positions
                .iter()
                .filter(|&&p| p + 1 < c.tokens.len())
                .map(|&p| (pad + p) as u32)
                .collect();
            if from.is_empty() {
                continue;
            }
            let targets: Vec<u32> = from.iter().map(|&col| c.tokens[col as usize - pad + 1]).collect();
            let n = from.len();
            let device = log_probs[0].device();
            let from = Tensor::from_vec(from, n, device)?;
            let targets = Tensor::from_vec(targets, (n, 1), device)?;
            let rows: Vec<Tensor> = log_probs
                .iter()
                .map(|lp| lp.get(row)?.index_select(&from, 0))
                .collect::<candle_core::Result<_>>()?;
            for (i, lp) in rows.iter().enumerate() {
                ce[i] -= lp.gather(&targets, 1)?.sum_all()?.to_scalar::<f32>()? as f64;
            }
            let p_clean = rows[0].exp()?;
            for (i, lp) in rows[1..].iter().enumerate() {
                let kl_sum = (&p_clean * (&rows[0] - lp)?)?.sum_all()?.to_scalar::<f32>()? as f64;
                kl[i] += kl_sum;
            }
            scored += n;
        }
    }
    if scored == 0 {
        return Err(Error::Mismatch {
            message: "no held-out tokens to evaluate on; capture more, or raise held_out".into(),
        });
    }
    let n = scored as f64;
    let [ce_clean, ce_sae, ce_zero] = ce.map(|v| v / n);
    Ok(SplicedMetrics {
        contexts: contexts.len(),
        tokens: scored,
        ce_clean,
        ce_sae,
        ce_zero_ablation: ce_zero,
        ce_loss_recovered: ((ce_zero - ce_clean).abs() > 1e-9 * ce_clean.abs().max(1.0))
            .then(|| (ce_zero - ce_sae) / (ce_zero - ce_clean)),
        kl_sae: kl[0] / n,
        kl_zero_ablation: kl[1] / n,
    })
}

fn log_softmax(logits: &Tensor) -> Result<Tensor> {
    let max = logits.max_keepdim(D::Minus1)?;
    let shifted = logits.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    Ok(shifted.broadcast_sub(&lse)?)
}
