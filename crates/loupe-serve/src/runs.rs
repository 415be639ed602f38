//! The runs under the served roots, found by the files each kind writes: an activation store
//! (`manifest.json`), an SAE (`cfg.json` and `sae_weights.safetensors`), a probe run
//! (`summary.csv`), a scope run (`results.jsonl`) and a steering run (`results.jsonl`, with the
//! concepts in its `run.json`). A run is named by its root's folder name and
//! its path below the root (`checkpoints/main-sae-l8`), and requests name runs only that way:
//! a path the index does not list is never opened.

use std::path::{Component, Path, PathBuf};

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::{ApiError, ApiQuery, ApiResult};
use crate::AppState;

/// What a run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    /// An activation store (`loupe capture`, `loupe store import`).
    Store,
    /// A trained or imported SAE in SAELens's layout.
    Sae,
    /// `loupe probe train`'s output.
    Probe,
    /// `loupe scope`'s output.
    Scope,
    /// `loupe steer`'s output (listed, with its static report; no page of its own).
    Steer,
}

/// One run found under a root.
#[derive(Clone, Debug, Serialize)]
pub struct Run {
    /// How requests name it: the root's folder name, then the path below the root.
    pub id: String,
    /// What it is.
    pub kind: RunKind,
    /// Where it is on disk.
    #[serde(skip)]
    pub dir: PathBuf,
}

/// Folders below a root searched for runs (a run inside a run is not looked for).
const MAX_DEPTH: usize = 4;

/// Every run under `roots`, in path order.
pub fn discover(roots: &[PathBuf]) -> Vec<Run> {
    let mut runs = Vec::new();
    for (i, root) in roots.iter().enumerate() {
        let mut label = root_label(root);
        // Two roots with the same folder name stay apart.
        if roots[..i].iter().any(|r| root_label(r) == label) {
            label = format!("{label}-{i}");
        }
        walk(root, root, &label, 0, &mut runs);
    }
    runs
}

fn root_label(root: &Path) -> String {
    root.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "root".into())
}

fn walk(root: &Path, dir: &Path, label: &str, depth: usize, runs: &mut Vec<Run>) {
    if let Some(kind) = kind_of(dir) {
        let relative = dir.strip_prefix(root).unwrap_or(dir);
        let id = if relative.as_os_str().is_empty() {
            label.to_string()
        } else {
            format!("{label}/{}", relative.to_string_lossy())
        };
        runs.push(Run {
            id,
            kind,
            dir: dir.to_path_buf(),
        });
        return;
    }
    if depth >= MAX_DEPTH {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut children: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .filter(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            !name.starts_with('.') && name != "tensorboard" && name != "top"
        })
        .collect();
    children.sort();
    for child in children {
        walk(root, &child, label, depth + 1, runs);
    }
}

fn kind_of(dir: &Path) -> Option<RunKind> {
    if dir.join("manifest.json").is_file() {
        Some(RunKind::Store)
    } else if dir.join("cfg.json").is_file() && dir.join("sae_weights.safetensors").is_file() {
        Some(RunKind::Sae)
    } else if dir.join("summary.csv").is_file() {
        Some(RunKind::Probe)
    } else if dir.join("results.jsonl").is_file() {
        // Both write results.jsonl; a steering run's identity names its concepts.
        let identity = std::fs::read_to_string(dir.join("run.json")).unwrap_or_default();
        let steering = serde_json::from_str::<Value>(&identity).is_ok_and(|v| v.get("concepts").is_some());
        Some(if steering { RunKind::Steer } else { RunKind::Scope })
    } else {
        None
    }
}

/// The run named `id`, of kind `kind`: 404 when no such run is served.
pub fn find(roots: &[PathBuf], id: &str, kind: RunKind) -> ApiResult<Run> {
    discover(roots)
        .into_iter()
        .find(|r| r.id == id && r.kind == kind)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no {} run named '{id}' under the served roots; GET /api/runs lists them",
                serde_json::to_value(kind)
                    .expect("a kind serializes")
                    .as_str()
                    .unwrap_or("")
            ))
        })
}

/// `?run=ID`
#[derive(Deserialize)]
pub struct RunQuery {
    /// The run's id.
    pub run: String,
}

/// `GET /api/runs`: every run with what the home page shows of it.
pub async fn list(State(app): State<AppState>) -> ApiResult<Json<Value>> {
    let roots = app.roots.clone();
    let runs = crate::error::blocking(move || {
        Ok(discover(&roots)
            .iter()
            .map(|run| {
                let mut entry = summary(run);
                entry["id"] = json!(run.id);
                entry["kind"] = json!(run.kind);
                entry["path"] = json!(run.dir.display().to_string());
                if has_event_files(&run.dir) {
                    entry["tensorboard"] = json!(format!("tensorboard --logdir {}", run.dir.display()));
                }
                entry
            })
            .collect::<Vec<_>>())
    })
    .await?;
    let roots: Vec<String> = app.roots.iter().map(|r| r.display().to_string()).collect();
    Ok(Json(json!({ "roots": roots, "runs": runs })))
}

/// What the run list shows of one run, read from its small JSON files (never its tensors). A
/// file that cannot be read leaves its fields out and says so in `problem`.
fn summary(run: &Run) -> Value {
    let read = |name: &str| -> Option<Value> {
        let text = std::fs::read_to_string(run.dir.join(name)).ok()?;
        serde_json::from_str(&text).ok()
    };
    match run.kind {
        RunKind::Store => match loupe_data::store::Manifest::read(&run.dir) {
            Ok(m) => json!({
                "model": m.model.name,
                "hooks": m.hooks.iter().map(|h| json!({"hook": h.name, "width": h.width})).collect::<Vec<_>>(),
                "tokens": m.tokens,
                "contexts": m.contexts,
                "dtype": m.dtype,
                "complete": m.complete,
                "labels": m.labels,
            }),
            Err(e) => json!({ "problem": e.to_string() }),
        },
        RunKind::Sae => {
            let Some(cfg) = read("cfg.json") else {
                return json!({ "problem": format!("{} cannot be read as JSON", run.dir.join("cfg.json").display()) });
            };
            let meta = &cfg["metadata"];
            let mut out = json!({
                "architecture": meta["loupe_architecture"].as_str().or(cfg["architecture"].as_str()),
                "d_in": cfg["d_in"],
                "d_sae": cfg["d_sae"],
                "hook": meta["hook_name"],
                "model": meta["model_name"],
                "store": meta["dataset_path"],
                "has_top": run.dir.join("top/top.json").is_file(),
            });
            if let Some(eval) = read("eval.json") {
                out["l0"] = eval["reconstruction"]["l0"].clone();
                out["fvu"] = eval["reconstruction"]["fvu"].clone();
                out["ce_recovered"] = eval["spliced"]["ce_loss_recovered"].clone();
            }
            out
        }
        RunKind::Probe => {
            let probes = crate::probe::probe_files(&run.dir);
            let mut features: Vec<&str> = probes.iter().map(|p| p.probe.info.feature.as_str()).collect();
            features.dedup();
            let best = probes
                .iter()
                .map(|p| p.probe.info.held_out.f1)
                .fold(None, |best: Option<f64>, f1| Some(best.map_or(f1, |b| b.max(f1))));
            json!({ "probes": probes.len(), "features": features, "best_f1": best })
        }
        RunKind::Scope => {
            let identity = read("run.json").unwrap_or(Value::Null);
            json!({
                "model": identity["model"],
                "target": identity["target"]["prompt"],
                "records": count_lines(&run.dir.join("results.jsonl")),
                "has_report": run.dir.join("report.html").is_file(),
            })
        }
        RunKind::Steer => {
            let identity = read("run.json").unwrap_or(Value::Null);
            let concepts: Vec<Value> = identity["concepts"]
                .as_array()
                .map(|c| c.iter().map(|c| c["name"].clone()).collect())
                .unwrap_or_default();
            json!({
                "model": identity["model"],
                "hook": identity["hook"],
                "concepts": concepts,
                "records": count_lines(&run.dir.join("results.jsonl")),
                "has_report": run.dir.join("steer.html").is_file(),
            })
        }
    }
}

/// The non-empty lines of a results file (0 when it cannot be read).
fn count_lines(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|t| t.lines().filter(|l| !l.trim().is_empty()).count())
        .unwrap_or(0)
}

fn has_event_files(dir: &Path) -> bool {
    let any_events = |d: &Path| {
        std::fs::read_dir(d).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("events.out.tfevents"))
        })
    };
    any_events(dir) || dir.join("tensorboard").is_dir()
}

/// `?run=ID&path=report.html`
#[derive(Deserialize)]
pub struct FileQuery {
    /// The run's id.
    pub run: String,
    /// A file's path inside the run's folder.
    pub path: String,
}

/// `GET /api/file?run=ID&path=P`: a file of a run (a report, a plot), served only from inside the
/// run's folder: a path that climbs out (`..`), is absolute, or leads out through a link is refused
/// with 403.
pub async fn file(State(app): State<AppState>, ApiQuery(query): ApiQuery<FileQuery>) -> ApiResult<Response> {
    let relative = Path::new(&query.path);
    let climbs_out = relative.components().any(|c| !matches!(c, Component::Normal(_)));
    if query.path.is_empty() || climbs_out {
        return Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            format!(
                "path '{}': only files inside the run's folder are served; give a relative path without '..'",
                query.path
            ),
        ));
    }
    let run = discover(&app.roots)
        .into_iter()
        .find(|r| r.id == query.run)
        .ok_or_else(|| ApiError::not_found(format!("no run named '{}' under the served roots", query.run)))?;
    let path = run.dir.join(relative);
    let not_found = || ApiError::not_found(format!("run '{}' has no file '{}'", query.run, query.path));
    let canonical = path.canonicalize().map_err(|_| not_found())?;
    let dir = run.dir.canonicalize().map_err(|_| not_found())?;
    if !canonical.starts_with(&dir) {
        return Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            format!("'{}' leads outside the run's folder", query.path),
        ));
    }
    if !canonical.is_file() {
        return Err(not_found());
    }
    let bytes: Vec<u8> = std::fs::read(&canonical)?;
    Ok(([(header::CONTENT_TYPE, content_type(&canonical))], bytes).into_response())
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "json" => "application/json",
        "md" | "csv" | "txt" | "jsonl" | "toml" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}
