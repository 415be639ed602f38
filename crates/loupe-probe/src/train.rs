//! `loupe probe train`: for every store × hook × feature, build the dataset, run the k sweep, save
//! every probe, and write the summary. A finished (feature, hook) sweep leaves `sweep.json` in its
//! directory, so a run stopped with Ctrl-C (or by a crash) resumes with the sweeps it had not done.

use std::path::{Path, PathBuf};

use loupe_data::reader::Store;
use loupe_model::{HookPoint, Tokenizer};
use loupe_util::Problems as _;
use loupe_util::Progress;
use serde::{Deserialize, Serialize};

use crate::config::ProbeConfig;
use crate::dataset::{build_dataset, document_means, load_examples, ClassBalance};
use crate::features::{resolve_features, token_labels, Feature, Level};
use crate::probe::{Probe, ProbeInfo};
use crate::summary::{write_summary, SummaryRow};
use crate::sweep::{sweep, ProbeFit};
use crate::{Error, Result};

/// Told about each finished sweep (the binary writes TensorBoard scalars from it).
pub trait ProbeObserver: Progress {
    /// Called once a (feature, hook) sweep is done, with its class balance and every fitted probe.
    fn swept(&mut self, _hook: HookPoint, _feature: &str, _balance: &ClassBalance, _fits: &[ProbeFit]) {}
}

/// An observer that ignores everything, for runs without progress output.
pub struct NoObserver;
impl Progress for NoObserver {}
impl ProbeObserver for NoObserver {}

/// What [`train`] did.
pub struct TrainOutcome {
    /// One summary row per probe, of the sweeps run now and those resumed from earlier runs.
    pub rows: Vec<SummaryRow>,
    /// Stopped early on request; what was done is saved and a rerun resumes.
    pub stopped: bool,
}

/// One (store, hook) to probe, checked before any work starts.
struct Job {
    store: Store,
    hook: HookPoint,
    features: Vec<Feature>,
    ks: Vec<usize>,
}

/// What a finished sweep was run with: a resumed run reuses it only if this is unchanged.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct SweepKey {
    store: PathBuf,
    store_tokens: u64,
    hook: HookPoint,
    feature: String,
    /// The feature's definition (label value, compound words, ...), so that a changed
    /// definition under the same name is redone.
    definition: String,
    level: Level,
    max_tokens: Option<usize>,
    held_out: f64,
    seed: u64,
    standardize: bool,
    c: f64,
    rankings: Vec<crate::rank::Ranking>,
    ks: Vec<usize>,
    l1_rows: usize,
    l1_path_neurons: usize,
    exact: crate::sweep::ExactOptions,
}

#[derive(Serialize, Deserialize)]
struct SweepRecord {
    key: SweepKey,
    rows: Vec<SummaryRow>,
}

/// Runs `loupe probe train`: for every store, hook and feature of `config`, builds the dataset,
/// runs the k sweep and saves every probe under `config.output`, then writes the summary. Sweeps a
/// stopped run finished are reused; `observer` hears of progress, each sweep, and may ask to stop.
pub fn train(
    config: &ProbeConfig,
    tokenizer: &Tokenizer,
    observer: &mut dyn ProbeObserver,
) -> Result<TrainOutcome> {
    let jobs = plan(config)?;
    std::fs::create_dir_all(&config.output)
        .map_err(|e| Error::file(&config.output, format!("cannot create the output directory: {e}")))?;
    // One writer per run directory: a second `probe train` into it stops here.
    let _lock = loupe_util::DirLock::acquire(&config.output, "loupe probe train")?;
    let mut rows = Vec::new();
    for job in &jobs {
        let width = job.store.manifest.hook(job.hook).map_or(0, |h| h.width);
        let key = |f: &Feature| SweepKey {
            store: job.store.dir.clone(),
            store_tokens: job.store.manifest.tokens,
            hook: job.hook,
            feature: f.name.clone(),
            definition: format!("{:?}", f.kind),
            level: f.level,
            max_tokens: config.max_tokens,
            held_out: config.held_out,
            seed: config.seed,
            standardize: config.standardize,
            c: config.c,
            rankings: config.rankings.clone(),
            ks: job.ks.clone(),
            l1_rows: config.l1_rows,
            l1_path_neurons: config.l1_path_neurons,
            exact: config.exact.clone(),
        };
        // Sweeps done by an earlier run with the same settings are kept.
        let mut todo = Vec::new();
        for feature in &job.features {
            match read_record(&sweep_dir(&config.output, &feature.name, job.hook), &key(feature)) {
                Some(done) => {
                    observer.note(&format!(
                        "{} at {}: done by an earlier run, kept",
                        feature.name, job.hook
                    ));
                    rows.extend(done);
                }
                None => todo.push(feature),
            }
        }
        if todo.is_empty() {
            continue;
        }
        let examples = load_examples(&job.store, job.hook, config.max_tokens, &mut *observer)?;
        let documents = todo
            .iter()
            .any(|f| f.level == Level::Document)
            .then(|| document_means(&examples));
        for feature in todo {
            let labels = token_labels(feature, &examples.tokens, tokenizer);
            let data = build_dataset(
                feature,
                &labels,
                &examples.tokens,
                documents.as_ref(),
                config.held_out,
                config.seed,
                &job.store.dir,
            )?;
            let x = match feature.level {
                Level::Token => &examples.x,
                Level::Document => &documents.as_ref().expect("computed above").x,
            };
            observer.note(&format!(
                "{} at {}: {} training and {} held-out {}",
                feature.name,
                job.hook,
                data.train.len(),
                data.held_out.len(),
                if feature.level == Level::Token {
                    "tokens"
                } else {
                    "documents"
                }
            ));
            let fits = sweep(x, &data, &config.sweep_options(job.ks.clone()))?;
            let balance = data.balance();
            let dir = sweep_dir(&config.output, &feature.name, job.hook);
            std::fs::create_dir_all(&dir).map_err(|e| Error::file(&dir, format!("cannot create: {e}")))?;
            let mut done = Vec::new();
            for fit in &fits {
                let probe = to_probe(fit, feature, job, width, config, balance);
                probe.save(&dir.join(format!("{}-k{}", fit.method, fit.k)))?;
                done.push(SummaryRow::new(&probe));
            }
            let record = SweepRecord {
                key: key(feature),
                rows: done.clone(),
            };
            let json = serde_json::to_string_pretty(&record).expect("a sweep record serializes");
            loupe_util::write_atomically(&dir.join(SWEEP_RECORD), json.as_bytes())?;
            rows.extend(done);
            observer.swept(job.hook, &feature.name, &balance, &fits);
            if observer.should_stop() {
                write_summary(&config.output, &rows)?;
                return Ok(TrainOutcome { rows, stopped: true });
            }
        }
    }
    write_summary(&config.output, &rows)?;
    Ok(TrainOutcome { rows, stopped: false })
}

/// Opens every store, resolves the features and the k values: every configuration error is
/// reported before the first activation is read.
fn plan(config: &ProbeConfig) -> Result<Vec<Job>> {
    let mut jobs = Vec::new();
    let mut seen_hooks = Vec::new();
    for dir in &config.stores {
        let store = Store::open(dir)?;
        let features = resolve_features(&config.features, &store)?;
        let held: Vec<HookPoint> = store.manifest.hooks.iter().map(|h| h.name).collect();
        let hooks: Vec<HookPoint> = match &config.hooks {
            Some(wanted) => wanted.iter().copied().filter(|h| held.contains(h)).collect(),
            None => held.clone(),
        };
        for hook in hooks {
            let width = store.manifest.hook(hook).map_or(0, |h| h.width);
            let ks = config.ks_for(hook, width)?;
            seen_hooks.push(hook);
            jobs.push(Job {
                store: store.clone(),
                hook,
                features: features.clone(),
                ks,
            });
        }
    }
    if let Some(wanted) = &config.hooks {
        if let Some(missing) = wanted.iter().find(|h| !seen_hooks.contains(h)) {
            return Err(Error::config(
                "hooks",
                format!(
                    "no store holds {missing} (the stores: {}); capture it, or leave it out",
                    config
                        .stores
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
    }
    Ok(jobs)
}

fn to_probe(
    fit: &ProbeFit,
    feature: &Feature,
    job: &Job,
    width: usize,
    config: &ProbeConfig,
    balance: ClassBalance,
) -> Probe {
    let m = &job.store.manifest;
    Probe {
        info: ProbeInfo {
            feature: feature.name.clone(),
            level: feature.level,
            hook: job.hook,
            width,
            model_name: m.model.name.clone(),
            model_sha256: m.model.sha256.clone(),
            store: job.store.dir.clone(),
            method: fit.method.clone(),
            k: fit.k,
            c: config.c,
            held_out: fit.held_out,
            train: fit.train,
            balance,
        },
        neurons: fit.neurons.iter().map(|&n| n as u32).collect(),
        weights: fit.weights.iter().map(|&w| w as f32).collect(),
        bias: fit.bias as f32,
        mean: fit
            .standardization
            .as_ref()
            .map(|s| s.mean.iter().map(|&v| v as f32).collect()),
        std: fit
            .standardization
            .as_ref()
            .map(|s| s.std.iter().map(|&v| v as f32).collect()),
    }
}

const SWEEP_RECORD: &str = "sweep.json";

/// `<output>/<feature>/<hook>`, the feature name made safe for a file name.
pub fn sweep_dir(output: &Path, feature: &str, hook: HookPoint) -> PathBuf {
    let safe: String = feature
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    output.join(safe).join(hook.to_string())
}

fn read_record(dir: &Path, key: &SweepKey) -> Option<Vec<SummaryRow>> {
    let text = std::fs::read_to_string(dir.join(SWEEP_RECORD)).ok()?;
    let record: SweepRecord = serde_json::from_str(&text).ok()?;
    (record.key == *key).then_some(record.rows)
}
