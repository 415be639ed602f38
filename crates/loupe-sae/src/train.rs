//! The training loop. [`train`] trains one SAE; a sweep ([`crate::sweep`]) trains several on one
//! read of the store. Both go through [`train_runs`], which reads top to bottom: open the store
//! (or the model, for a run that streams from it: [`crate::source`]),
//! start or resume each run, then pass over the training split, and for each batch: normalise it
//! once, then feed it to every run, the runs stepping in parallel ([`Run::step`]: forward and
//! backward → clip → Adam → decoder constraint → bookkeeping, with evaluations and checkpoints at
//! their intervals).

use std::path::Path;

use candle_core::Tensor;
use loupe_util::{DirLock, Problems as _, Progress};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

use crate::arch::{self, Architecture, StepContext};
use crate::checkpoint::{Checkpoint, CheckpointInfo};
use crate::metrics::{Density, ReconstructionMetrics, Tally};
use crate::params::norm;
use crate::source::ActivationSource;
use crate::{saelens, Adam, BDecInit, Error, Params, Result, Sae, SaeMetadata, TrainConfig};

/// Where training reports progress and metrics; the binary draws a progress bar and writes
/// TensorBoard event files.
pub trait TrainObserver: Progress {
    /// Named scalars of run `run` at a step (`losses/mse`, `metrics/l0`, `lr`, ...). `run` is the
    /// run's index among those trained together: always 0 for [`train()`], the `[[run]]`'s index
    /// for a sweep.
    fn scalars(&mut self, _run: usize, _step: u64, _scalars: &[(String, f64)]) {}
    /// A set of values of run `run` to show as a histogram at a step.
    fn histogram(&mut self, _run: usize, _step: u64, _tag: &str, _values: &[f64]) {}
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

/// The settings that runs trained together in one pass must share, each with the reason: they
/// decide what is read from the store and how it is normalised (so the batches every run sees),
/// when the runs are checkpointed, and how they are measured against each other.
pub const SHARED_FIELDS: [(&str, &str); 17] = [
    ("source", "every run trains on the one read of the store"),
    ("store", "every run trains on the one read of the store"),
    ("stream", "every run trains on the one stream from the model"),
    ("hook", "every run trains on the one read of the store"),
    ("target_hook", "every run trains on the one read of the store"),
    (
        "batch_size",
        "the runs take their steps together, on the same batches",
    ),
    (
        "train_tokens",
        "the runs take their steps together, to the same last step",
    ),
    ("shuffle_buffer", "it decides which rows make each batch"),
    ("seed", "it decides the order of the batches"),
    ("split_seed", "it decides which documents are held out"),
    ("held_out", "it decides which documents are held out"),
    ("init_tokens", "the normalisation is estimated once for every run"),
    ("max_norm_factor", "each batch is normalised once for every run"),
    (
        "normalize_activations",
        "each batch is normalised once for every run",
    ),
    (
        "eval_tokens",
        "the held-out activations are read once for every run",
    ),
    (
        "dense_threshold",
        "the runs are compared by one measure of dense latents",
    ),
    (
        "checkpoint_every",
        "the runs are checkpointed together, so that a stopped pass resumes every run from one step",
    ),
];

/// Trains (or resumes training) the SAE `config` describes, writing checkpoints and the SAELens
/// files into `config.output`.
pub fn train(config: &TrainConfig, observer: &mut dyn TrainObserver) -> Result<TrainOutcome> {
    let mut outcomes = train_runs(std::slice::from_ref(config), observer)?;
    Ok(outcomes.remove(0))
}

/// Trains (or resumes) the runs `configs` describe in one pass over the store: each batch is read
/// and normalised once, then fed to every run. The configs must agree on [`SHARED_FIELDS`]; each
/// run writes its own directory (`output`), exactly as it would if trained alone.
///
/// Each run resumes from its own checkpoint. Runs that stand at different steps (a pass killed
/// between two runs' checkpoints, or a run added to a sweep) all resume: the pass starts where
/// the run furthest behind stands, and a run further along waits until the pass reaches it.
pub(crate) fn train_runs(
    configs: &[TrainConfig],
    observer: &mut dyn TrainObserver,
) -> Result<Vec<TrainOutcome>> {
    let Some(shared) = configs.first() else {
        return Ok(Vec::new());
    };
    for config in configs {
        config.validate()?;
        check_shared(shared, config)?;
    }
    check_distinct_outputs(configs)?;
    let hooks = hooks_read(shared);
    let source = ActivationSource::open(shared, &hooks)?;
    let d_in = source.width(shared.hook)?;
    check_target_hook(&source, shared, d_in)?;
    // Every architecture is built before anything is written: a bad setting of any run stops here.
    let architectures = configs
        .iter()
        .map(|c| arch::build(c, d_in))
        .collect::<Result<Vec<_>>>()?;
    // Read from the store only if some run starts afresh.
    let mut starting_point = None;
    let mut runs = Vec::new();
    for (config, architecture) in configs.iter().zip(architectures) {
        runs.push(Run::open(
            config,
            architecture,
            &source,
            &mut starting_point,
            observer,
        )?);
    }
    let normalisation = shared_normalisation(&runs)?;
    let eval_rows = held_out_rows(&source, shared, normalisation.norm_cutoff)?;
    let total_steps = shared.total_steps();
    let batch = shared.batch_size as u64;
    let first_step = runs.iter().map(|r| r.state.info.step).min().unwrap_or(0);
    observer.start(
        "training",
        total_steps * batch,
        first_step.min(total_steps) * batch,
    );

    // Passes over the training split, each from where the run furthest behind stands.
    'passes: while let Some((epoch, used)) = runs.iter().filter(|r| !r.finished()).map(Run::position).min() {
        if observer.should_stop() {
            break;
        }
        // A stream starts where the run furthest behind stands in the corpus.
        let behind = runs
            .iter()
            .filter(|r| !r.finished() && r.position() == (epoch, used));
        let stream_start = behind
            .filter_map(|r| r.state.info.stream_position)
            .next()
            .unwrap_or_default();
        let mut batches = source.training_batches(shared, &hooks, epoch, used, stream_start)?;
        let mut index = used;
        while let Some(rows) = batches.next() {
            let rows = rows?;
            if rows.dim(0)? < shared.batch_size {
                break; // the last partial batch of a pass is dropped
            }
            if observer.should_stop() || runs.iter().all(Run::finished) {
                break 'passes;
            }
            let due: Vec<usize> = (0..runs.len())
                .filter(|&i| !runs[i].finished() && runs[i].position() == (epoch, index))
                .collect();
            if let Some(&first) = due.first() {
                let (x, target) = normalisation.apply(&rows, d_in, runs[first].state.info.step, &source)?;
                let target = target.as_deref().unwrap_or(&x);
                // Before the step, whose checkpoint (when one is due) must name the batch after
                // this one.
                for &i in &due {
                    runs[i].state.info.stream_position = batches.stream_position();
                }
                // The runs step at once: one run's step leaves cores idle (its serial parts) that
                // another's fills. Each run's arithmetic is the same as when it steps alone.
                let results: Vec<(usize, Result<StepReport>)> = runs
                    .par_iter_mut()
                    .enumerate()
                    .filter(|(i, _)| due.contains(i))
                    .map(|(i, run)| (i, run.step(&x, target, &eval_rows)))
                    .collect();
                let mut failed = Vec::new();
                for (i, result) in results {
                    match result {
                        Ok(report) => report.send(i, runs[i].state.info.step, observer),
                        Err(e) => failed.push((i, e)),
                    }
                }
                if !failed.is_empty() {
                    return Err(save_the_others(&mut runs, failed));
                }
            }
            index += 1;
            observer.advance(batch);
        }
        if index == 0 {
            return Err(Error::Mismatch {
                message: format!(
                    "{}: its training split has fewer than batch_size = {} rows; lower batch_size or capture more",
                    source.describe(),
                    shared.batch_size
                ),
            });
        }
        for run in runs.iter_mut() {
            if !run.finished() && run.state.info.epoch == epoch {
                run.state.info.epoch += 1;
                run.state.info.batches_in_epoch = 0;
                run.state.info.stream_position = None;
            }
        }
    }

    let mut outcomes = Vec::new();
    for run in &mut runs {
        run.save()?;
        let stopped = !run.finished();
        if stopped {
            observer.note(&format!(
                "stopped at step {}; the checkpoint in {} resumes it",
                run.state.info.step,
                run.config.output.display()
            ));
        }
        outcomes.push(TrainOutcome {
            steps: run.state.info.step,
            stopped,
            metrics: run.last_metrics.take(),
        });
    }
    Ok(outcomes)
}

/// One SAE in training: its settings and architecture, the state its checkpoint keeps, and the
/// firing counts between evaluations. [`train_runs`] feeds it batches through [`Run::step`].
struct Run {
    config: TrainConfig,
    architecture: Box<dyn Architecture>,
    state: Checkpoint,
    metadata: SaeMetadata,
    /// The step this process resumed the run from: divergence right there points at what changed
    /// since.
    resumed_at: Option<u64>,
    /// Training tokens each latent fired on since the last evaluation, and the tokens.
    window_fired: Vec<u64>,
    window_tokens: u64,
    last_metrics: Option<ReconstructionMetrics>,
    /// Held while training: one writer per run directory.
    _lock: DirLock,
}

/// What one step has to show: scalars, and after an evaluation the log10 feature densities.
#[derive(Default)]
struct StepReport {
    scalars: Vec<(String, f64)>,
    log10_density: Option<Vec<f64>>,
}

impl StepReport {
    fn send(self, run: usize, step: u64, observer: &mut dyn TrainObserver) {
        if !self.scalars.is_empty() {
            observer.scalars(run, step, &self.scalars);
        }
        if let Some(density) = self.log10_density {
            observer.histogram(run, step, "sparsity/log10_feature_density", &density);
        }
    }
}

impl Run {
    /// Locks the run directory and resumes its checkpoint, or starts the run afresh from the
    /// pass's starting point (read from the store the first time a run needs it).
    fn open(
        config: &TrainConfig,
        mut architecture: Box<dyn Architecture>,
        source: &ActivationSource,
        starting_point: &mut Option<StartingPoint>,
        observer: &mut dyn TrainObserver,
    ) -> Result<Run> {
        let out = &config.output;
        prepare_output(out)?;
        // One writer per run directory: a second `sae train` or `sae sweep` into it stops here.
        let lock = DirLock::acquire(out, "loupe sae train/sweep")?;
        let state = match Checkpoint::load(out)? {
            Some(checkpoint) => {
                check_resumable(&checkpoint.info, config, source, out)?;
                architecture.set_state(&checkpoint.info.architecture_state);
                observer.note(&format!(
                    "resuming {} from step {} of {}",
                    out.display(),
                    checkpoint.info.step,
                    config.total_steps()
                ));
                checkpoint
            }
            None => {
                let point = match starting_point {
                    Some(point) => point,
                    None => starting_point.insert(StartingPoint::read(source, config)?),
                };
                start(config, point, source, architecture.as_ref())
            }
        };
        let d_sae = state.params.d_sae;
        Ok(Run {
            metadata: metadata_for(config, source),
            resumed_at: (state.info.step > 0).then_some(state.info.step),
            config: config.clone(),
            architecture,
            state,
            window_fired: vec![0; d_sae],
            window_tokens: 0,
            last_metrics: None,
            _lock: lock,
        })
    }

    fn finished(&self) -> bool {
        self.state.info.step >= self.config.total_steps()
    }

    /// Where the run stands in the stream of batches: (pass, batches of it used).
    fn position(&self) -> (u64, u64) {
        (self.state.info.epoch, self.state.info.batches_in_epoch)
    }

    /// One optimizer step on the normalised batch (inputs `x`, and the `target` to reconstruct:
    /// `x` itself for an SAE), then an evaluation on `eval_rows` (raw held-out rows) and a
    /// checkpoint when they are due.
    fn step(&mut self, x: &[f32], target: &[f32], eval_rows: &[Tensor]) -> Result<StepReport> {
        let config = &self.config;
        let total_steps = config.total_steps();
        let batch = config.batch_size as u64;
        let run = &mut self.state;
        let d_in = run.params.d_in;
        let step = run.info.step;
        let rows = x.len() / d_in;
        let dead: Vec<u32> = (0..run.params.d_sae as u32)
            .filter(|&i| run.since_fired[i as usize] >= config.dead_window_tokens)
            .collect();
        let ctx = StepContext {
            sparsity_scale: sparsity_scale(config, step),
            dead: &dead,
        };
        let mut output = arch::step(self.architecture.as_mut(), &run.params, x, target, &ctx)?;
        let loss = output.loss();
        if self.architecture.unit_norm_decoder() {
            remove_parallel_component(&run.params.dec, &mut output.grads.dec, d_in);
        }
        let grad_norm = output.grads.norm_sq().sqrt();
        let out = &config.output;
        if !loss.is_finite() || !grad_norm.is_finite() {
            return Err(diverged(step, loss, grad_norm, config, out, self.resumed_at));
        }
        if config.grad_clip > 0.0 && grad_norm > config.grad_clip {
            output.grads.scale((config.grad_clip / grad_norm) as f32);
        }
        let lr = config.lr_at(step);
        run.adam.step(&mut run.params, &output.grads, lr);
        if self.architecture.unit_norm_decoder() {
            normalize_rows(&mut run.params.dec, d_in);
        }
        if !run.params.all_finite() {
            return Err(diverged(step, loss, grad_norm, config, out, self.resumed_at));
        }

        for (i, &fired) in output.fired.iter().enumerate() {
            run.since_fired[i] = if fired > 0 { 0 } else { run.since_fired[i] + batch };
            self.window_fired[i] += fired as u64;
        }
        self.window_tokens += batch;
        run.info.step += 1;
        run.info.batches_in_epoch += 1;

        let mut report = StepReport::default();
        if run.info.step.is_multiple_of(config.log_every) || run.info.step == total_steps {
            report.scalars.extend(
                output
                    .losses
                    .iter()
                    .map(|(name, v)| (format!("losses/{name}"), *v)),
            );
            report.scalars.extend([
                ("losses/total".into(), loss),
                ("train/l0".into(), output.l0(rows)),
                ("train/grad_norm".into(), grad_norm),
                ("lr".into(), lr),
                (
                    "sparsity/dead_fraction".into(),
                    dead.len() as f64 / run.params.d_sae as f64,
                ),
            ]);
        }
        let eval_due = run.info.step.is_multiple_of(config.eval_every) || run.info.step == total_steps;
        if eval_due && !eval_rows.is_empty() {
            let sae = inference_sae(run, self.architecture.as_ref(), &self.metadata)?;
            let metrics = evaluate_rows(&sae, eval_rows, config.dense_threshold)?;
            let density = Density::new(&self.window_fired, self.window_tokens);
            report.scalars.extend([
                ("metrics/mse".into(), metrics.mse),
                ("metrics/fvu".into(), metrics.fvu),
                ("metrics/explained_variance".into(), metrics.explained_variance),
                ("metrics/l0".into(), metrics.l0),
                (
                    "sparsity/dense_fraction".into(),
                    density.fraction(|d| d > config.dense_threshold),
                ),
            ]);
            report.log10_density = Some(density.log10());
            self.window_fired.iter_mut().for_each(|c| *c = 0);
            self.window_tokens = 0;
            self.last_metrics = Some(metrics);
        }
        if run.info.step.is_multiple_of(config.checkpoint_every) {
            self.save()?;
        }
        Ok(report)
    }

    /// Writes the checkpoint, then the SAELens files, each atomically.
    fn save(&mut self) -> Result<()> {
        let run = &mut self.state;
        run.info.adam_t = run.adam.t;
        run.info.architecture_state = self.architecture.state();
        run.save(&self.config.output)?;
        saelens::save(
            &inference_sae(run, self.architecture.as_ref(), &self.metadata)?,
            &self.config.output,
        )
    }
}

/// Runs of a pass failed to take their step (`failed`: each run's index and error, in run order):
/// the other runs are saved where they stand (a failed run keeps its last checkpoint), and the
/// first failure is returned, naming its run's directory when several runs train together. A
/// rerun resumes each run from its own step.
fn save_the_others(runs: &mut [Run], failed: Vec<(usize, Error)>) -> Error {
    for (i, run) in runs.iter_mut().enumerate() {
        // A run that cannot be saved keeps its last checkpoint, from which a rerun resumes it.
        if !failed.iter().any(|(f, _)| *f == i) {
            let _ = run.save();
        }
    }
    let (first, error) = failed.into_iter().next().expect("a failed run");
    if runs.len() == 1 {
        return error;
    }
    let run = runs[first].config.output.display();
    match error {
        Error::Diverged { step, message } => Error::Diverged {
            step,
            message: format!("run {run}: {message}"),
        },
        other => other,
    }
}

/// Refuses runs that cannot share one pass: a field of [`SHARED_FIELDS`] that differs.
fn check_shared(first: &TrainConfig, other: &TrainConfig) -> Result<()> {
    let (a, b) = (as_table(first), as_table(other));
    for (field, reason) in SHARED_FIELDS {
        if a.get(field) != b.get(field) {
            let shown = |t: &toml::Table| t.get(field).map_or("nothing".to_string(), |v| v.to_string());
            return Err(Error::config(
                field,
                format!(
                    "runs trained together must share it ({reason}), but {} has {} and {} has {}",
                    first.output.display(),
                    shown(&a),
                    other.output.display(),
                    shown(&b)
                ),
            ));
        }
    }
    Ok(())
}

fn as_table(config: &TrainConfig) -> toml::Table {
    toml::Table::try_from(config).unwrap_or_default()
}

fn check_distinct_outputs(configs: &[TrainConfig]) -> Result<()> {
    for (i, config) in configs.iter().enumerate() {
        if configs[..i].iter().any(|c| c.output == config.output) {
            return Err(Error::config(
                "output",
                format!(
                    "two runs write to {}: give each run its own directory",
                    config.output.display()
                ),
            ));
        }
    }
    Ok(())
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

/// How every batch is prepared for training: rows whose norm exceeds the cutoff are left out, the
/// rest scaled. Fixed when a run starts (from a sample of the store) and kept in its checkpoint.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Normalisation {
    /// Activations are multiplied by this (a transcoder's inputs).
    scale: f32,
    /// A transcoder's targets are multiplied by this; `None` for an SAE.
    target_scale: Option<f32>,
    /// Activations with a larger norm (raw units) are left out; `None` keeps all.
    norm_cutoff: Option<f32>,
}

impl Normalisation {
    /// `scale 0.156, norm cutoff 1296.9`, for messages.
    fn describe(&self) -> String {
        let scale = match self.target_scale {
            Some(target) => format!("scale {} (targets {target})", self.scale),
            None => format!("scale {}", self.scale),
        };
        match self.norm_cutoff {
            Some(cutoff) => format!("{scale}, norm cutoff {cutoff}"),
            None => format!("{scale}, no norm cutoff"),
        }
    }

    /// Raw rows (of [`hooks_read`], inputs `d_in` wide first) as training sees them: the inputs
    /// and, for a transcoder, the targets, each scaled, at `step` (for the error) of a run on
    /// `source`.
    fn apply(
        &self,
        rows: &Tensor,
        d_in: usize,
        step: u64,
        source: &ActivationSource,
    ) -> Result<(Vec<f32>, Option<Vec<f32>>)> {
        let (x, target) = split_pair(&keep_in_range(rows, d_in, self.norm_cutoff)?, d_in)?;
        let scaled = |t: &Tensor, scale: f32| -> Result<Vec<f32>> {
            let t = (t * scale as f64)?;
            if !t.sum_all()?.to_scalar::<f32>()?.is_finite() {
                // The reader refuses non-finite rows, so only scaling can overflow here.
                return Err(Error::Diverged {
                    step,
                    message: format!(
                        "step {step}: an input batch from {} overflows once scaled by {scale} (the normalisation); \
                         it holds activations too large for f32 arithmetic: set max_norm_factor to leave them out",
                        source.describe(),
                    ),
                });
            }
            crate::params::to_vec(&t)
        };
        let target = match self.target_scale {
            Some(target_scale) => Some(scaled(&target, target_scale)?),
            None => None,
        };
        Ok((scaled(&x, self.scale)?, target))
    }
}

/// The normalisation every run of a pass uses. Runs that share their settings compute the same
/// one from the same sample; runs whose checkpoints disagree were started on different stores.
fn shared_normalisation(runs: &[Run]) -> Result<Normalisation> {
    let of = |run: &Run| Normalisation {
        scale: run.state.info.scale,
        target_scale: run.state.info.target_scale,
        norm_cutoff: run.state.info.norm_cutoff,
    };
    let first = of(&runs[0]);
    if let Some(other) = runs.iter().find(|r| of(r) != first) {
        return Err(Error::Mismatch {
            message: format!(
                "{} and {} normalise activations differently ({} against {}), so they cannot share one pass: \
                 their checkpoints were started on different contents of the store. Delete one run's checkpoint to train it again",
                Checkpoint::path(&runs[0].config.output).display(),
                Checkpoint::path(&other.config.output).display(),
                first.describe(),
                of(other).describe()
            ),
        });
    }
    Ok(first)
}

/// What a fresh run starts from, read and computed once for every run of a pass: the
/// normalisation, estimated on a sample of the training split, and the sample's targets
/// normalised (from which b_dec starts).
struct StartingPoint {
    normalisation: Normalisation,
    /// The targets (the inputs, for an SAE) of `init_tokens` rows of the training split, rows
    /// beyond the cutoff left out, scaled.
    targets: Vec<f32>,
    d_in: usize,
    /// b_dec's initial value for each `b_dec_init` asked for so far (the geometric median takes a
    /// while to compute).
    b_dec: Vec<(BDecInit, Vec<f32>)>,
}

impl StartingPoint {
    /// The activation scale (and a transcoder's target scale) and the norm cutoff from a sample of
    /// the training split.
    fn read(source: &ActivationSource, config: &TrainConfig) -> Result<StartingPoint> {
        let d_in = source.width(config.hook)?;
        let sample = source.sample(config, &hooks_read(config))?;
        let (inputs, _) = split_pair(&sample, d_in)?;
        let mut norms: Vec<f32> = crate::params::to_vec(&inputs)?.chunks(d_in).map(norm).collect();
        norms.sort_by(f32::total_cmp);
        let norm_cutoff =
            (config.max_norm_factor > 0.0).then(|| norms[norms.len() / 2] * config.max_norm_factor as f32);
        let (inputs, targets) = split_pair(&keep_in_range(&sample, d_in, norm_cutoff)?, d_in)?;
        let (inputs, targets) = (crate::params::to_vec(&inputs)?, crate::params::to_vec(&targets)?);
        let scale_of = |rows: &[f32]| -> f32 {
            if !config.normalize_activations {
                return 1.0;
            }
            let count = (rows.len() / d_in).max(1);
            let mean_sq = rows.chunks(d_in).map(|r| norm(r).powi(2) as f64).sum::<f64>() / count as f64;
            (d_in as f64 / mean_sq).sqrt() as f32
        };
        let scale = scale_of(&inputs);
        let target_scale = config.is_transcoder().then(|| scale_of(&targets));
        let applied = target_scale.unwrap_or(scale);
        Ok(StartingPoint {
            normalisation: Normalisation {
                scale,
                target_scale,
                norm_cutoff,
            },
            targets: targets.iter().map(|v| v * applied).collect(),
            d_in,
            b_dec: Vec::new(),
        })
    }

    /// b_dec's initial value, chosen from the normalised targets as `init` says.
    fn b_dec(&mut self, init: BDecInit) -> Vec<f32> {
        if let Some((_, b_dec)) = self.b_dec.iter().find(|(i, _)| *i == init) {
            return b_dec.clone();
        }
        let b_dec = match init {
            BDecInit::GeometricMedian => geometric_median(&self.targets, self.d_in),
            BDecInit::Mean => mean_row(&self.targets, self.d_in),
            BDecInit::Zeros => vec![0.0; self.d_in],
        };
        self.b_dec.push((init, b_dec.clone()));
        b_dec
    }
}

/// A fresh run: the pass's normalisation and b_dec from its sample, decoder rows in random
/// directions, the encoder the same matrix (the decoder's transpose, in SAELens terms).
fn start(
    config: &TrainConfig,
    point: &mut StartingPoint,
    source: &ActivationSource,
    arch: &dyn Architecture,
) -> Checkpoint {
    let d_in = point.d_in;
    let d_sae = config.d_sae(d_in);
    let mut params = Params::zeros(d_in, d_sae, arch.has_thresholds());
    if config.skip_connection {
        params = params.with_zero_skip();
    }
    params.b_dec = point.b_dec(config.b_dec_init);
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
    Checkpoint {
        info: CheckpointInfo {
            step: 0,
            epoch: 0,
            batches_in_epoch: 0,
            stream_position: None,
            scale: point.normalisation.scale,
            target_scale: point.normalisation.target_scale,
            norm_cutoff: point.normalisation.norm_cutoff,
            d_in,
            d_sae,
            adam_t: 0,
            architecture_state: Vec::new(),
            model_sha256: source.model_sha256().to_string(),
            config: config.clone(),
        },
        params,
        adam,
        since_fired: vec![0; d_sae],
    }
}

/// Refuses to resume a checkpoint whose run differs in anything but its length and reporting.
fn check_resumable(
    info: &CheckpointInfo,
    config: &TrainConfig,
    source: &ActivationSource,
    out: &Path,
) -> Result<()> {
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
    if info.model_sha256 != source.model_sha256() {
        return Err(Error::Mismatch {
            message: format!(
                "{}: the checkpoint was trained on activations of another model file (sha256 {}; {} is of sha256 {})",
                Checkpoint::path(out).display(),
                info.model_sha256,
                source.describe(),
                source.model_sha256()
            ),
        });
    }
    Ok(())
}

fn metadata_for(config: &TrainConfig, source: &ActivationSource) -> SaeMetadata {
    SaeMetadata {
        model_name: source.model_name().to_string(),
        hook_name: config.hook.to_string(),
        hook_name_out: config.target_hook.map(|h| h.to_string()),
        model_sha256: Some(source.model_sha256().to_string()),
        context_size: Some(source.context_length()),
        // A streamed run has no store to evaluate on by default: `sae eval --store` names one.
        dataset_path: source.store().map(|_| config.store.display().to_string()),
        trained_architecture: Some(config.architecture.to_string()),
        norm_cutoff: None,
    }
}

fn inference_sae(run: &Checkpoint, arch: &dyn Architecture, metadata: &SaeMetadata) -> Result<Sae> {
    let metadata = SaeMetadata {
        norm_cutoff: run.info.norm_cutoff,
        ..metadata.clone()
    };
    Sae::from_scaled_params(
        &run.params,
        arch.inference(&run.params),
        arch.apply_b_dec_to_input(),
        run.info.scale,
        run.info.target_scale.unwrap_or(run.info.scale),
        metadata,
    )
}

/// The hooks a run reads from the store, side by side in each row: its input, then a
/// transcoder's target.
fn hooks_read(config: &TrainConfig) -> Vec<loupe_model::HookPoint> {
    std::iter::once(config.hook).chain(config.target_hook).collect()
}

/// Rows of [`hooks_read`] split into the inputs (the first `d_in` columns) and the targets: the
/// next `d_in` columns of a transcoder's rows, the inputs themselves for an SAE's.
pub(crate) fn split_pair(rows: &Tensor, d_in: usize) -> Result<(Tensor, Tensor)> {
    if rows.dim(1)? == d_in {
        return Ok((rows.clone(), rows.clone()));
    }
    Ok((
        rows.narrow(1, 0, d_in)?.contiguous()?,
        rows.narrow(1, d_in, d_in)?.contiguous()?,
    ))
}

/// Refuses a transcoder whose target hook the store lacks, or holds at another width than the
/// input (the decoder writes vectors as wide as the encoder reads).
fn check_target_hook(source: &ActivationSource, config: &TrainConfig, d_in: usize) -> Result<()> {
    let Some(target) = config.target_hook else {
        return Ok(());
    };
    let width = source.width(target).map_err(|e| {
        Error::config(
            "target_hook",
            format!(
                "{e}. A transcoder trains on a store holding both its hooks: capture {target} beside {} \
                 (list both in the capture config's `hooks`)",
                config.hook
            ),
        )
    })?;
    if width != d_in {
        return Err(Error::config(
            "target_hook",
            format!(
                "{target} is {width} wide in store {}, but the input {} is {d_in} wide; loupe's transcoders map \
                 between hooks of one width (e.g. blocks.L.ln2.hook_normalized → blocks.L.hook_mlp_out)",
                source.describe(),
                config.hook
            ),
        ));
    }
    Ok(())
}

/// The rows of `rows` whose input (the first `d_in` columns) has a norm within `cutoff`.
fn keep_in_range(rows: &Tensor, d_in: usize, cutoff: Option<f32>) -> Result<Tensor> {
    let Some(cutoff) = cutoff else {
        return Ok(rows.clone());
    };
    let norms = rows.narrow(1, 0, d_in)?.sqr()?.sum(1)?.sqrt()?.to_vec1::<f32>()?;
    if norms.iter().all(|&n| n <= cutoff) {
        return Ok(rows.clone());
    }
    let kept: Vec<u32> = (0..norms.len() as u32)
        .filter(|&r| norms[r as usize] <= cutoff)
        .collect();
    let n = kept.len();
    Ok(rows.index_select(&Tensor::from_vec(kept, n, rows.device())?, 0)?)
}

/// Up to `eval_tokens` rows of the held-out split, read once; none when `held_out` is 0 (then
/// training reports no held-out metrics rather than numbers computed from nothing).
fn held_out_rows(
    source: &ActivationSource,
    config: &TrainConfig,
    cutoff: Option<f32>,
) -> Result<Vec<Tensor>> {
    if config.held_out == 0.0 {
        return Ok(Vec::new());
    }
    let mut rows = Vec::new();
    let mut n = 0;
    let d_in = source.width(config.hook)?;
    for batch in source.held_out_batches(config, &hooks_read(config))? {
        let batch = keep_in_range(&batch?, d_in, cutoff)?;
        n += batch.dim(0)?;
        rows.push(batch);
        if n >= config.eval_tokens {
            break;
        }
    }
    if n == 0 {
        let what = match source.store() {
            Some(store) => format!("of its {} contexts", store.manifest.contexts),
            None => "at the start of the corpus".to_string(),
        };
        return Err(Error::Mismatch {
            message: format!(
                "{}: held_out = {} selects no documents {what}, so there is nothing to measure the SAE on; \
                 raise held_out, capture more documents, or set held_out = 0 to train without held-out metrics",
                source.describe(),
                config.held_out,
            ),
        });
    }
    Ok(rows)
}

/// Reconstruction metrics of `sae` over `batches` (raw activations; a transcoder's rows hold
/// its inputs and then its targets, side by side).
pub fn evaluate_rows(sae: &Sae, batches: &[Tensor], dense_threshold: f64) -> Result<ReconstructionMetrics> {
    let mut tally = Tally::new(sae.d_in, sae.d_sae);
    for rows in batches {
        let (x, target) = split_pair(rows, sae.d_in)?;
        tally.add_pair(sae, &x, &target)?;
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
