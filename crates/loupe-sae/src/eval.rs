//! Evaluating a trained SAE on held-out data: reconstruction metrics on stored activations, and
//! the SAE spliced into the model at its hook (the reconstruction replaces the activation for
//! everything downstream): next-token cross-entropy clean, with the SAE, with the activation
//! zero-ablated, the fraction of the ablation's loss the SAE recovers, and the KL divergence from
//! the clean next-token distribution.
//!
//! A transcoder is measured the same way at its output hook: its reconstruction of the output
//! hook's activations from the input hook's, and spliced in place of the output (for an MLP
//! transcoder: in place of the MLP), against the output zero-ablated.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

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

/// The hook an SAE read at `hook` reconstructs and is spliced in place of: a transcoder's output
/// hook, else `hook` itself.
pub fn output_hook(sae: &Sae, hook: HookPoint) -> Result<HookPoint> {
    match &sae.metadata.hook_name_out {
        None => Ok(hook),
        Some(name) => name.parse().map_err(|e| Error::Mismatch {
            message: format!("the transcoder's output hook {name:?} is not a hook loupe knows: {e}"),
        }),
    }
}

/// Refuses an SAE that does not belong to this store and hook: another width, another hook,
/// another model file; and a transcoder whose output hook the store lacks.
pub fn check_sae_matches_store(sae: &Sae, sae_origin: &str, store: &Store, hook: HookPoint) -> Result<()> {
    let store_dir = store.dir.display();
    let width = store_hook_width(store, hook)?;
    let out = output_hook(sae, hook)?;
    if out != hook {
        match store.manifest.hook(out) {
            Some(h) if h.width == sae.d_in => {}
            Some(h) => {
                return Err(Error::Mismatch {
                    message: format!(
                    "transcoder {sae_origin} writes {out} {} wide, but store {store_dir} holds it {} wide",
                    sae.d_in, h.width
                ),
                })
            }
            None => {
                return Err(Error::Mismatch {
                    message: format!(
                        "transcoder {sae_origin} reconstructs {out}, which store {store_dir} does not hold: \
                         capture {out} beside {hook} to evaluate it"
                    ),
                })
            }
        }
    }
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
    let mut metrics = reconstruction_each(&[sae], store, hook, split, tokens, dense_threshold)?;
    Ok(metrics.remove(0))
}

/// [`reconstruction`] of several SAEs at one hook (transcoders: with one output hook), on one read
/// of the split: each SAE is measured on the same rows [`reconstruction`] would measure it on.
pub fn reconstruction_each(
    saes: &[&Sae],
    store: &Store,
    hook: HookPoint,
    split: Split,
    tokens: usize,
    dense_threshold: f64,
) -> Result<Vec<ReconstructionMetrics>> {
    let mut tallies: Vec<Tally> = saes.iter().map(|sae| Tally::new(sae.d_in, sae.d_sae)).collect();
    // Rows each SAE has been measured on (each leaves out the rows beyond its own norm cutoff).
    let mut seen = vec![0usize; saes.len()];
    let Some(first) = saes.first() else {
        return Ok(Vec::new());
    };
    let out = shared_output_hook(saes, hook)?;
    let hooks: Vec<HookPoint> = std::iter::once(hook)
        .chain((out != hook).then_some(out))
        .collect();
    for batch in store.batches_of(&hooks, 4096, 4096, split, 0)? {
        let (input, target) = crate::train::split_pair(&batch?, first.d_in)?;
        for ((sae, tally), seen) in saes.iter().zip(&mut tallies).zip(&mut seen) {
            if *seen >= tokens {
                continue;
            }
            let (input, target) = rows_in_range(sae, &input, &target)?;
            let take = input.dim(0)?.min(tokens - *seen);
            tally.add_pair(sae, &input.narrow(0, 0, take)?, &target.narrow(0, 0, take)?)?;
            *seen += take;
        }
        if seen.iter().all(|&n| n >= tokens) {
            break;
        }
    }
    if seen.contains(&0) {
        return Err(Error::Mismatch {
            message: format!(
                "store {}: the held-out split holds no activations of {hook}, so there is nothing to measure \
                 (a metric from no data would read as perfect); raise --held-out, or pass another --store",
                store.dir.display()
            ),
        });
    }
    Ok(tallies.iter().map(|t| t.metrics(dense_threshold)).collect())
}

/// The output hook every SAE of `saes` (read at `hook`) shares: one read of the store, and one
/// zero-ablation, serves them all.
fn shared_output_hook(saes: &[&Sae], hook: HookPoint) -> Result<HookPoint> {
    let out = output_hook(saes[0], hook)?;
    for sae in saes {
        let other = output_hook(sae, hook)?;
        if other != out {
            return Err(Error::Mismatch {
                message: format!("SAEs measured together must reconstruct one hook, but one writes {out} and another {other}"),
            });
        }
    }
    Ok(out)
}

/// The rows of `input` (and the same rows of `target`) within the SAE's norm cutoff.
fn rows_in_range(sae: &Sae, input: &Tensor, target: &Tensor) -> Result<(Tensor, Tensor)> {
    let keep = sae.in_range(input)?;
    if keep.iter().all(|&k| k) {
        return Ok((input.clone(), target.clone()));
    }
    let rows: Vec<u32> = (0..keep.len() as u32).filter(|&r| keep[r as usize]).collect();
    let n = rows.len();
    let rows = Tensor::from_vec(rows, n, input.device())?;
    Ok((input.index_select(&rows, 0)?, target.index_select(&rows, 0)?))
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

/// Splices `sae` (read at `hook`) into `model` over `contexts` and compares next-token predictions
/// with the clean model and with the activation zero-ablated, `batch_size` contexts at a time. A
/// transcoder's reconstruction replaces its output hook, which is what is zero-ablated.
pub fn spliced(
    model: &Model,
    sae: &Sae,
    hook: HookPoint,
    contexts: &[StoredContext],
    batch_size: usize,
    progress: &mut dyn Progress,
) -> Result<SplicedMetrics> {
    let mut metrics = spliced_each(model, &[sae], hook, contexts, batch_size, progress)?;
    Ok(metrics.remove(0))
}

/// [`spliced`] for several SAEs at one hook (transcoders: with one output hook): the clean and
/// zero-ablated forward passes, which every SAE is compared with, run once for all of them.
pub fn spliced_each(
    model: &Model,
    saes: &[&Sae],
    hook: HookPoint,
    contexts: &[StoredContext],
    batch_size: usize,
    progress: &mut dyn Progress,
) -> Result<Vec<SplicedMetrics>> {
    let total_tokens: usize = contexts.iter().map(|c| c.tokens.len()).sum();
    progress.start(
        "CE with the SAE spliced in",
        (total_tokens * (2 + saes.len())) as u64,
        0,
    );
    let out = match saes.first() {
        Some(_) => shared_output_hook(saes, hook)?,
        None => hook,
    };
    let saes: Vec<Arc<Sae>> = saes.iter().map(|sae| Arc::new((*sae).clone())).collect();
    // Summed over predictions: cross-entropy clean and zero-ablated, and KL(clean ‖ zero-ablated);
    // then each SAE's cross-entropy and KL(clean ‖ with the SAE).
    let (mut ce_clean, mut ce_zero, mut kl_zero) = (0.0f64, 0.0f64, 0.0f64);
    let mut ce_sae = vec![0.0f64; saes.len()];
    let mut kl_sae = vec![0.0f64; saes.len()];
    let mut scored = 0usize;
    for chunk in contexts.chunks(batch_size.max(1)) {
        let sequences: Vec<Vec<u32>> = chunk.iter().map(|c| c.tokens.clone()).collect();
        let chunk_tokens = sequences.iter().map(Vec::len).sum::<usize>() as u64;
        let batch = Batch::left_padded(&sequences, model.pad_id(), model.device())?;
        // One edit per context, at `at`, on the stored positions.
        let edit_each = |hooks: Hooks, at: HookPoint, edit: &dyn Fn(usize) -> Edit| {
            chunk.iter().enumerate().fold(hooks, |hooks, (row, c)| {
                hooks.intervene(Intervention {
                    rows: Some(vec![row]),
                    ..Intervention::new(at, Positions::Only(c.positions.clone()), edit(row))
                })
            })
        };
        let splice = |edit: Edit| edit_each(Hooks::new(), out, &|_| edit.clone());
        let mut log_probs = |mut hooks: Hooks| -> Result<Tensor> {
            if progress.should_stop() {
                return Err(Error::Stopped {
                    what: "the evaluation was not finished and its report not written".into(),
                });
            }
            let logits = model.forward(&batch, &mut hooks, Logits::All)?;
            progress.advance(chunk_tokens);
            log_softmax(&logits.to_dtype(DType::F32)?)
        };
        let clean = Predictions::of(chunk, &batch, &log_probs(Hooks::new())?)?;
        clean.add_clean_ce(&mut ce_clean)?;
        let zeroed = log_probs(splice(Edit::Scale(0.0)))?;
        clean.add_comparison(&zeroed, &mut ce_zero, &mut kl_zero)?;
        for (i, sae) in saes.iter().enumerate() {
            let with_sae = log_probs(splice_hooks(sae, hook, out, &edit_each))?;
            clean.add_comparison(&with_sae, &mut ce_sae[i], &mut kl_sae[i])?;
        }
        scored += clean.count;
    }
    if scored == 0 {
        return Err(Error::Mismatch {
            message: "no held-out tokens to evaluate on; capture more, or raise held_out".into(),
        });
    }
    let n = scored as f64;
    let (ce_clean, ce_zero) = (ce_clean / n, ce_zero / n);
    let recoverable = (ce_zero - ce_clean).abs() > 1e-9 * ce_clean.abs().max(1.0);
    Ok(ce_sae
        .iter()
        .zip(&kl_sae)
        .map(|(ce_sae, kl_sae)| {
            let ce_sae = ce_sae / n;
            SplicedMetrics {
                contexts: contexts.len(),
                tokens: scored,
                ce_clean,
                ce_sae,
                ce_zero_ablation: ce_zero,
                ce_loss_recovered: recoverable.then(|| (ce_zero - ce_sae) / (ce_zero - ce_clean)),
                kl_sae: kl_sae / n,
                kl_zero_ablation: kl_zero / n,
            }
        })
        .collect())
}

/// Adds to `Hooks` one edit per context of a batch at a hook, the edit made from the context's row.
type EditEach<'a> = dyn Fn(Hooks, HookPoint, &dyn Fn(usize) -> Edit) -> Hooks + 'a;

/// The interventions that splice `sae` in, given `edit_each` (which places one edit per context
/// at a hook): an SAE's reconstruction replaces `hook`; a transcoder's input is taken at `hook` as
/// the forward pass goes by (left as it is) and its output replaces `out`, further on.
fn splice_hooks(sae: &Arc<Sae>, hook: HookPoint, out: HookPoint, edit_each: &EditEach) -> Hooks {
    let failed = |e: Error| candle_core::Error::Msg(e.to_string());
    if out == hook {
        let sae = sae.clone();
        let replace = Edit::Apply(Arc::new(move |x: &Tensor| sae.forward(x).map_err(failed)));
        return edit_each(Hooks::new(), hook, &|_| replace.clone());
    }
    // Per context: its input rows, kept between the two hooks.
    let inputs: Arc<Mutex<BTreeMap<usize, Tensor>>> = Arc::default();
    let take_input = |row: usize| {
        let inputs = inputs.clone();
        Edit::Apply(Arc::new(move |x: &Tensor| {
            inputs.lock().expect("not poisoned").insert(row, x.clone());
            Ok(x.clone())
        }))
    };
    let replace_output = |row: usize| {
        let (inputs, sae) = (inputs.clone(), sae.clone());
        // The output's activations are replaced whole; forward answers in the input's dtype and
        // device, which are the output's.
        Edit::Apply(Arc::new(move |_output: &Tensor| {
            let input = inputs.lock().expect("not poisoned").remove(&row).ok_or_else(|| {
                candle_core::Error::Msg(format!(
                    "the transcoder's input at {hook} was not seen before {out}"
                ))
            })?;
            sae.forward(&input).map_err(failed)
        }))
    };
    let hooks = edit_each(Hooks::new(), hook, &take_input);
    edit_each(hooks, out, &replace_output)
}

/// The next-token predictions scored in one batch of contexts (from every spliced position that
/// has a next token), with the clean model's distributions there, which every spliced forward
/// pass over the batch is compared with.
struct Predictions {
    contexts: Vec<ScoredContext>,
    /// Predictions scored.
    count: usize,
}

/// One context's scored predictions.
struct ScoredContext {
    /// The context's row in the batch.
    row: usize,
    /// The (padded) positions predicted from, `[n]`.
    from: Tensor,
    /// The next tokens, `[n, 1]`.
    targets: Tensor,
    /// The clean model's log-probabilities at `from`, `[n, vocab]`, and the probabilities.
    clean_log_p: Tensor,
    clean_p: Tensor,
}

impl Predictions {
    fn of(chunk: &[StoredContext], batch: &Batch, clean: &Tensor) -> Result<Predictions> {
        let mut contexts = Vec::new();
        let mut count = 0;
        for (row, c) in chunk.iter().enumerate() {
            let pad = batch.pads()[row];
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
            let device = clean.device();
            let from = Tensor::from_vec(from, n, device)?;
            let clean_log_p = clean.get(row)?.index_select(&from, 0)?;
            contexts.push(ScoredContext {
                row,
                from,
                targets: Tensor::from_vec(targets, (n, 1), device)?,
                clean_p: clean_log_p.exp()?,
                clean_log_p,
            });
            count += n;
        }
        Ok(Predictions { contexts, count })
    }

    /// Adds the clean model's cross-entropy, context by context, to `ce`.
    fn add_clean_ce(&self, ce: &mut f64) -> Result<()> {
        for c in &self.contexts {
            *ce -= c
                .clean_log_p
                .gather(&c.targets, 1)?
                .sum_all()?
                .to_scalar::<f32>()? as f64;
        }
        Ok(())
    }

    /// Adds the cross-entropy of `log_probs` (a spliced forward pass over the same batch) to `ce`
    /// and KL(clean ‖ it) to `kl`, context by context.
    fn add_comparison(&self, log_probs: &Tensor, ce: &mut f64, kl: &mut f64) -> Result<()> {
        for c in &self.contexts {
            let log_p = log_probs.get(c.row)?.index_select(&c.from, 0)?;
            *ce -= log_p.gather(&c.targets, 1)?.sum_all()?.to_scalar::<f32>()? as f64;
            *kl += (&c.clean_p * (&c.clean_log_p - &log_p)?)?
                .sum_all()?
                .to_scalar::<f32>()? as f64;
        }
        Ok(())
    }
}

fn log_softmax(logits: &Tensor) -> Result<Tensor> {
    let max = logits.max_keepdim(D::Minus1)?;
    let shifted = logits.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    Ok(shifted.broadcast_sub(&lse)?)
}
