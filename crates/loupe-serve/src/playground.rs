//! The playground: one source prompt, a few layers and amplifiers, patched into a target prompt
//! by the same batched runner as `loupe scope`, its results streamed to the browser as server-sent
//! events while they are generated. One job runs at a time per server; a job can be cancelled.
//!
//! A job is a scope run in a temporary folder: the request becomes a [`ScopeConfig`] (and, for a
//! feature amplifier, a one-entry feature book), checked by [`ScopePlan::new`] before the job
//! starts, so a bad request is answered at once with the config's own error.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use loupe_scope::config::Site;
use loupe_scope::target::BUILT_IN;
use loupe_scope::{ScopeConfig, ScopePlan, ScopeRecord};
use loupe_util::Progress;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio_stream::wrappers::ReceiverStream;

use crate::error::{blocking, ApiError, ApiResult, JsonBody};
use crate::runs::{find, RunKind};
use crate::sae::check_prompt;
use crate::scope::records_json;
use crate::AppState;

/// The entities of the main job's comparison, offered as source prompts.
const ENTITIES: &str = include_str!("../../../configs/entities.txt");
/// The model a playground job runs when the request names none and no SAE feature implies one.
const DEFAULT_MODEL: &str = "smollm2";
/// A job's limits: source layers, amplifiers, values per amplifier, rows and generated tokens.
const MAX_LAYERS: usize = 12;
const MAX_AMPLIFIERS: usize = 8;
const MAX_VALUES: usize = 8;
const MAX_ROWS: usize = 96;
const MAX_NEW_TOKENS: usize = 64;
/// Rows generated together: a batch's results reach the browser together.
const STREAM_BATCH_ROWS: usize = 8;
/// Finished jobs kept for their results.
const KEPT_JOBS: usize = 16;

/// `POST /api/playground`'s body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlaygroundRequest {
    /// A registered model name, GGUF file or model folder; default the feature's SAE's model, else
    /// SmolLM2.
    #[serde(default)]
    model: Option<String>,
    /// The source prompt; its last token's activation is taken.
    prompt: String,
    /// Source layers, each patched into the same layer of the target.
    layers: Vec<usize>,
    /// `resid_post` (default), `mlp_out` or `mlp_post`.
    #[serde(default)]
    site: Option<Site>,
    /// `identity`, `entity_description` (default) or any text.
    #[serde(default)]
    target: Option<String>,
    /// `cfg`'s null prompt; default "" (the BOS token alone).
    #[serde(default)]
    null_prompt: Option<String>,
    /// What to compare.
    amplifiers: Vec<AmplifierRequest>,
    /// Tokens generated per row (default 16).
    #[serde(default)]
    max_new_tokens: Option<usize>,
}

/// One amplifier of a playground request.
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum AmplifierRequest {
    /// Plain patching.
    None {},
    /// h·α for each α.
    Scale { values: Vec<f32> },
    /// Classifier-free guidance against the null prompt, for each s.
    Cfg { values: Vec<f32> },
    /// An SAE latent of a served SAE run, scaled by each α.
    Sae {
        run: String,
        latent: usize,
        values: Vec<f32>,
    },
    /// An entry of one of the server's feature books (`loupe serve --features`), by name: an SAE
    /// latent scaled by each α, any other direction's component scaled by each α.
    Feature { name: String, values: Vec<f32> },
    /// A probe of a served probe run, its direction's component scaled by each α.
    Probe {
        run: String,
        feature: String,
        hook: String,
        method: String,
        k: usize,
        values: Vec<f32>,
    },
}

/// Where a job stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Generating.
    Running,
    /// Every row generated.
    Done,
    /// Stopped on request; the rows generated so far are kept.
    Cancelled,
    /// Stopped by an error (in `error`).
    Failed,
}

/// A playground job and what it has produced so far.
pub struct Job {
    id: u64,
    cancel: AtomicBool,
    state: Mutex<JobState>,
    /// Bumped on every change, to wake the event streams.
    changed: tokio::sync::watch::Sender<u64>,
    /// The job's scope run folder, removed with the job.
    _dir: tempfile::TempDir,
}

struct JobState {
    status: Status,
    done: u64,
    total: u64,
    records: Vec<Value>,
    error: Option<String>,
}

impl Job {
    fn update(&self, change: impl FnOnce(&mut JobState)) {
        change(&mut self.state.lock().expect("the job lock"));
        self.changed.send_modify(|version| *version += 1);
    }

    fn snapshot(&self, records_from: usize) -> Value {
        let state = self.state.lock().expect("the job lock");
        json!({
            "job": self.id,
            "status": state.status,
            "done": state.done,
            "total": state.total,
            "records": state.records.get(records_from..).unwrap_or(&[]),
            "error": state.error,
        })
    }
}

/// The server's jobs: the one running, and the last few finished.
#[derive(Default)]
pub struct Jobs {
    next_id: u64,
    all: VecDeque<Arc<Job>>,
}

impl Jobs {
    fn running(&self) -> Option<&Arc<Job>> {
        self.all
            .iter()
            .find(|j| j.state.lock().expect("the job lock").status == Status::Running)
    }

    fn get(&self, id: u64) -> ApiResult<Arc<Job>> {
        self.all.iter().find(|j| j.id == id).cloned().ok_or_else(|| {
            ApiError::not_found(format!(
                "no job {id} (jobs are kept until {KEPT_JOBS} newer ones finish, and not across restarts)"
            ))
        })
    }
}

/// `GET /api/playground/options`: what the playground form offers.
pub async fn options(State(app): State<AppState>) -> Json<Value> {
    let entities: Vec<&str> = ENTITIES
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    Json(json!({
        "default_model": DEFAULT_MODEL,
        "targets": BUILT_IN.iter().map(|(name, text)| json!({"name": name, "text": text})).collect::<Vec<_>>(),
        "sites": ["resid_post", "mlp_out", "mlp_post"],
        "entities": entities,
        "features": app.feature_books.summaries(),
        "limits": {
            "layers": MAX_LAYERS, "amplifiers": MAX_AMPLIFIERS, "values": MAX_VALUES,
            "rows": MAX_ROWS, "max_new_tokens": MAX_NEW_TOKENS, "prompt_chars": crate::MAX_PROMPT_CHARS,
        },
    }))
}

/// `POST /api/playground`: checks the request, starts the job and answers 202 with its id; 409
/// while another job runs.
pub async fn start(
    State(app): State<AppState>,
    JsonBody(request): JsonBody<PlaygroundRequest>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    check_limits(&request)?;
    if let Some(job) = app.jobs.lock().expect("the jobs lock").running() {
        return Err(busy(job));
    }
    let dir = tempfile::tempdir()?;
    let (config, model_name) = scope_config(&app, &request, dir.path())?;
    let checked = {
        let app = app.clone();
        let config = config.clone();
        blocking(move || {
            let model = app.loaded.model(&model_name)?;
            let total = ScopePlan::new(&config, &model)
                .and_then(|plan| plan.total_rows())
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
            if total == 0 {
                return Err(ApiError::bad_request(
                    "no row applies: a feature amplifier only runs at its own hook; choose its layer and site",
                ));
            }
            if total > MAX_ROWS {
                return Err(ApiError::too_large(format!(
                    "{total} rows; the playground runs at most {MAX_ROWS}: fewer layers or values"
                )));
            }
            Ok((model, total))
        })
        .await?
    };
    let (model, total) = checked;

    let job = {
        let mut jobs = app.jobs.lock().expect("the jobs lock");
        // Checked again: another request may have started a job while this one was checked.
        if let Some(running) = jobs.running() {
            return Err(busy(running));
        }
        jobs.next_id += 1;
        let job = Arc::new(Job {
            id: jobs.next_id,
            cancel: AtomicBool::new(false),
            state: Mutex::new(JobState {
                status: Status::Running,
                done: 0,
                total: total as u64,
                records: Vec::new(),
                error: None,
            }),
            changed: tokio::sync::watch::channel(0).0,
            _dir: dir,
        });
        jobs.all.push_back(job.clone());
        while jobs.all.len() > KEPT_JOBS {
            jobs.all.pop_front();
        }
        job
    };

    let runner = job.clone();
    let threshold = config.judge.threshold;
    tokio::task::spawn_blocking(move || {
        let run = || {
            let embedder = app.loaded.embedder()?;
            let plan = ScopePlan::new(&config, &model)?;
            let mut progress = JobProgress(runner.clone());
            let mut observe = |records: &[ScopeRecord]| {
                let (new, _) = records_json(records, threshold);
                runner.update(|s| s.records.extend(new));
            };
            Ok::<_, ApiError>(plan.run_observed(&embedder, &mut progress, &mut observe)?)
        };
        // A job that panicked must still end, or the server would stay busy for good.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).unwrap_or_else(|_| {
            Err(ApiError::internal(
                "the job failed unexpectedly (a bug: please report it)",
            ))
        });
        runner.update(|s| match outcome {
            Ok(summary) if summary.stopped => s.status = Status::Cancelled,
            Ok(_) => s.status = Status::Done,
            Err(e) => {
                s.status = Status::Failed;
                s.error = Some(e.message);
            }
        });
    });
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "job": job.id, "total": total })),
    ))
}

fn busy(job: &Job) -> ApiError {
    let state = job.state.lock().expect("the job lock");
    ApiError::new(
        StatusCode::CONFLICT,
        format!(
            "the server is busy with playground job {} ({} of {} rows done); wait for it or cancel it (POST /api/jobs/{}/cancel)",
            job.id, state.done, state.total, job.id
        ),
    )
}

fn check_limits(request: &PlaygroundRequest) -> ApiResult<()> {
    check_prompt("prompt", &request.prompt)?;
    for (field, text) in [("target", &request.target), ("null_prompt", &request.null_prompt)] {
        if let Some(text) = text {
            if text.chars().count() > crate::MAX_PROMPT_CHARS {
                return Err(ApiError::too_large(format!(
                    "{field}: longer than the server's limit of {} characters",
                    crate::MAX_PROMPT_CHARS
                )));
            }
        }
    }
    if request.layers.is_empty() || request.layers.len() > MAX_LAYERS {
        return Err(ApiError::bad_request(format!(
            "layers: give 1 to {MAX_LAYERS} layers"
        )));
    }
    if request.amplifiers.is_empty() || request.amplifiers.len() > MAX_AMPLIFIERS {
        return Err(ApiError::bad_request(format!(
            "amplifiers: give 1 to {MAX_AMPLIFIERS} amplifiers"
        )));
    }
    for amplifier in &request.amplifiers {
        let values = match amplifier {
            AmplifierRequest::None {} => continue,
            AmplifierRequest::Scale { values }
            | AmplifierRequest::Cfg { values }
            | AmplifierRequest::Sae { values, .. }
            | AmplifierRequest::Feature { values, .. }
            | AmplifierRequest::Probe { values, .. } => values,
        };
        if values.is_empty() || values.len() > MAX_VALUES || values.iter().any(|v| !v.is_finite()) {
            return Err(ApiError::bad_request(format!(
                "amplifier values: give 1 to {MAX_VALUES} finite numbers"
            )));
        }
    }
    let tokens = request.max_new_tokens.unwrap_or(16);
    if tokens == 0 || tokens > MAX_NEW_TOKENS {
        return Err(ApiError::bad_request(format!(
            "max_new_tokens: give 1 to {MAX_NEW_TOKENS}"
        )));
    }
    Ok(())
}

/// The request as a scope run config (and its feature book, written into `dir`), with the name of
/// the model it runs.
fn scope_config(
    app: &AppState,
    request: &PlaygroundRequest,
    dir: &std::path::Path,
) -> ApiResult<(ScopeConfig, String)> {
    let mut amplifiers = Vec::new();
    let mut book = Vec::new();
    let mut feature_model = None;
    for (i, amplifier) in request.amplifiers.iter().enumerate() {
        amplifiers.push(match amplifier {
            AmplifierRequest::None {} => json!({ "kind": "none" }),
            AmplifierRequest::Scale { values } => json!({ "kind": "scale", "values": values }),
            AmplifierRequest::Cfg { values } => json!({ "kind": "cfg", "values": values }),
            AmplifierRequest::Sae { run, latent, values } => {
                let sae = find(&app.roots, run, RunKind::Sae)?;
                let name = format!("latent {latent}");
                book.push(json!({ "name": name, "kind": "sae", "sae": sae.dir, "latent": latent }));
                feature_model = Some(sae_model_name(&sae.dir)?);
                json!({ "kind": "sae", "feature": name, "values": values })
            }
            AmplifierRequest::Feature { name, values } => {
                let entry = app.feature_books.entry(name)?;
                let kind = if entry.get("kind").and_then(Value::as_str) == Some("sae") { "sae" } else { "probe" };
                if !book.iter().any(|e| e["name"] == json!(name)) {
                    book.push(entry);
                }
                json!({ "kind": kind, "feature": name, "values": values })
            }
            AmplifierRequest::Probe { run, feature, hook, method, k, values } => {
                let probes = find(&app.roots, run, RunKind::Probe)?;
                let file = crate::probe::find_probe(&probes.dir, run, feature, hook, method, *k)?;
                let name = format!("{feature} ({method} k{k}) #{i}");
                book.push(json!({ "name": name, "kind": "probe", "probe": file.path.with_extension("safetensors") }));
                json!({ "kind": "probe", "feature": name, "values": values })
            }
        });
    }
    let model = request
        .model
        .clone()
        .filter(|m| !m.trim().is_empty())
        .or(feature_model)
        .unwrap_or_else(|| DEFAULT_MODEL.to_string());
    let mut config = json!({
        "model": model,
        "out": dir,
        "source": {
            "prompts": [request.prompt],
            "layers": request.layers,
            "site": request.site.unwrap_or(Site::ResidPost),
        },
        "target": { "prompt": request.target.clone().unwrap_or_else(|| "entity_description".into()) },
        "null": { "null": request.null_prompt.clone().unwrap_or_default() },
        "amplifier": amplifiers,
        // Small batches, so that results stream in as they are generated.
        "generate": { "max_new_tokens": request.max_new_tokens.unwrap_or(16), "batch_rows": STREAM_BATCH_ROWS },
    });
    if !book.is_empty() {
        let path = dir.join("features.toml");
        let text = toml::to_string(&json!({ "feature": book }))
            .map_err(|e| ApiError::internal(format!("writing the job's feature book: {e}")))?;
        std::fs::write(&path, text)?;
        config["features"] = json!(path);
    }
    let config: ScopeConfig = serde_json::from_value(config)
        .map_err(|e| ApiError::bad_request(format!("the request as a scope config: {e}")))?;
    Ok((config, model))
}

fn sae_model_name(dir: &std::path::Path) -> ApiResult<String> {
    let cfg: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("cfg.json"))?)
        .map_err(|e| ApiError::internal(format!("{}: {e}", dir.join("cfg.json").display())))?;
    Ok(cfg["metadata"]["model_name"]
        .as_str()
        .unwrap_or(DEFAULT_MODEL)
        .to_string())
}

/// Reports the runner's progress to the job, and stops it when the job is cancelled.
struct JobProgress(Arc<Job>);

impl Progress for JobProgress {
    fn start(&mut self, _what: &str, total: u64, done: u64) {
        self.0.update(|s| {
            s.total = total;
            s.done = done;
        });
    }

    fn advance(&mut self, n: u64) {
        self.0.update(|s| s.done += n);
    }

    fn should_stop(&self) -> bool {
        self.0.cancel.load(Ordering::Relaxed)
    }
}

/// `GET /api/jobs/{id}`: the job's status and every record so far.
pub async fn status(State(app): State<AppState>, Path(id): Path<u64>) -> ApiResult<Json<Value>> {
    let job = app.jobs.lock().expect("the jobs lock").get(id)?;
    Ok(Json(job.snapshot(0)))
}

/// `POST /api/jobs/{id}/cancel`: asks the job to stop after the batch it is generating.
pub async fn cancel(State(app): State<AppState>, Path(id): Path<u64>) -> ApiResult<Json<Value>> {
    let job = app.jobs.lock().expect("the jobs lock").get(id)?;
    job.cancel.store(true, Ordering::Relaxed);
    let status = job.state.lock().expect("the job lock").status;
    Ok(Json(
        json!({ "job": id, "status": status, "cancel_requested": true }),
    ))
}

/// `GET /api/jobs/{id}/events`: server-sent events: a `record` event per generated row as it is
/// produced (earlier rows first, for a late subscriber), `progress` after each batch, and one `end`
/// event with the final status, after which the stream closes.
pub async fn events(
    State(app): State<AppState>,
    Path(id): Path<u64>,
) -> ApiResult<Sse<impl tokio_stream::Stream<Item = Result<Event, Infallible>>>> {
    let job = app.jobs.lock().expect("the jobs lock").get(id)?;
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let mut changed = job.changed.subscribe();
    tokio::spawn(async move {
        let mut sent = 0;
        loop {
            // Marked seen before the snapshot, so that a change after it wakes the wait below.
            changed.borrow_and_update();
            let snapshot = job.snapshot(sent);
            let records = snapshot["records"].as_array().cloned().unwrap_or_default();
            for record in &records {
                if tx.send(Ok(event("record", record))).await.is_err() {
                    return; // the browser went away
                }
            }
            sent += records.len();
            let progress =
                json!({ "status": snapshot["status"], "done": snapshot["done"], "total": snapshot["total"] });
            if tx.send(Ok(event("progress", &progress))).await.is_err() {
                return;
            }
            if snapshot["status"] != json!(Status::Running) {
                let end = json!({ "status": snapshot["status"], "error": snapshot["error"] });
                let _ = tx.send(Ok(event("end", &end))).await;
                return;
            }
            if changed.changed().await.is_err() {
                return;
            }
        }
    });
    Ok(Sse::new(ReceiverStream::new(rx)).keep_alive(KeepAlive::default()))
}

fn event(name: &str, data: &Value) -> Event {
    Event::default().event(name).data(data.to_string())
}
