//! What the server loads once and keeps: models by name, the sentence embedder the playground's
//! judge uses, and each browsed SAE with its top contexts. Loading happens on first use, off the
//! async threads.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use candle_core::Device;
use loupe_model::{HookPoint, Model};
use loupe_sae::top::TopReport;
use loupe_sae::Sae;
use loupe_scope::judge::embedding::{default_embedder_dir, Embedder};

use crate::error::{ApiError, ApiResult};

/// Models, the embedder and SAEs, each loaded once.
#[derive(Default)]
pub struct Loaded {
    models: Mutex<HashMap<String, Arc<Model>>>,
    embedder: Mutex<Option<Arc<Embedder>>>,
    saes: Mutex<HashMap<PathBuf, Arc<SaeView>>>,
}

impl Loaded {
    /// The model `name` (a registered name, a GGUF file or a model folder), loaded on first use.
    pub fn model(&self, name: &str) -> ApiResult<Arc<Model>> {
        // Held while loading, so that two requests do not load the same model twice.
        let mut models = self.models.lock().expect("the model cache lock");
        if let Some(model) = models.get(name) {
            return Ok(model.clone());
        }
        let model = Arc::new(
            Model::load(name, &Device::Cpu)
                .map_err(|e| ApiError::internal(format!("loading model '{name}': {e}")))?,
        );
        models.insert(name.to_string(), model.clone());
        Ok(model)
    }

    /// The sentence embedder (all-MiniLM-L6-v2) that scores playground generations.
    pub fn embedder(&self) -> ApiResult<Arc<Embedder>> {
        let mut embedder = self.embedder.lock().expect("the embedder lock");
        if let Some(e) = embedder.as_ref() {
            return Ok(e.clone());
        }
        let loaded = Arc::new(Embedder::load(&default_embedder_dir())?);
        *embedder = Some(loaded.clone());
        Ok(loaded)
    }

    /// The SAE in `dir` with its top contexts (`top/top.json`, when `loupe sae top` wrote it),
    /// read again when either file has changed since (a run retrained while the server runs).
    pub fn sae(&self, dir: &Path) -> ApiResult<Arc<SaeView>> {
        let mut saes = self.saes.lock().expect("the SAE cache lock");
        if let Some(view) = saes.get(dir) {
            if view.stamp == file_stamp(dir) {
                return Ok(view.clone());
            }
        }
        let view = Arc::new(SaeView::load(dir)?);
        saes.insert(dir.to_path_buf(), view.clone());
        Ok(view)
    }
}

/// An SAE as the feature browser reads it.
pub struct SaeView {
    /// The SAE itself.
    pub sae: Sae,
    /// Its hook point.
    pub hook: HookPoint,
    /// `top/top.json`, when `loupe sae top` has been run for this SAE.
    pub top: Option<TopReport>,
    /// The token its store's contexts start with, when the store is on this machine.
    pub separator: Option<u32>,
    /// Why there are no top contexts, and how to make them.
    pub top_missing: String,
    /// When the weights and `top.json` were last modified, as read.
    stamp: FileStamp,
    /// Per latent, the activations it takes over a sample of its store (computed on first use).
    pub histograms: OnceLock<Result<crate::sae::Histograms, String>>,
}

impl SaeView {
    fn load(dir: &Path) -> ApiResult<Self> {
        let sae = loupe_sae::saelens::load(dir)?;
        let hook: HookPoint = sae.metadata.hook_name.parse().map_err(|e| {
            ApiError::internal(format!(
                "{}: metadata.hook_name '{}' is not a hook point loupe knows ({e})",
                dir.join("cfg.json").display(),
                sae.metadata.hook_name
            ))
        })?;
        let stamp = file_stamp(dir);
        let top_path = dir.join("top").join("top.json");
        let rerun = format!(
            "run `loupe sae top --sae {} --store {}` to list each latent's examples",
            dir.display(),
            sae.metadata.dataset_path.as_deref().unwrap_or("STORE")
        );
        let (top, top_missing) = if top_path.is_file() {
            let text = std::fs::read_to_string(&top_path)?;
            let top: TopReport = serde_json::from_str(&text).map_err(|e| {
                ApiError::internal(format!("{} is damaged ({e}); {rerun}", top_path.display()))
            })?;
            if top.latents.len() == sae.d_sae {
                (Some(top), String::new())
            } else {
                let stale = format!(
                    "{} lists {} latents but the SAE has {}: it is from an earlier SAE; {rerun}",
                    top_path.display(),
                    top.latents.len(),
                    sae.d_sae
                );
                (None, stale)
            }
        } else {
            (None, format!("no top contexts yet: {rerun}"))
        };
        let separator = sae
            .metadata
            .dataset_path
            .as_ref()
            .and_then(|p| loupe_data::store::Manifest::read(Path::new(p)).ok())
            .map(|m| m.separator_token);
        Ok(SaeView {
            separator,
            sae,
            hook,
            top,
            top_missing,
            stamp,
            histograms: OnceLock::new(),
        })
    }
}

/// Modification times of an SAE's weights and top contexts.
type FileStamp = [Option<std::time::SystemTime>; 2];

fn file_stamp(dir: &Path) -> FileStamp {
    let modified = |path: PathBuf| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    [
        modified(dir.join("sae_weights.safetensors")),
        modified(dir.join("top").join("top.json")),
    ]
}
