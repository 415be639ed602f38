//! The training loop. [`train`] reads top to bottom: open the store, start or resume, then for
//! each step: batch → forward and backward → clip → Adam → decoder constraint → bookkeeping, with
//! evaluations and checkpoints at their intervals.

use std::path::Path;

use candle_core::Tensor;
use loupe_data::reader::{Split, Store};
use loupe_util::Problems as _;
use loupe_util::Progress;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::arch::{self, Architecture, StepContext};
use crate::checkpoint::{Checkpoint, CheckpointInfo};
use crate::metrics::{Density, ReconstructionMetrics, Tally};
use crate::params::norm;
use crate::{saelens, Adam, BDecInit, Error, Params, Result, Sae, SaeMetadata, TrainConfig};

/// Where training reports progress and metrics; the binary draws a progress bar and writes
/// TensorBoard event files.
pub trait TrainObserver: Progress {
    /// Named scalars at a step (`losses/mse`, `metrics/l0`, `lr`, ...).
    fn scalars(&mut self, _step: u64, _scalars: &[(String, f64)]) {}
    /// A set of values to show as a histogram at a step.
    fn histogram(&mut self, _step: u64, _tag: &str, _values: &[f64]) {}
}

/// Observes nothing and never stops.
pub struct NoObserver;
impl Progress for NoObserver {}
impl TrainObserver for NoObserver {}

/// What [`train()`](crate::train()) did.
#[derive(Debug)]
pub struct TrainOutcome {
    /// Steps done (all of them unless stopped).
    pub steps: u64,
    /// Whether it stopped early on request; the checkpoint lets a rerun resume.
    pub stopped: bool,
    /// The last held-out evaluation.
    pub metrics: Option<ReconstructionMetrics>,
}

/// Trains (or resumes training) the SAE `config` describes, writing checkpoints and the SAELens
/// files into `config.output`.
pub fn train(config: &TrainConfig, observer: &mut dyn TrainObserver) -> Result<TrainOutcome> {
    config.validate()?;
    let store = Store::open(&config.store)?;
    let d_in = crate::eval::store_hook_width(&store, config.hook)?;
    let mut arch = arch::build(config, d_in)?;
    let out = &config.output;
    prepare_output(out)?;
    // One writer per run directory: a second `sae train` into it stops here.
    let _lock = loupe_util::DirLock::acquire(out, "loupe sae train")?;

    let mut run = match Checkpoint::load(out)? {
        Some(checkpoint) => {
            check_resumable(&checkpoint.info, config, &store, out)?;
            arch.set_state(&checkpoint.info.architecture_state);
            observer.note(&format!(
                "resuming {} from step {} of {}",
                out.display(),
                checkpoint.info.step,
                config.total_steps()
            ));
            checkpoint
        }
        None => start(config, &store, d_in, arch.as_ref())?,
    };
    // The step a resumed run started from: divergence right there points at what changed since.
    let resumed_at = (run.info.step > 0).then_some(run.info.step);
    let metadata = metadata_for(config, &store);
    let total_steps = config.total_steps();
    let batch = config.batch_size as u64;
    let split = Split::Train {
        held_out: config.held_out,
        seed: config.split_seed(),
    };
    let eval_rows = held_out_rows(&store, config, run.info.norm_cutoff)?;
    let mut window_fired = vec![0u64; run.params.d_sae];
    let mut window_tokens = 0u64;
    let mut last_metrics = None;
    observer.start("training", total_steps * batch, run.info.step * batch);

    'epochs: while run.info.step < total_steps {
        let mut batches = store.batches(
            config.hook,
            config.batch_size,
            config.shuffle_buffer,
            split,
            config.seed.wrapping_add(run.info.epoch),
        )?;
        // A resumed run skips the batches the interrupted one had used.
        for _ in 0..run.info.batches_in_epoch {
            batches.next().transpose()?;
        }
        for x in batches {
            let x = x?;
            if x.dim(0)? < config.batch_size {
                break; // the last partial batch of a pass is dropped
            }
            if run.info.step >= total_steps || observer.should_stop() {
                break 'epochs;
            }
            let step = run.info.step;
            let x = (keep_in_range(&x, run.info.norm_cutoff)? * run.info.scale as f64)?;
            if !x.sum_all()?.to_scalar::<f32>()?.is_finite() {
                // The reader refuses non-finite rows, so only scaling can overflow here.
                return Err(Error::Diverged {
                    step,
                    message: format!(
                        "step {step}: an input batch from {} overflows once scaled by {} (the normalisation); \
                         the store holds activations too large for f32 arithmetic: set max_norm_factor to leave them out",
                        config.store.display(),
                        run.info.scale
                    ),
                });
            }
            let rows = x.dim(0)?;
            let dead: Vec<u32> = (0..run.params.d_sae as u32)
                .filter(|&i| run.since_fired[i as usize] >= config.dead_window_tokens)
                .collect();
            let ctx = StepContext {
                sparsity_scale: sparsity_scale(config, step),
                dead: &dead,
            };
            let mut output = arch.step(&run.params, &x, &ctx)?;
            let loss = output.loss();
            if arch.unit_norm_decoder() {
                remove_parallel_component(&run.params.dec, &mut output.grads.dec, d_in);
            }
            let grad_norm = output.grads.norm_sq().sqrt();
            if !loss.is_finite() || !grad_norm.is_finite() {
                return Err(diverged(step, loss, grad_norm, config, out, resumed_at));
            }
            if config.grad_clip > 0.0 && grad_norm > config.grad_clip {
                output.grads.scale((config.grad_clip / grad_norm) as f32);
            }
            let lr = config.lr_at(step);
            run.adam.step(&mut run.params, &output.grads, lr);
            if arch.unit_norm_decoder() {
                normalize_rows(&mut run.params.dec, d_in);
            }
            if !run.params.all_finite() {
                return Err(diverged(step, loss, grad_norm, config, out, resumed_at));
            }

            for (i, &fired) in output.fired.iter().enumerate() {
                run.since_fired[i] = if fired > 0 { 0 } else { run.since_fired[i] + batch };
                window_fired[i] += fired as u64;
            }
            window_tokens += batch;
            run.info.step += 1;
            run.info.batches_in_epoch += 1;
            observer.advance(batch);

            if run.info.step % config.log_every == 0 || run.info.step == total_steps {
                let mut scalars: Vec<(String, f64)> = output
                    .losses
                    .iter()
                    .map(|(name, v)| (format!("losses/{name}"), *v))
                    .collect();
                scalars.push(("losses/total".into(), loss));
                scalars.push(("train/l0".into(), output.l0(rows)));
                scalars.push(("train/grad_norm".into(), grad_norm));
                scalars.push(("lr".into(), lr));
                scalars.push((
                    "sparsity/dead_fraction".into(),
                    dead.len() as f64 / run.params.d_sae as f64,
                ));
                observer.scalars(run.info.step, &scalars);
            }
            let eval_due = run.info.step % config.eval_every == 0 || run.info.step == total_steps;
            if eval_due && !eval_rows.is_empty() {
                let sae = inference_sae(&run, arch.as_ref(), &metadata)?;
                let metrics = evaluate_rows(&sae, &eval_rows, config.dense_threshold)?;
                let density = Density::new(&window_fired, window_tokens);
                observer.scalars(
                    run.info.step,
                    &[
                        ("metrics/mse".into(), metrics.mse),
                        ("metrics/fvu".into(), metrics.fvu),
                        ("metrics/explained_variance".into(), metrics.explained_variance),
                        ("metrics/l0".into(), metrics.l0),
                        (
                            "sparsity/dense_fraction".into(),
                            density.fraction(|d| d > config.dense_threshold),
                        ),
                    ],
                );
                observer.histogram(run.info.step, "sparsity/log10_feature_density", &density.log10());
                window_fired.iter_mut().for_each(|c| *c = 0);
                window_tokens = 0;
                last_metrics = Some(metrics);
            }
            if run.info.step % config.checkpoint_every == 0 {
                save(&mut run, arch.as_ref(), &metadata, out)?;
            }
        }
        if run.info.step < total_steps && !observer.should_stop() {
            if run.info.batches_in_epoch == 0 {
                return Err(Error::Mismatch {
                    message: format!(
                        "store {}: its training split has fewer than batch_size = {} rows; lower batch_size or capture more",
                        config.store.display(),
                        config.batch_size
                    ),
                });
            }
            run.info.epoch += 1;
            run.info.batches_in_epoch = 0;
        }
    }
    save(&mut run, arch.as_ref(), &metadata, out)?;
    let stopped = run.info.step < total_steps;
    if stopped {
        observer.note(&format!(
            "stopped at step {}; the checkpoint in {} resumes it",
            run.info.step,
            out.display()
        ));
    }
    Ok(TrainOutcome {
        steps: run.info.step,
        stopped,
        metrics: last_metrics,
    })
}

fn prepare_output(out: &Path) -> Result<()> {
    if out.is_file() {
        return Err(Error::config(
            "output",
            format!("{} is a file; name a directory", out.display()),
        ));
    }
    std::fs::create_dir_all(out)
        .map_err(|e| Error::file(out, format!("cannot create the run directory: {e}")))
}

/// A fresh run: activation scale and b_dec from a sample of the training split, decoder rows in
/// random directions, the encoder the same matrix (the decoder's transpose, in SAELens terms).
fn start(config: &TrainConfig, store: &Store, d_in: usize, arch: &dyn Architecture) -> Result<Checkpoint> {
    let d_sae = config.d_sae(d_in);
    let split = Split::Train {
        held_out: config.held_out,
        seed: config.split_seed(),
    };
    let sample = store
        .batches(
            config.hook,
            config.init_tokens,
            config.shuffle_buffer,
            split,
            config.seed ^ 0x5eed,
        )?
        .next()
        .transpose()?
        .ok_or_else(|| Error::Mismatch {
            message: format!("store {}: its training split is empty", config.store.display()),
        })?;
    let sample = crate::params::to_vec(&sample)?;
    let mut norms: Vec<f32> = sample.chunks(d_in).map(norm).collect();
    norms.sort_by(f32::total_cmp);
    let norm_cutoff =
        (config.max_norm_factor > 0.0).then(|| norms[norms.len() / 2] * config.max_norm_factor as f32);
    let sample: Vec<f32> = sample
        .chunks(d_in)
        .filter(|r| norm_cutoff.is_none_or(|c| norm(r) <= c))
        .flatten()
        .copied()
        .collect();
    let rows = sample.len() / d_in;
    let scale = if config.normalize_activations {
        let mean_sq = sample.chunks(d_in).map(|r| norm(r).powi(2) as f64).sum::<f64>() / rows as f64;
        (d_in as f64 / mean_sq).sqrt() as f32
    } else {
        1.0
    };
    let sample: Vec<f32> = sample.iter().map(|v| v * scale).collect();

    let mut params = Params::zeros(d_in, d_sae, arch.has_thresholds());
    params.b_dec = match config.b_dec_init {
        BDecInit::GeometricMedian => geometric_median(&sample, d_in),
        BDecInit::Mean => mean_row(&sample, d_in),
        BDecInit::Zeros => vec![0.0; d_in],
    };
    let mut rng = StdRng::seed_from_u64(config.seed);
    let row_norm = if arch.unit_norm_decoder() {
        1.0
    } else {
        config.decoder_init_norm as f32
    };
    for row in params.dec.chunks_mut(d_in) {
        row.iter_mut().for_each(|v| *v = standard_normal(&mut rng));
        let n = norm(row).max(1e-12);
        row.iter_mut().for_each(|v| *v *= row_norm / n);
    }
    params.enc = params.dec.clone();
    arch.init(&mut params);
    let adam = Adam::new(&params, config.adam_beta1, config.adam_beta2, config.adam_eps);
    Ok(Checkpoint {
        info: CheckpointInfo {
            step: 0,
            epoch: 0,
            batches_in_epoch: 0,
            scale,
            norm_cutoff,
            d_in,
            d_sae,
            adam_t: 0,
            architecture_state: Vec::new(),
            model_sha256: store.manifest.model.sha256.clone(),
            config: config.clone(),
        },
        params,
        adam,
        since_fired: vec![0; d_sae],
    })
}

/// Refuses to resume a checkpoint whose run differs in anything but its length and reporting.
fn check_resumable(info: &CheckpointInfo, config: &TrainConfig, store: &Store, out: &Path) -> Result<()> {
    let comparable = |c: &TrainConfig| {
        let mut c = c.clone();
        c.train_tokens = 0;
        c.checkpoint_every = 1;
        c.eval_every = 1;
        c.eval_tokens = 0;
        c.log_every = 1;
        toml::Table::try_from(&c).unwrap_or_default()
    };
    let (saved, now) = (comparable(&info.config), comparable(config));
    let differing: Vec<String> = now
        .iter()
        .filter(|(k, v)| saved.get(*k) != Some(*v))
        .map(|(k, v)| {
            format!(
                "{k} = {v} (the checkpoint has {})",
                saved.get(k).map(|s| s.to_string()).unwrap_or("nothing".into())
            )
        })
        .collect();
    if !differing.is_empty() {
        return Err(Error::Mismatch {
            message: format!(
                "{} holds a checkpoint of a different run: {}. Use another `output`, or delete the checkpoint to start over",
                Checkpoint::path(out).display(),
                differing.join("; ")
            ),
        });
    }
    if info.model_sha256 != store.manifest.model.sha256 {
        return Err(Error::Mismatch {
            message: format!(
                "{}: the checkpoint was trained on activations of another model file (sha256 {}, the store's is {})",
                Checkpoint::path(out).display(),
                info.model_sha256,
                store.manifest.model.sha256
            ),
        });
    }
    Ok(())
}

fn metadata_for(config: &TrainConfig, store: &Store) -> SaeMetadata {
    SaeMetadata {
        model_name: store.manifest.model.name.clone(),
        hook_name: config.hook.to_string(),
        model_sha256: Some(store.manifest.model.sha256.clone()),
        context_size: Some(store.manifest.context_length),
        dataset_path: Some(config.store.display().to_string()),
        trained_architecture: Some(config.architecture.to_string()),
        norm_cutoff: None,
    }
}

fn inference_sae(run: &Checkpoint, arch: &dyn Architecture, metadata: &SaeMetadata) -> Result<Sae> {
    let metadata = SaeMetadata {
        norm_cutoff: run.info.norm_cutoff,
        ..metadata.clone()
    };
    Sae::from_params(
        &run.params,
        arch.inference(&run.params),
        arch.apply_b_dec_to_input(),
        run.info.scale,
        metadata,
    )
}

/// The rows of `x` whose norm is within `cutoff`.
fn keep_in_range(x: &Tensor, cutoff: Option<f32>) -> Result<Tensor> {
    let Some(cutoff) = cutoff else {
        return Ok(x.clone());
    };
    let norms = x.sqr()?.sum(1)?.sqrt()?.to_vec1::<f32>()?;
    if norms.iter().all(|&n| n <= cutoff) {
        return Ok(x.clone());
    }
    let rows: Vec<u32> = (0..norms.len() as u32)
        .filter(|&r| norms[r as usize] <= cutoff)
        .collect();
    let n = rows.len();
    Ok(x.index_select(&Tensor::from_vec(rows, n, x.device())?, 0)?)
}

/// Writes the checkpoint, then the SAELens files, each atomically.
fn save(run: &mut Checkpoint, arch: &dyn Architecture, metadata: &SaeMetadata, out: &Path) -> Result<()> {
    run.info.adam_t = run.adam.t;
    run.info.architecture_state = arch.state();
    run.save(out)?;
    saelens::save(&inference_sae(run, arch, metadata)?, out)
}

/// Up to `eval_tokens` rows of the held-out split, read once; none when `held_out` is 0 (then
/// training reports no held-out metrics rather than numbers computed from nothing).
fn held_out_rows(store: &Store, config: &TrainConfig, cutoff: Option<f32>) -> Result<Vec<Tensor>> {
    if config.held_out == 0.0 {
        return Ok(Vec::new());
    }
    let split = Split::HeldOut {
        held_out: config.held_out,
        seed: config.split_seed(),
    };
    let mut rows = Vec::new();
    let mut n = 0;
    for batch in store.batches(config.hook, 4096, 4096, split, config.split_seed())? {
        let batch = keep_in_range(&batch?, cutoff)?;
        n += batch.dim(0)?;
        rows.push(batch);
        if n >= config.eval_tokens {
            break;
        }
    }
    if n == 0 {
        return Err(Error::Mismatch {
            message: format!(
                "store {}: held_out = {} selects no documents of its {} contexts, so there is nothing to measure the SAE on; \
                 raise held_out, capture more documents, or set held_out = 0 to train without held-out metrics",
                config.store.display(),
                config.held_out,
                store.manifest.contexts
            ),
        });
    }
    Ok(rows)
}

/// Reconstruction metrics of `sae` over `batches` (raw activations).
pub fn evaluate_rows(sae: &Sae, batches: &[Tensor], dense_threshold: f64) -> Result<ReconstructionMetrics> {
    let mut tally = Tally::new(sae.d_in, sae.d_sae);
    for x in batches {
        tally.add_batch(sae, x)?;
    }
    Ok(tally.metrics(dense_threshold))
}

fn sparsity_scale(config: &TrainConfig, step: u64) -> f64 {
    let warmup = config.sparsity_warmup_fraction * config.total_steps() as f64;
    if warmup <= 0.0 {
        1.0
    } else {
        ((step + 1) as f64 / warmup).min(1.0)
    }
}

/// Training went non-finite on finite input (the caller checked it): say what is kept, and what
/// to change. Input and checkpoint are checked when read, so the hyperparameters are the suspect.
fn diverged(
    step: u64,
    loss: f64,
    grad_norm: f64,
    config: &TrainConfig,
    out: &Path,
    resumed_at: Option<u64>,
) -> Error {
    let kept = match Checkpoint::load(out) {
        Ok(Some(_)) if resumed_at == Some(step) => format!(
            "it happened on the first step after resuming from the checkpoint in {}, which loaded as valid: \
             the settings changed since (if any) are the likely cause",
            out.display()
        ),
        Ok(Some(c)) => format!(
            "the last checkpoint (step {}) in {} is kept as it was",
            c.info.step,
            out.display()
        ),
        _ => "no checkpoint had been written yet".to_string(),
    };
    Error::Diverged {
        step,
        message: format!(
            "training diverged at step {step} on finite input: loss {loss}, gradient norm {grad_norm}; {kept}. \
             Lower `lr` (now {}) or set `grad_clip` (now {}, 0 = off) and resume",
            config.lr, config.grad_clip
        ),
    }
}

/// Removes from each decoder row's gradient its component along the (unit) row, so that the
/// update moves the row along the sphere it is constrained to.
pub(crate) fn remove_parallel_component(dec: &[f32], grad: &mut [f32], d: usize) {
    for (w, g) in dec.chunks(d).zip(grad.chunks_mut(d)) {
        let along = crate::sparse::dot(w, g);
        g.iter_mut().zip(w).for_each(|(g, &w)| *g -= along * w);
    }
}

pub(crate) fn normalize_rows(m: &mut [f32], d: usize) {
    for row in m.chunks_mut(d) {
        let n = norm(row).max(1e-12);
        row.iter_mut().for_each(|v| *v /= n);
    }
}

fn mean_row(rows: &[f32], d: usize) -> Vec<f32> {
    let n = (rows.len() / d).max(1) as f64;
    let mut mean = vec![0.0f64; d];
    for row in rows.chunks(d) {
        mean.iter_mut().zip(row).for_each(|(m, &v)| *m += v as f64);
    }
    mean.iter().map(|m| (m / n) as f32).collect()
}

/// The point minimising the summed distance to the rows (Weiszfeld's iteration from the mean):
/// a centre that outlying activations pull less than they pull the mean.
pub fn geometric_median(rows: &[f32], d: usize) -> Vec<f32> {
    let mut y: Vec<f64> = mean_row(rows, d).into_iter().map(f64::from).collect();
    for _ in 0..100 {
        let mut num = vec![0.0f64; d];
        let mut den = 0.0;
        for row in rows.chunks(d) {
            let dist = row
                .iter()
                .zip(&y)
                .map(|(&r, &y)| (r as f64 - y).powi(2))
                .sum::<f64>()
                .sqrt();
            let w = 1.0 / dist.max(1e-8);
            num.iter_mut().zip(row).for_each(|(n, &r)| *n += w * r as f64);
            den += w;
        }
        let next: Vec<f64> = num.iter().map(|n| n / den).collect();
        let moved = next
            .iter()
            .zip(&y)
            .map(|(a, b)| (a - b).powi(2))
            .sum::<f64>()
            .sqrt();
        let size = next.iter().map(|v| v * v).sum::<f64>().sqrt();
        y = next;
        if moved <= 1e-6 * size.max(1e-12) {
            break;
        }
    }
    y.into_iter().map(|v| v as f32).collect()
}

/// A standard normal sample (Box–Muller), so that decoder rows point in uniformly random
/// directions.
fn standard_normal(rng: &mut StdRng) -> f32 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}
