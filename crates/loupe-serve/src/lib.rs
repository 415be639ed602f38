//! `loupe serve`: a local web app over the runs under a few folders (stores, SAEs, probe runs,
//! scope runs), with a feature browser that runs sentences through the model and the SAE live, and
//! a playground that runs patch experiments and streams their results as they are generated.
//!
//! The server is an [`axum`] router ([`router`]) over a JSON API (`/api/...`, every error a JSON
//! `{"error": ...}` with its status) and one page (`/`, with `/assets/app.js` and
//! `/assets/style.css`), all embedded in the binary. Runs are named by the index [`runs`] builds,
//! never by a path from the request. When the server is given a token it refuses every request
//! without it (an `Authorization: Bearer` header, a `token` query parameter, or the cookie the
//! page sets).
//!
//! | endpoint | what |
//! | --- | --- |
//! | `GET /api/runs` | every run, with what the home page shows of it |
//! | `GET /api/file?run=&path=` | a file inside a run's folder (reports, charts) |
//! | `GET /api/sae?run=` | an SAE's shape, hook and model |
//! | `GET /api/sae/latents?run=&q=&sort=&offset=&limit=` | latents, searched by top token, sorted |
//! | `GET /api/sae/latent?run=&latent=` | one latent: examples, histogram, logit lens |
//! | `POST /api/sae/sentence` `{run, text}` | the latents that fire on a sentence, live |
//! | `GET /api/probe?run=` | F1 against k per feature, hook and method |
//! | `GET /api/probe/detail?run=&feature=&hook=&method=&k=` | one probe's neurons and contexts |
//! | `GET /api/scope?run=` | a scope run's generations, judged |
//! | `GET /api/playground/options` | targets, entities, limits |
//! | `POST /api/playground` | start a job (202), or 409 while one runs |
//! | `GET /api/jobs/{id}` · `/events` · `POST .../cancel` | a job's results, as JSON or server-sent events; cancel it |
//!
//! ```
//! use loupe_serve::runs::{discover, RunKind};
//! use loupe_serve::{router, ServeConfig};
//! // A folder with one scope run in it (a scope run is a folder holding results.jsonl).
//! let root = tempfile::tempdir()?;
//! std::fs::create_dir_all(root.path().join("entities"))?;
//! std::fs::write(root.path().join("entities/results.jsonl"), "")?;
//! let runs = discover(&[root.path().to_path_buf()]);
//! assert_eq!(runs[0].kind, RunKind::Scope);
//! assert!(runs[0].id.ends_with("/entities"));
//! // The app over it; `loupe_serve::serve(listener, app, shutdown)` serves it on a tokio listener.
//! let app = router(ServeConfig { roots: vec![root.path().into()], token: None, feature_books: vec![] })?;
//! # let _ = app;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;

mod error;
mod features;
mod models;
mod playground;
mod probe;
pub mod runs;
mod sae;
mod scope;

pub use error::{ApiError, ApiResult};

/// The largest request body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// The longest prompt or sentence accepted, in characters.
pub const MAX_PROMPT_CHARS: usize = 2_000;

/// What the server serves and how it guards it.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// The folders whose runs are served (`checkpoints/`, `activations/`).
    pub roots: Vec<PathBuf>,
    /// When set, every request must carry it.
    pub token: Option<String>,
    /// Feature books whose entries the playground offers as amplification targets.
    pub feature_books: Vec<PathBuf>,
}

/// The server's state, shared by every request.
pub struct App {
    roots: Vec<PathBuf>,
    token: Option<String>,
    feature_books: features::FeatureBooks,
    loaded: models::Loaded,
    jobs: Mutex<playground::Jobs>,
}

/// What handlers are given.
pub type AppState = Arc<App>;

/// The whole app: API, page and assets, guarded by the token when there is one. A feature book
/// that cannot be read is an error naming it.
pub fn router(config: ServeConfig) -> Result<Router, String> {
    let app = Arc::new(App {
        roots: config.roots,
        token: config.token,
        feature_books: features::FeatureBooks::read(&config.feature_books)?,
        loaded: Default::default(),
        jobs: Default::default(),
    });
    let api = Router::new()
        .route("/runs", get(runs::list))
        .route("/file", get(runs::file))
        .route("/sae", get(sae::overview))
        .route("/sae/latents", get(sae::latents))
        .route("/sae/latent", get(sae::latent))
        .route("/sae/sentence", post(sae::sentence))
        .route("/probe", get(probe::overview))
        .route("/probe/detail", get(probe::detail))
        .route("/scope", get(scope::overview))
        .route("/playground/options", get(playground::options))
        .route("/playground", post(playground::start))
        .route("/jobs/{id}", get(playground::status))
        .route("/jobs/{id}/events", get(playground::events))
        .route("/jobs/{id}/cancel", post(playground::cancel));
    let router = Router::new()
        .route("/", get(page))
        .route("/assets/app.js", get(script))
        .route("/assets/style.css", get(style))
        .nest("/api", api)
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(app.clone(), require_token))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(CatchPanicLayer::custom(|_: Box<dyn std::any::Any + Send>| {
            ApiError::internal("loupe failed unexpectedly on this request (a bug: please report it)")
                .into_response()
        }))
        .with_state(app);
    Ok(router)
}

async fn page() -> Html<&'static str> {
    Html(include_str!("assets/index.html"))
}

async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("assets/app.js"),
    )
}

async fn style() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("assets/style.css"),
    )
}

async fn not_found(request: Request) -> ApiError {
    ApiError::not_found(format!(
        "nothing at {}: the app is at /, its API under /api (GET /api/runs lists the runs)",
        request.uri().path()
    ))
}

/// The cookie the page keeps the token in, once it was opened with `?token=`.
const TOKEN_COOKIE: &str = "loupe_token";

/// Refuses a request without the server's token (401), when it has one. A token given as a
/// query parameter is also set as a cookie, so that the page's later requests carry it.
async fn require_token(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let Some(expected) = app.token.as_deref() else {
        return next.run(request).await;
    };
    let from_query = query_token(request.uri().query());
    let given = bearer_token(request.headers())
        .or(from_query.clone())
        .or_else(|| cookie_token(request.headers()));
    if !given.is_some_and(|g| same_secret(&g, expected)) {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "this server requires its token: open the URL it printed (with ?token=...), or send \
             the header 'Authorization: Bearer TOKEN'",
        )
        .into_response();
    }
    let mut response = next.run(request).await;
    if from_query.is_some() {
        let cookie = format!("{TOKEN_COOKIE}={expected}; Path=/; HttpOnly; SameSite=Strict");
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            response.headers_mut().insert(header::SET_COOKIE, value);
        }
    }
    response
}

fn bearer_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    value.strip_prefix("Bearer ").map(|t| t.trim().to_string())
}

fn query_token(query: Option<&str>) -> Option<String> {
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
        .map(str::to_string)
}

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            c.trim()
                .strip_prefix(&format!("{TOKEN_COOKIE}="))
                .map(str::to_string)
        })
}

/// Compares without stopping at the first difference, so that timing does not reveal the token.
fn same_secret(given: &str, expected: &str) -> bool {
    given.len() == expected.len()
        && given
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

/// Serves `router` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}
