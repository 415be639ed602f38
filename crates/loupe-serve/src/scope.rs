//! A scope run as data for its interactive page: every generation with its judgement, the held-out
//! study when the report has been written, and the charts the report drew.

use axum::extract::State;
use axum::Json;
use loupe_scope::judge::degenerate;
use loupe_scope::report::Summary;
use loupe_scope::results::read_results;
use loupe_scope::ScopeRecord;
use serde_json::{json, Value};

use crate::error::{blocking, ApiQuery, ApiResult};
use crate::runs::{find, RunKind, RunQuery};
use crate::AppState;

/// Superscopes' threshold on the judge's cosine similarity, used when the run's report does not
/// record another.
const DEFAULT_THRESHOLD: f64 = 0.3;

/// Records as the scope and playground pages show them: without their token ids, each judged as
/// the report judges it (`Summary::success`: the score above `threshold`, or in an
/// attribute-extraction run an expected answer found; and not degenerate). Also what was asked.
pub fn records_json(records: &[ScopeRecord], threshold: f32) -> (Vec<Value>, String) {
    let summary = Summary::new(records, threshold, &[]);
    let judged = records
        .iter()
        .map(|r| {
            let degenerate = degenerate(&r.tokens);
            json!({
                "source": r.source,
                "layer": r.layer,
                "amplifier": r.amplifier,
                "label": r.label,
                "value": r.value,
                "generation": r.generation,
                "score": r.score,
                "fluency": r.fluency,
                "answer_found": r.answer_found,
                "degenerate": degenerate,
                "interpreted": summary.success(r) && !degenerate,
                "concept_hits": r.concept_hits,
                "next_token_match": r.next_token_match,
            })
        })
        .collect();
    (judged, summary.criterion())
}

/// The charts `loupe scope` writes beside its report, shown when present.
const CHARTS: [&str; 2] = ["interpreted.svg", "held_out.svg"];

/// `GET /api/scope?run=ID`: the run's records, without token ids, each marked interpreted or not.
pub async fn overview(
    State(app): State<AppState>,
    ApiQuery(query): ApiQuery<RunQuery>,
) -> ApiResult<Json<Value>> {
    let run = find(&app.roots, &query.run, RunKind::Scope)?;
    blocking(move || {
        let read_json = |name: &str| -> Option<Value> {
            serde_json::from_str(&std::fs::read_to_string(run.dir.join(name)).ok()?).ok()
        };
        let study = read_json("study.json");
        let threshold = study
            .as_ref()
            .and_then(|s| s["threshold"].as_f64())
            .unwrap_or(DEFAULT_THRESHOLD);
        let results = read_results(&run.dir.join("results.jsonl"))?;
        let (records, criterion) = records_json(&results, threshold as f32);
        let charts: Vec<&str> = CHARTS
            .iter()
            .copied()
            .filter(|c| run.dir.join(c).is_file())
            .collect();
        Ok(Json(json!({
            "run": query.run,
            "identity": read_json("run.json"),
            "threshold": threshold,
            "criterion": criterion,
            "records": records,
            "study": study,
            "charts": charts,
            "report": run.dir.join("report.html").is_file().then_some("report.html"),
        })))
    })
    .await
}
