//! Sweeps in one pass (`loupe sae sweep --config`): several SAEs that differ in architecture,
//! width, k, λ or learning rate, trained together on one read of a store, as SAELens's multi-SAE
//! runner and dictionary_learning train them. Each batch is read and normalised once and fed to
//! every run, the runs stepping in parallel (`train_runs` in `train.rs`); each run is an ordinary
//! run directory,
//! `output/<name>` (resumable, TensorBoard, SAELens files), so every command that takes a run
//! takes it. Then every run is measured on the shared held-out split ([`evaluate`]) and compared
//! in a Pareto report ([`write_report`]): FVU and CE loss recovered against L0, one point per run.
//!
//! A sweep config is the synthetic benchmark's shape: the sweep's `output`, a `[train]` table of
//! settings every run shares, and one `[[run]]` table per SAE with its `name` and what differs.
//! The settings that decide the batches ([`SHARED_FIELDS`]) may only be set in `[train]`.

use std::path::{Path, PathBuf};

use loupe_data::reader::{Split, Store};
use loupe_model::Model;
use loupe_util::{Problems as _, Progress};
use serde::{Deserialize, Serialize};

use crate::eval::{
    check_sae_matches_store, reconstruction_each, spliced_each, stored_contexts, SplicedMetrics,
};
use crate::metrics::ReconstructionMetrics;
use crate::train::{train_runs, SHARED_FIELDS};
use crate::{
    saelens, ArchitectureName, Checkpoint, Error, Result, Sae, TrainConfig, TrainObserver, TrainOutcome,
};

/// Contexts per forward pass when CE loss is measured with each SAE spliced in.
const CE_BATCH: usize = 8;

/// A sweep: the SAEs to train together and compare (see the module docs).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepConfig {
    /// The sweep's directory: one run directory per `[[run]]` (`output/<name>`), and the report.
    pub output: PathBuf,
    /// Settings every run shares: any `TrainConfig` field but `output`.
    pub train: toml::Table,
    /// The SAEs: each a `name` and the settings that differ from `[train]` (none of
    /// [`SHARED_FIELDS`]).
    #[serde(default)]
    pub run: Vec<toml::Table>,
}

/// One SAE of a sweep.
#[derive(Clone, Debug)]
pub struct SweepRun {
    /// The `[[run]]`'s name, also its directory under the sweep's `output`.
    pub name: String,
    /// The settings its `[[run]]` sets (what differs from `[train]`).
    pub settings: toml::Table,
    /// Its whole training config: `[train]`, the run's settings on top, `output/<name>`.
    pub config: TrainConfig,
}

impl SweepConfig {
    /// Reads a sweep config; `origin` names it in errors, `overrides` are `field=value` (a dotted
    /// field reaches into `[train]`: `train.lr=1e-3`). Every run is checked here, before training.
    pub fn from_toml(text: &str, origin: &str, overrides: &[String]) -> Result<Self> {
        let config: SweepConfig = loupe_util::config::parse(text, origin, overrides)?;
        config.runs(origin)?;
        Ok(config)
    }

    /// Every run's name, own settings and whole training config.
    pub fn runs(&self, origin: &str) -> Result<Vec<SweepRun>> {
        if self.run.is_empty() {
            return Err(Error::config(
                "run",
                "no [[run]] tables: name at least one SAE to train (each a [[run]] with a name)",
            ));
        }
        if self.train.contains_key("output") {
            return Err(Error::config(
                "train.output",
                "each run's directory is the sweep's output/<name>: remove output from [train] \
                 (the sweep's own `output` goes at the top of the file)",
            ));
        }
        let named = crate::config::named_runs(&self.run, "its directory under the sweep's output")?;
        let mut runs = Vec::new();
        for (i, (name, settings)) in named.into_iter().enumerate() {
            for field in settings.keys() {
                if field == "output" {
                    return Err(Error::config(
                        &format!("run[{i}].output"),
                        format!("run '{name}' is written to the sweep's output/{name}: remove output"),
                    ));
                }
                if let Some((_, reason)) = SHARED_FIELDS.iter().find(|(shared, _)| shared == field) {
                    return Err(Error::config(
                        &format!("run[{i}].{field}"),
                        format!(
                            "run '{name}' sets it, but every run of a sweep shares it ({reason}): \
                             set it once in [train], or sweep it in separate sweeps"
                        ),
                    ));
                }
            }
            let mut merged = self.train.clone();
            merged.extend(settings.clone());
            merged.insert(
                "output".into(),
                self.output.join(&name).display().to_string().into(),
            );
            let config = TrainConfig::from_table(&merged, &format!("{origin} [[run]] {name}"))
                .map_err(|e| name_the_run(e, i, &name, &settings))?;
            runs.push(SweepRun {
                name,
                settings,
                config,
            });
        }
        Ok(runs)
    }
}

/// A setting of run `i` (`name`, whose own settings are `settings`) that cannot work, named where
/// it is set: `run[i].field` when the run sets it, `train.field` when it comes from `[train]`.
fn name_the_run(error: Error, i: usize, name: &str, settings: &toml::Table) -> Error {
    let Error::Config(problem) = error else {
        return error;
    };
    let field = if settings.contains_key(&problem.field) {
        format!("run[{i}].{}", problem.field)
    } else {
        format!("train.{}", problem.field)
    };
    Error::config(&field, format!("{} (run '{name}')", problem.message))
}

/// Trains (or resumes) every run of a sweep in one pass over the store: each batch is read once
/// and fed to every run. The outcomes are in the runs' order.
pub fn train_sweep(runs: &[SweepRun], observer: &mut dyn TrainObserver) -> Result<Vec<TrainOutcome>> {
    let configs: Vec<TrainConfig> = runs.iter().map(|r| r.config.clone()).collect();
    train_runs(&configs, observer)
}

/// What a sweep's runs scored on the shared held-out split (`sweep.json`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SweepReport {
    /// The store every run trained on.
    pub store: String,
    /// The hook point (a sweep of transcoders: `input → target`).
    pub hook: String,
    /// Fraction of documents held out, and the seed of that split.
    pub held_out: f64,
    /// The seed of the held-out split.
    pub split_seed: u64,
    /// The model CE loss was measured with; `None` when it was not (reconstruction only).
    pub model: Option<String>,
    /// Held-out contexts CE loss was measured on (0: not measured).
    pub contexts: usize,
    /// One entry per run, in the config's order.
    pub runs: Vec<RunResult>,
}

/// One run's scores, and whether it is on the Pareto front.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RunResult {
    /// The `[[run]]`'s name.
    pub name: String,
    /// Its run directory.
    pub directory: PathBuf,
    /// The architecture it trained.
    pub architecture: ArchitectureName,
    /// Its number of latents.
    pub d_sae: usize,
    /// What its `[[run]]` sets (what differs from the other runs).
    pub settings: toml::Table,
    /// Optimizer steps it has taken.
    pub steps: u64,
    /// Held-out reconstruction metrics on the sweep's `eval_tokens` activations.
    pub reconstruction: ReconstructionMetrics,
    /// CE loss and KL with the SAE spliced into the model, when measured.
    pub spliced: Option<SplicedMetrics>,
    /// On the Pareto front of FVU against L0: no other run has an L0 and an FVU at least as low,
    /// one of them lower.
    pub pareto_fvu: bool,
    /// On the Pareto front of CE loss recovered (higher is better) against L0; `None` when CE
    /// loss recovered was not measured or is undefined (zero ablation changes nothing).
    pub pareto_ce: Option<bool>,
}

impl RunResult {
    /// CE loss recovered, when measured and defined.
    pub fn ce_loss_recovered(&self) -> Option<f64> {
        self.spliced.as_ref().and_then(|s| s.ce_loss_recovered)
    }
}

/// Measures every run of a sweep on its held-out split, each on the same rows: reconstruction
/// metrics on `eval_tokens` activations, one read of the split for all runs; and, with `model`
/// (the store's), CE loss and KL with each SAE spliced in over `contexts` held-out contexts, the
/// clean and zero-ablated forward passes run once for all runs.
pub fn evaluate(
    runs: &[SweepRun],
    model: Option<&Model>,
    contexts: usize,
    progress: &mut dyn Progress,
) -> Result<SweepReport> {
    let Some(shared) = runs.first().map(|r| &r.config) else {
        return Err(Error::config(
            "run",
            "a sweep without runs has nothing to measure",
        ));
    };
    if shared.held_out == 0.0 {
        return Err(Error::config(
            "train.held_out",
            "is 0, so no documents are held out to measure the runs on: set held_out (0.05 is usual)",
        ));
    }
    let store = Store::open(&shared.store)?;
    let split = Split::HeldOut {
        held_out: shared.held_out,
        seed: shared.split_seed(),
    };
    let ce_model = model.filter(|_| contexts > 0);
    let mut saes: Vec<Sae> = Vec::new();
    let mut steps = Vec::new();
    for run in runs {
        let dir = &run.config.output;
        let sae = saelens::load(dir)?;
        check_sae_matches_store(&sae, &dir.display().to_string(), &store, shared.hook)?;
        saes.push(sae);
        steps.push(Checkpoint::load(dir)?.map_or(0, |c| c.info.step));
    }
    let sae_refs: Vec<&Sae> = saes.iter().collect();
    let reconstructions = reconstruction_each(
        &sae_refs,
        &store,
        shared.hook,
        split,
        shared.eval_tokens,
        shared.dense_threshold,
    )?;
    let spliced: Vec<Option<SplicedMetrics>> = match ce_model {
        Some(model) => {
            let sha = model.source.fingerprint()?;
            if sha != store.manifest.model.sha256 {
                return Err(Error::Mismatch {
                    message: format!(
                        "model {} (sha256 {sha}) is not the model store {} was captured from (sha256 {})",
                        model.name,
                        store.dir.display(),
                        store.manifest.model.sha256
                    ),
                });
            }
            let held_out = stored_contexts(&store, shared.hook, split, contexts)?;
            spliced_each(model, &sae_refs, shared.hook, &held_out, CE_BATCH, progress)?
                .into_iter()
                .map(Some)
                .collect()
        }
        None => vec![None; runs.len()],
    };

    let fvu_front = pareto_optimal(&reconstructions.iter().map(|m| (m.l0, m.fvu)).collect::<Vec<_>>());
    let ce_points: Vec<(f64, f64)> = reconstructions
        .iter()
        .zip(&spliced)
        .map(|(m, s)| {
            let recovered = s.as_ref().and_then(|s| s.ce_loss_recovered).unwrap_or(f64::NAN);
            (m.l0, -recovered)
        })
        .collect();
    let ce_front = pareto_optimal(&ce_points);
    let results = runs
        .iter()
        .enumerate()
        .map(|(i, run)| RunResult {
            name: run.name.clone(),
            directory: run.config.output.clone(),
            architecture: run.config.architecture,
            d_sae: saes[i].d_sae,
            settings: run.settings.clone(),
            steps: steps[i],
            reconstruction: reconstructions[i].clone(),
            spliced: spliced[i].clone(),
            pareto_fvu: fvu_front[i],
            pareto_ce: (!ce_points[i].1.is_nan()).then_some(ce_front[i]),
        })
        .collect();
    Ok(SweepReport {
        store: shared.store.display().to_string(),
        hook: match shared.target_hook {
            Some(target) => format!("{} → {target}", shared.hook),
            None => shared.hook.to_string(),
        },
        held_out: shared.held_out,
        split_seed: shared.split_seed(),
        model: ce_model.map(|m| m.name.clone()),
        contexts: if ce_model.is_some() { contexts } else { 0 },
        runs: results,
    })
}

/// For points `(x, y)`, both better when lower, whether each is Pareto-optimal: no other point is
/// at least as low in both coordinates and lower in one. A point with a NaN coordinate is never
/// optimal, and never keeps another from being.
pub fn pareto_optimal(points: &[(f64, f64)]) -> Vec<bool> {
    points
        .iter()
        .map(|&(x, y)| {
            !x.is_nan()
                && !y.is_nan()
                && !points
                    .iter()
                    .any(|&(ox, oy)| ox <= x && oy <= y && (ox < x || oy < y))
        })
        .collect()
}

/// The report's file names in the sweep's directory.
pub const REPORT_JSON: &str = "sweep.json";
/// The HTML page: both charts inline, and a table of every run.
pub const REPORT_HTML: &str = "sweep.html";
/// FVU against L0, alone.
pub const FVU_CHART: &str = "fvu_l0.svg";
/// CE loss recovered against L0, alone (only when CE was measured).
pub const CE_CHART: &str = "ce_l0.svg";

/// Writes the report into the sweep's directory `dir`, each file atomically: `sweep.json`,
/// `sweep.html`, and the charts alone as SVG files. Returns the paths written.
pub fn write_report(report: &SweepReport, dir: &Path) -> Result<Vec<PathBuf>> {
    let json = serde_json::to_string_pretty(report).map_err(|e| Error::file(dir.join(REPORT_JSON), e))?;
    let fvu = crate::sweep_report::fvu_chart(report);
    let ce = crate::sweep_report::ce_chart(report);
    let html = crate::sweep_report::page(report, &fvu, ce.as_deref());
    let mut files = vec![(REPORT_JSON, json), (REPORT_HTML, html), (FVU_CHART, fvu)];
    match ce {
        Some(ce) => files.push((CE_CHART, ce)),
        None => {
            // A chart from an earlier evaluation with CE would no longer match the report.
            let stale = dir.join(CE_CHART);
            if stale.exists() {
                std::fs::remove_file(&stale)
                    .map_err(|e| Error::file(&stale, format!("cannot remove: {e}")))?;
            }
        }
    }
    let mut written = Vec::new();
    for (name, contents) in files {
        let path = dir.join(name);
        loupe_util::write_atomically(&path, contents.as_bytes())?;
        written.push(path);
    }
    Ok(written)
}
