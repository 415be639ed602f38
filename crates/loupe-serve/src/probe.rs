//! Probe pages: per feature and hook, held-out F1 against k for each neuron ranking; one probe's
//! neurons with their weights and the contexts where each fires hardest.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use axum::extract::State;
use axum::Json;
use loupe_data::reader::Store;
use loupe_probe::Probe;
use loupe_util::NoProgress;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{blocking, ApiError, ApiQuery, ApiResult};
use crate::runs::{find, RunKind, RunQuery};
use crate::AppState;

/// Neurons of a probe whose top contexts are shown (the largest weights).
const NEURONS_SHOWN: usize = 8;
/// Contexts shown per neuron.
const CONTEXTS_PER_NEURON: usize = 5;
/// Tokens of the probe's store searched for them.
const CONTEXT_TOKENS: usize = 20_000;

/// One saved probe of a run, read from its JSON file (which holds everything but the tensor file).
pub struct ProbeFile {
    /// The probe.
    pub probe: Probe,
    /// The `.json` file.
    pub path: PathBuf,
}

impl ProbeFile {
    /// Whether this is the probe of `feature` at `hook` by `method` with `k` neurons.
    pub fn is(&self, feature: &str, hook: &str, method: &str, k: usize) -> bool {
        let i = &self.probe.info;
        i.feature == feature && i.hook.to_string() == hook && i.method == method && i.k == k
    }
}

/// Every probe of a probe run (`FEATURE/HOOK/METHOD-kK.json`), in path order; a file that does
/// not read as a probe is skipped.
pub fn probe_files(run: &Path) -> Vec<ProbeFile> {
    let mut files = Vec::new();
    let dirs = |dir: &Path| -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.is_dir())
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    };
    for feature_dir in dirs(run) {
        for hook_dir in dirs(&feature_dir) {
            let Ok(entries) = std::fs::read_dir(&hook_dir) else {
                continue;
            };
            let mut paths: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "json"))
                .collect();
            paths.sort();
            for path in paths {
                let Some(probe) = std::fs::read_to_string(&path)
                    .ok()
                    .and_then(|t| serde_json::from_str::<Probe>(&t).ok())
                else {
                    continue;
                };
                files.push(ProbeFile { probe, path });
            }
        }
    }
    files
}

/// The probe of `feature` at `hook` by `method` with `k` neurons in the probe run `dir`, found among
/// the run's files (never by joining the request's words into a path); 404 naming the run `id`.
pub fn find_probe(
    dir: &Path,
    id: &str,
    feature: &str,
    hook: &str,
    method: &str,
    k: usize,
) -> ApiResult<ProbeFile> {
    probe_files(dir)
        .into_iter()
        .find(|f| f.is(feature, hook, method, k))
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "run '{id}' has no probe for feature '{feature}' at {hook} by {method} with k = {k}"
            ))
        })
}

/// `GET /api/probe?run=ID`: per feature and hook, each method's held-out F1 and MCC against k.
pub async fn overview(
    State(app): State<AppState>,
    ApiQuery(query): ApiQuery<RunQuery>,
) -> ApiResult<Json<Value>> {
    let run = find(&app.roots, &query.run, RunKind::Probe)?;
    let groups = blocking(move || {
        // (feature, hook) -> method -> points
        let mut groups: BTreeMap<(String, String), BTreeMap<String, Vec<Value>>> = BTreeMap::new();
        for ProbeFile { probe, .. } in probe_files(&run.dir) {
            let info = &probe.info;
            groups
                .entry((info.feature.clone(), info.hook.to_string()))
                .or_default()
                .entry(info.method.clone())
                .or_default()
                .push(json!({
                    "k": info.k,
                    "f1": info.held_out.f1,
                    "mcc": info.held_out.mcc,
                    "neurons": probe.neurons,
                }));
        }
        Ok(groups)
    })
    .await?;
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|((feature, hook), methods)| {
            let methods: BTreeMap<String, Vec<Value>> = methods
                .into_iter()
                .map(|(method, mut points)| {
                    points.sort_by_key(|p| p["k"].as_u64());
                    (method, points)
                })
                .collect();
            json!({ "feature": feature, "hook": hook, "methods": methods })
        })
        .collect();
    Ok(Json(json!({ "run": query.run, "groups": groups })))
}

/// `?run=ID&feature=F&hook=H&method=M&k=K`
#[derive(Deserialize)]
pub struct ProbeQuery {
    run: String,
    feature: String,
    hook: String,
    method: String,
    k: usize,
}

/// `GET /api/probe/detail`: one probe's metrics, neurons and weights, and the contexts in its store
/// where each of its strongest neurons fires hardest (lowest, for a negative weight).
pub async fn detail(
    State(app): State<AppState>,
    ApiQuery(query): ApiQuery<ProbeQuery>,
) -> ApiResult<Json<Value>> {
    let run = find(&app.roots, &query.run, RunKind::Probe)?;
    blocking(move || {
        let probe = find_probe(
            &run.dir,
            &query.run,
            &query.feature,
            &query.hook,
            &query.method,
            query.k,
        )?
        .probe;
        let mut order: Vec<usize> = (0..probe.neurons.len()).collect();
        order.sort_by(|&a, &b| probe.weights[b].abs().total_cmp(&probe.weights[a].abs()));
        let mut notes = Vec::new();
        let store = if probe.info.store.join("manifest.json").is_file() {
            Some(Store::open(&probe.info.store)?)
        } else {
            notes.push(format!(
                "the probe's store {} is not on this machine: no contexts",
                probe.info.store.display()
            ));
            None
        };
        let tokenizer = match &store {
            Some(_) => Some(app.loaded.model(&probe.info.model_name)?),
            None => None,
        };
        let mut neurons = Vec::new();
        for &i in order.iter().take(NEURONS_SHOWN) {
            let neuron = probe.neurons[i] as usize;
            let weight = probe.weights[i];
            let contexts = match (&store, &tokenizer) {
                (Some(store), Some(model)) => loupe_probe::top::top_contexts(
                    store,
                    probe.info.hook,
                    neuron,
                    weight < 0.0,
                    CONTEXTS_PER_NEURON,
                    (12, 4),
                    Some(CONTEXT_TOKENS),
                    &model.tokenizer,
                    &mut NoProgress,
                )?,
                _ => Vec::new(),
            };
            neurons.push(json!({ "neuron": neuron, "weight": weight, "contexts": contexts }));
        }
        Ok(Json(json!({
            "feature": probe.info.feature,
            "hook": probe.info.hook.to_string(),
            "method": probe.info.method,
            "k": probe.info.k,
            "held_out": probe.info.held_out,
            "train": probe.info.train,
            "balance": probe.info.balance,
            "neurons": neurons,
            "notes": notes,
        })))
    })
    .await
}
