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

    /// The SAE in `dir` with its top contexts (`top/top.json`, when `loupe sae top` wrote it).
    pub fn sae(&self, dir: &Path) -> ApiResult<Arc<SaeView>> {
        let mut saes = self.saes.lock().expect("the SAE cache lock");
        if let Some(view) = saes.get(dir) {
            return Ok(view.clone());
        }
        let view = Arc::new(SaeView::load(dir)?);
        saes.insert(dir.to_path_buf(), view.clone());
        Ok(view)
    }
}

/// An SAE as the feature browser reads it.
pub struct SaeView {
    /// Its folder.
    pub dir: PathBuf,
    /// The SAE itself.
    pub sae: Sae,
    /// Its hook point.
    pub hook: HookPoint,
    /// `top/top.json`, when `loupe sae top` has been run.
    pub top: Option<TopReport>,
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
        let top_path = dir.join("top").join("top.json");
        let top = if top_path.is_file() {
            let text = std::fs::read_to_string(&top_path)?;
            Some(serde_json::from_str(&text).map_err(|e| {
                ApiError::internal(format!(
                    "{} is damaged ({e}); run `loupe sae top` again to rewrite it",
                    top_path.display()
                ))
            })?)
        } else {
            None
        };
        Ok(SaeView {
            dir: dir.to_path_buf(),
            sae,
            hook,
            top,
            histograms: OnceLock::new(),
        })
    }
}
