//! The activation store: a directory with `manifest.json` and shards `shard-NNNNN.safetensors`.
//!
//! Each shard holds whole contexts. Its tensors: one per hook point, named by the hook
//! (`blocks.15.hook_resid_post`, `[n, width]` in the store's dtype, as SAELens caches name them),
//! and per token `token_ids`, `doc_ids`, `context_ids`, `positions` (in the context) and
//! `labels.<field>` (u32 ids into the manifest's label values; u32::MAX for none). Files are
//! written atomically (a temp file, then a rename), shards before the manifest that lists them,
//! so a store is always readable and an interrupted capture resumes where it stopped.

use std::path::{Path, PathBuf};

use candle_core::DType;
use loupe_model::HookPoint;
use serde::{Deserialize, Serialize};

use crate::corpus::CorpusSpec;
use crate::packing::LabelVocab;
use crate::{Error, Result};

pub const MANIFEST: &str = "manifest.json";

/// The dtype activations are stored in (read back as f32).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreDType {
    #[default]
    F32,
    F16,
    Bf16,
}

impl StoreDType {
    pub fn dtype(self) -> DType {
        match self {
            StoreDType::F32 => DType::F32,
            StoreDType::F16 => DType::F16,
            StoreDType::Bf16 => DType::BF16,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// The name the model was loaded by.
    pub name: String,
    /// sha256 of its weights (see `ModelSource::fingerprint`).
    pub sha256: String,
    pub d_model: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HookInfo {
    pub name: HookPoint,
    pub width: usize,
}

/// One corpus file as it was when captured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FileInfo {
    pub path: PathBuf,
    pub bytes: u64,
    pub sha256: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CorpusInfo {
    pub spec: CorpusSpec,
    pub files: Vec<FileInfo>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShardInfo {
    pub file: String,
    /// Tokens (rows) in the shard.
    pub tokens: u64,
    pub first_context: u64,
    pub contexts: u64,
}

/// What a store holds and where it came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub loupe_version: String,
    pub model: ModelInfo,
    pub hooks: Vec<HookInfo>,
    pub dtype: StoreDType,
    pub context_length: usize,
    /// The token that starts every context and separates documents.
    pub separator_token: u32,
    /// Whether separator positions are stored (by default not: their norm dwarfs the rest).
    pub include_separators: bool,
    pub corpus: Vec<CorpusInfo>,
    pub labels: LabelVocab,
    pub shards: Vec<ShardInfo>,
    /// Totals over the shards.
    pub tokens: u64,
    pub contexts: u64,
    /// True once the whole corpus (or the token budget) is captured.
    pub complete: bool,
}

impl Manifest {
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Error::file(&path, format!("cannot read: {e}; is this an activation store?")))?;
        serde_json::from_str(&text)
            .map_err(|e| Error::file(&path, format!("not a valid store manifest: {e}")))
    }

    pub fn write(&self, dir: &Path) -> Result<()> {
        let json = serde_json::to_string_pretty(self).expect("a manifest serializes");
        write_atomically(&dir.join(MANIFEST), json.as_bytes())
    }

    pub fn hook(&self, hook: HookPoint) -> Option<&HookInfo> {
        self.hooks.iter().find(|h| h.name == hook)
    }

    /// What differs between this store and a capture that would write into it (a capture resumes
    /// into a store only when model, hooks, dtype, context length, separators and corpus match).
    pub fn differs_from(&self, other: &Manifest) -> Option<String> {
        let named = |what: &str, a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| {
            Some(format!("{what} (store: {a:?}, now: {b:?})"))
        };
        if self.model != other.model {
            return named("model", &self.model.name, &other.model.name).map(|s| {
                format!(
                    "{s}, weights sha256 {} vs {}",
                    self.model.sha256, other.model.sha256
                )
            });
        }
        let hooks = |m: &Manifest| m.hooks.iter().map(|h| h.name.to_string()).collect::<Vec<_>>();
        if self.hooks != other.hooks {
            return named("hooks", &hooks(self), &hooks(other));
        }
        if self.dtype != other.dtype {
            return named("dtype", &self.dtype, &other.dtype);
        }
        if self.context_length != other.context_length {
            return named("context_length", &self.context_length, &other.context_length);
        }
        if (self.separator_token, self.include_separators)
            != (other.separator_token, other.include_separators)
        {
            return named(
                "separator or include_separators",
                &(self.separator_token, self.include_separators),
                &(other.separator_token, other.include_separators),
            );
        }
        if self.corpus != other.corpus {
            let files = |m: &Manifest| {
                m.corpus
                    .iter()
                    .flat_map(|c| {
                        c.files
                            .iter()
                            .map(|f| format!("{} ({} bytes)", f.path.display(), f.bytes))
                    })
                    .collect::<Vec<_>>()
            };
            return named("corpus", &files(self), &files(other));
        }
        None
    }
}

/// Writes `bytes` to `path` through a temp file in the same directory and a rename, so that
/// `path` is either the old file or the new one, never half of one.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_path(path);
    std::fs::write(&tmp, bytes).map_err(|e| Error::file(&tmp, format!("cannot write: {e}")))?;
    std::fs::rename(&tmp, path)
        .map_err(|e| Error::file(path, format!("cannot move {} into place: {e}", tmp.display())))
}

/// The temp file a file is written through.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

pub fn shard_file(index: usize) -> String {
    format!("shard-{index:05}.safetensors")
}

/// sha256 and size of a file.
pub fn file_info(path: &Path) -> Result<FileInfo> {
    use sha2::{Digest, Sha256};
    let mut file = std::fs::File::open(path).map_err(|e| Error::file(path, format!("cannot open: {e}")))?;
    let mut hasher = Sha256::new();
    let bytes =
        std::io::copy(&mut file, &mut hasher).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
    Ok(FileInfo {
        path: path.to_path_buf(),
        bytes,
        sha256: format!("{:x}", hasher.finalize()),
    })
}
