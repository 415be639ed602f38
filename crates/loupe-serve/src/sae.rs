//! The feature browser: an SAE's latents listed, searched by their top tokens and sorted; one
//! latent's activation histogram, top contexts and the logit lens of its decoder row; and the
//! latents that fire on a sentence, run through the model and the SAE live.

use std::cmp::Ordering;
use std::path::PathBuf;

use axum::extract::State;
use axum::Json;
use candle_core::{DType, Device};
use loupe_data::reader::Store;
use loupe_model::{Batch, Hooks};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{blocking, ApiError, ApiQuery, ApiResult, JsonBody};
use crate::models::SaeView;
use crate::runs::{find, RunKind, RunQuery};
use crate::{AppState, MAX_PROMPT_CHARS};

/// Tokens of the SAE's store encoded for the activation histograms.
const HISTOGRAM_TOKENS: usize = 20_000;
/// Bars per histogram.
const HISTOGRAM_BINS: usize = 24;
/// Tokens listed at each end of the logit lens.
const LOGIT_LENS_TOKENS: usize = 10;
/// Latents listed for a sentence.
const SENTENCE_LATENTS: usize = 40;

/// `?run=ID&q=...&sort=...&offset=...&limit=...`
#[derive(Deserialize)]
pub struct LatentsQuery {
    run: String,
    /// Only latents whose top examples' tokens contain this text (case-insensitive).
    #[serde(default)]
    q: String,
    /// `index` (default), `density` (most often firing first) or `max` (largest activation first).
    #[serde(default)]
    sort: Option<String>,
    #[serde(default)]
    offset: usize,
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    50
}

/// `GET /api/sae?run=ID`: the SAE's shape, hook, model and whether top contexts exist.
pub async fn overview(
    State(app): State<AppState>,
    ApiQuery(query): ApiQuery<RunQuery>,
) -> ApiResult<Json<Value>> {
    let run = find(&app.roots, &query.run, RunKind::Sae)?;
    let view = blocking(move || app.loaded.sae(&run.dir)).await?;
    let meta = &view.sae.metadata;
    Ok(Json(json!({
        "run": query.run,
        "d_in": view.sae.d_in,
        "d_sae": view.sae.d_sae,
        "hook": view.hook.to_string(),
        "model": meta.model_name,
        "architecture": meta.trained_architecture,
        "store": meta.dataset_path,
        "top_tokens": view.top.as_ref().map(|t| t.tokens),
        "note": if view.top.is_none() { Some(view.top_missing.clone()) } else { None },
    })))
}

/// `GET /api/sae/latents`: one page of latents, filtered and sorted.
pub async fn latents(
    State(app): State<AppState>,
    ApiQuery(query): ApiQuery<LatentsQuery>,
) -> ApiResult<Json<Value>> {
    let run = find(&app.roots, &query.run, RunKind::Sae)?;
    let view = blocking(move || app.loaded.sae(&run.dir)).await?;
    let Some(top) = &view.top else {
        return Err(ApiError::not_found(view.top_missing.clone()));
    };
    let needle = query.q.trim().to_lowercase();
    let mut rows: Vec<(&loupe_sae::top::LatentSummary, Vec<String>)> = top
        .latents
        .iter()
        .map(|l| (l, top_tokens(l)))
        .filter(|(_, tokens)| {
            needle.is_empty() || tokens.iter().any(|t| t.trim().to_lowercase().contains(&needle))
        })
        .collect();
    match query.sort.as_deref().unwrap_or("index") {
        "index" => {}
        "density" => rows.sort_by(|a, b| b.0.frequency.total_cmp(&a.0.frequency)),
        "max" => rows.sort_by(|a, b| b.0.max_activation.total_cmp(&a.0.max_activation)),
        other => {
            return Err(ApiError::bad_request(format!(
                "sort '{other}': choose index, density or max"
            )))
        }
    }
    let total = rows.len();
    let page: Vec<Value> = rows
        .into_iter()
        .skip(query.offset)
        .take(query.limit.min(500))
        .map(|(l, tokens)| {
            json!({
                "latent": l.latent,
                "frequency": l.frequency,
                "max_activation": l.max_activation,
                "mean_activation": l.mean_activation,
                "top_tokens": tokens,
            })
        })
        .collect();
    Ok(Json(
        json!({ "total": total, "d_sae": view.sae.d_sae, "latents": page }),
    ))
}

/// The distinct highlighted tokens of a latent's examples, strongest first (whitespace kept: a
/// latent for line breaks lists "\n").
fn top_tokens(latent: &loupe_sae::top::LatentSummary) -> Vec<String> {
    let mut tokens: Vec<String> = Vec::new();
    for example in &latent.examples {
        let token = &example.tokens[example.highlight];
        if !tokens.contains(token) {
            tokens.push(token.clone());
        }
    }
    tokens
}

/// `?run=ID&latent=N`
#[derive(Deserialize)]
pub struct LatentQuery {
    run: String,
    latent: usize,
}

/// `GET /api/sae/latent`: one latent's statistics, examples, histogram and logit lens.
pub async fn latent(
    State(app): State<AppState>,
    ApiQuery(query): ApiQuery<LatentQuery>,
) -> ApiResult<Json<Value>> {
    let run = find(&app.roots, &query.run, RunKind::Sae)?;
    let latent = query.latent;
    blocking(move || {
        let view = app.loaded.sae(&run.dir)?;
        if latent >= view.sae.d_sae {
            return Err(ApiError::not_found(format!(
                "latent {latent} does not exist: this SAE has latents 0 to {}",
                view.sae.d_sae - 1
            )));
        }
        let mut notes = Vec::new();
        let summary = view.top.as_ref().map(|t| &t.latents[latent]);
        if summary.is_none() {
            notes.push(view.top_missing.clone());
        }
        let histogram = match view.histograms.get_or_init(|| Histograms::compute(&view)) {
            Ok(h) => Some(h.of(latent)),
            Err(message) => {
                notes.push(format!("no histogram: {message}"));
                None
            }
        };
        let logit_lens = match logit_lens(&app, &view, latent) {
            Ok(lens) => Some(lens),
            Err(e) => {
                notes.push(format!("no logit lens: {}", e.message));
                None
            }
        };
        Ok(Json(json!({
            "latent": latent,
            "frequency": summary.map(|s| s.frequency),
            "max_activation": summary.map(|s| s.max_activation),
            "mean_activation": summary.map(|s| s.mean_activation),
            "examples": summary.map(|s| &s.examples),
            "histogram": histogram,
            "logit_lens": logit_lens,
            "notes": notes,
        })))
    })
    .await
}

/// The tokens the latent's decoder row most raises and most lowers, read through the model's final
/// norm and unembedding (the logit lens of the direction). Only for hooks as wide as the residual
/// stream.
fn logit_lens(app: &AppState, view: &SaeView, latent: usize) -> ApiResult<Value> {
    let model = app.loaded.model(&view.sae.metadata.model_name)?;
    let d_model = model.spec().d_model;
    if view.sae.d_in != d_model {
        return Err(ApiError::bad_request(format!(
            "the SAE reads {} values wide, not the residual stream's {d_model}",
            view.sae.d_in
        )));
    }
    let row = view.sae.w_dec.get(latent)?.reshape((1, 1, d_model))?;
    let logits: Vec<f32> = model
        .unembed(&row)?
        .flatten_all()?
        .to_dtype(DType::F32)?
        .to_vec1()?;
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    let entry = |&id: &usize| json!({ "token": model.tokenizer.token_text(id as u32), "logit": logits[id] });
    Ok(json!({
        "top": order.iter().take(LOGIT_LENS_TOKENS).map(entry).collect::<Vec<_>>(),
        "bottom": order.iter().rev().take(LOGIT_LENS_TOKENS).map(entry).collect::<Vec<_>>(),
    }))
}

/// Every latent's nonzero activations over the first tokens of the SAE's store (all documents, as
/// `loupe sae top` reads them), binned per latent from 0 to its largest.
pub struct Histograms {
    tokens: usize,
    /// Per latent, its nonzero activations.
    values: Vec<Vec<f32>>,
}

impl Histograms {
    fn compute(view: &SaeView) -> Result<Histograms, String> {
        let store_dir = view
            .sae
            .metadata
            .dataset_path
            .as_ref()
            .map(PathBuf::from)
            .filter(|p| p.join("manifest.json").is_file())
            .ok_or("the SAE's store (cfg.json metadata.dataset_path) is not on this machine")?;
        let store = Store::open(&store_dir).map_err(|e| e.to_string())?;
        let mut values = vec![Vec::new(); view.sae.d_sae];
        let mut tokens = 0;
        for shard in 0..store.manifest.shards.len() {
            if tokens >= HISTOGRAM_TOKENS {
                break;
            }
            let data = store.read_shard(shard, view.hook).map_err(|e| e.to_string())?;
            let rows = data.activations.dim(0).map_err(|e| e.to_string())?;
            let take = rows.min(HISTOGRAM_TOKENS - tokens);
            let x = data.activations.narrow(0, 0, take).map_err(|e| e.to_string())?;
            let code = view.sae.encode_sparse(&x).map_err(|e| e.to_string())?;
            for (&l, &v) in code.latents.iter().zip(&code.values) {
                values[l as usize].push(v);
            }
            tokens += take;
        }
        Ok(Histograms { tokens, values })
    }

    fn of(&self, latent: usize) -> Value {
        let values = &self.values[latent];
        let max = values.iter().copied().fold(0f32, f32::max);
        let mut counts = vec![0u64; HISTOGRAM_BINS];
        if max > 0.0 {
            for &v in values {
                let bin = ((v / max) * HISTOGRAM_BINS as f32) as usize;
                counts[bin.min(HISTOGRAM_BINS - 1)] += 1;
            }
        }
        json!({
            "tokens": self.tokens,
            "fired": values.len(),
            "max": max,
            "counts": counts,
        })
    }
}

/// `{"run": ID, "text": "..."}`
#[derive(Deserialize)]
pub struct SentenceRequest {
    run: String,
    text: String,
}

/// `POST /api/sae/sentence`: the latents that fire on a sentence, run through the model up to the
/// SAE's hook and encoded: per latent, its activation on each piece of the text.
pub async fn sentence(
    State(app): State<AppState>,
    JsonBody(request): JsonBody<SentenceRequest>,
) -> ApiResult<Json<Value>> {
    check_prompt("text", &request.text)?;
    let run = find(&app.roots, &request.run, RunKind::Sae)?;
    blocking(move || {
        let view = app.loaded.sae(&run.dir)?;
        let model = app.loaded.model(&view.sae.metadata.model_name)?;
        let text_ids = model.tokenizer.encode(&request.text)?;
        // Stored contexts start with the separator token, which the SAE never saw itself: the
        // sentence gets it too, so that its first token is read as a store's first token is.
        let mut ids: Vec<u32> = view.separator.into_iter().collect();
        let skip = ids.len();
        ids.extend(&text_ids);
        if ids.len() > model.spec().context {
            return Err(ApiError::too_large(format!(
                "the text is {} tokens; the model reads at most {}",
                ids.len(),
                model.spec().context
            )));
        }
        let batch = Batch::left_padded(&[ids], model.pad_id(), &Device::Cpu)?;
        let mut hooks = Hooks::new().capture(view.hook);
        model.capture(&batch, &mut hooks)?;
        let captured = hooks.captured(view.hook).expect("the hook was captured");
        let x = captured
            .get(0)?
            .narrow(0, skip, text_ids.len())?
            .to_dtype(DType::F32)?;
        let in_range = view.sae.in_range(&x)?;
        let code = view.sae.encode_sparse(&x)?;
        let pieces = model.tokenizer.decode_pieces(&text_ids)?;

        // Per latent, its activation on each piece (the largest of the piece's tokens).
        let mut by_latent: std::collections::BTreeMap<u32, Vec<f32>> = Default::default();
        for (p, piece) in pieces.iter().enumerate() {
            for t in piece.tokens.clone() {
                if !in_range[t] {
                    continue;
                }
                for i in code.offsets[t]..code.offsets[t + 1] {
                    let acts = by_latent
                        .entry(code.latents[i])
                        .or_insert_with(|| vec![0.0; pieces.len()]);
                    acts[p] = acts[p].max(code.values[i]);
                }
            }
        }
        let mut latents: Vec<(u32, Vec<f32>, f32)> = by_latent
            .into_iter()
            .map(|(l, acts)| {
                let max = acts.iter().copied().fold(0f32, f32::max);
                (l, acts, max)
            })
            .collect();
        latents.sort_by(|a, b| b.2.partial_cmp(&a.2).unwrap_or(Ordering::Equal));
        let recorded_max = |l: u32| view.top.as_ref().map(|t| t.latents[l as usize].max_activation);
        Ok(Json(json!({
            "pieces": pieces.iter().map(|p| {
                json!({ "text": p.text, "in_range": p.tokens.clone().all(|t| in_range[t]) })
            }).collect::<Vec<_>>(),
            "latents": latents.iter().take(SENTENCE_LATENTS).map(|(l, acts, max)| json!({
                "latent": l,
                "max": max,
                "activations": acts,
                "recorded_max": recorded_max(*l),
                "top_tokens": view.top.as_ref().map(|t| top_tokens(&t.latents[*l as usize])),
            })).collect::<Vec<_>>(),
            "active": latents.len(),
        })))
    })
    .await
}

/// A prompt must have text and stay within the server's limit.
pub fn check_prompt(field: &str, text: &str) -> ApiResult<()> {
    if text.trim().is_empty() {
        return Err(ApiError::bad_request(format!(
            "{field}: is empty; give some text"
        )));
    }
    let chars = text.chars().count();
    if chars > MAX_PROMPT_CHARS {
        return Err(ApiError::too_large(format!(
            "{field}: {chars} characters; the server takes at most {MAX_PROMPT_CHARS}"
        )));
    }
    Ok(())
}
