//! The activation store: a directory with `manifest.json` and shards `shard-NNNNN.safetensors`.
//!
//! Each shard holds whole contexts. Its tensors: one per hook point, named by the hook
//! (`blocks.15.hook_resid_post`, `[n, width]` in the store's dtype, as SAELens caches name them),
//! and per token `token_ids`, `doc_ids`, `context_ids`, `positions` (in the context) and
//! `labels.<field>` (u32 ids into the manifest's label values; u32::MAX for none). Files are
//! written atomically (a temp file, then a rename), shards before the manifest that lists them,
//! so a store is always readable and an interrupted capture resumes where it stopped. Each shard
//! is sealed with an xxh3 checksum (see `loupe_util::digest`) that the manifest also records with
//! the shard's length, so a changed byte, a truncated shard or one swapped for another is refused
//! by the reader with the file named.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};
use loupe_model::HookPoint;
use loupe_util::Problems as _;
use serde::{Deserialize, Serialize};

use crate::corpus::CorpusSpec;
use crate::packing::LabelVocab;
use crate::{Error, Result};

/// The manifest's file name in a store directory.
pub const MANIFEST: &str = "manifest.json";

/// The dtype activations are stored in (read back as f32).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreDType {
    /// 32-bit float: exact, 4 bytes per value.
    #[default]
    F32,
    /// IEEE half precision: 2 bytes per value, range ±65504.
    F16,
    /// bfloat16: 2 bytes per value, f32's range with 8 bits of mantissa.
    Bf16,
}

impl StoreDType {
    /// The candle dtype of this storage type.
    pub fn dtype(self) -> DType {
        match self {
            StoreDType::F32 => DType::F32,
            StoreDType::F16 => DType::F16,
            StoreDType::Bf16 => DType::BF16,
        }
    }
}

/// The model a store's activations came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// The name the model was loaded by.
    pub name: String,
    /// sha256 of its weights (see `ModelSource::fingerprint`).
    pub sha256: String,
    /// The model's residual stream width (hidden size).
    pub d_model: usize,
}

/// One hook point captured into a store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HookInfo {
    /// The hook point; its shard tensors are named by it.
    pub name: HookPoint,
    /// Values per row at this hook point (`d_model` for the residual stream).
    pub width: usize,
}

/// One corpus file as it was when captured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FileInfo {
    /// The file, as it was found when captured.
    pub path: PathBuf,
    /// Its length in bytes.
    pub bytes: u64,
    /// Its sha256, lowercase hex.
    pub sha256: String,
}

/// One corpus source of a store, with the files it was read from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CorpusInfo {
    /// The source as the capture config gave it.
    pub spec: CorpusSpec,
    /// The files read from it, in reading order.
    pub files: Vec<FileInfo>,
}

/// One shard file of a store, as the manifest lists it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShardInfo {
    /// The shard's file name in the store directory, `shard-NNNNN.safetensors` (see [`shard_file`]).
    pub file: String,
    /// Tokens (rows) in the shard.
    pub tokens: u64,
    /// Index of the shard's first context in the store; shards hold consecutive contexts.
    pub first_context: u64,
    /// Contexts in the shard.
    pub contexts: u64,
    /// The file's length in bytes (absent in stores written before loupe recorded it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// The file's xxh3 checksum, as its header also records it (absent in older stores).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xxh3: Option<String>,
}

/// What a store holds and where it came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The loupe version that wrote the store.
    pub loupe_version: String,
    /// The model the activations came from.
    pub model: ModelInfo,
    /// The hook points captured, each one tensor per shard.
    pub hooks: Vec<HookInfo>,
    /// The dtype activations are stored in.
    pub dtype: StoreDType,
    /// Tokens per context, separator included.
    pub context_length: usize,
    /// The token that starts every context and separates documents.
    pub separator_token: u32,
    /// Whether separator positions are stored (by default not: their norm dwarfs the rest).
    pub include_separators: bool,
    /// The corpus sources, in the order they were read.
    pub corpus: Vec<CorpusInfo>,
    /// Label fields and values; the shards' `labels.<field>` ids index into it.
    pub labels: LabelVocab,
    /// The shards, in context order.
    pub shards: Vec<ShardInfo>,
    /// Totals over the shards.
    pub tokens: u64,
    /// Contexts in all shards.
    pub contexts: u64,
    /// True once the whole corpus (or the token budget) is captured.
    pub complete: bool,
    /// The files a store made by `loupe store import` was read from (empty for a capture).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub imported_from: Vec<FileInfo>,
}

impl Manifest {
    /// A manifest with no shards yet, for activations of `hooks` that a model named `model_name`
    /// (its width `d_model`, its weights' sha256 `model_sha256`) computed: what a store written
    /// by something other than a capture (a test, an import) starts from. Separators are not
    /// stored, token 0 separates, the corpus is not recorded, and the store is marked complete.
    pub fn without_shards(
        model: ModelInfo,
        hooks: Vec<HookInfo>,
        dtype: StoreDType,
        context_length: usize,
    ) -> Self {
        Manifest {
            loupe_version: env!("CARGO_PKG_VERSION").into(),
            model,
            hooks,
            dtype,
            context_length,
            separator_token: 0,
            include_separators: false,
            corpus: Vec::new(),
            labels: Default::default(),
            shards: Vec::new(),
            tokens: 0,
            contexts: 0,
            complete: true,
            imported_from: Vec::new(),
        }
    }

    /// Reads `manifest.json` from the store directory `dir` and checks that its shard names and totals
    /// agree with one another.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Error::file(&path, format!("cannot read: {e}; is this an activation store?")))?;
        let manifest: Manifest = serde_json::from_str(&text)
            .map_err(|e| Error::file(&path, format!("not a valid store manifest: {e}")))?;
        manifest
            .check_totals()
            .map_err(|message| Error::file(&path, format!("{message}; the manifest is damaged")))?;
        Ok(manifest)
    }

    /// Checks that the manifest agrees with itself: shard files named as loupe names them (so a
    /// damaged manifest cannot point outside the store), totals that add up, contexts in order.
    fn check_totals(&self) -> std::result::Result<(), String> {
        let mut contexts = 0;
        for (index, shard) in self.shards.iter().enumerate() {
            if shard.file != shard_file(index) {
                return Err(format!(
                    "shard {index} is named '{}', not {}",
                    shard.file,
                    shard_file(index)
                ));
            }
            if shard.first_context != contexts {
                return Err(format!(
                    "{} starts at context {}, but the shards before it end at {contexts}",
                    shard.file, shard.first_context
                ));
            }
            contexts += shard.contexts;
        }
        let tokens: u64 = self.shards.iter().map(|s| s.tokens).sum();
        if (tokens, contexts) != (self.tokens, self.contexts) {
            return Err(format!(
                "it lists {} tokens in {} contexts, but its shards add up to {tokens} in {contexts}",
                self.tokens, self.contexts
            ));
        }
        if self.hooks.iter().any(|h| h.width == 0) || self.context_length == 0 {
            return Err("a hook width or the context length is 0".into());
        }
        Ok(())
    }

    /// Writes `manifest.json` into `dir` atomically (a temp file, then a rename).
    pub fn write(&self, dir: &Path) -> Result<()> {
        let json = serde_json::to_string_pretty(self).expect("a manifest serializes");
        Ok(loupe_util::write_atomically(
            &dir.join(MANIFEST),
            json.as_bytes(),
        )?)
    }

    /// The entry for `hook`, or `None` when the store does not hold it.
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

/// Writes a shard (its tensors as built by a capture) sealed with its checksum, atomically, and
/// returns its manifest entry.
pub fn write_shard(
    dir: &Path,
    index: usize,
    tensors: &HashMap<String, Tensor>,
    first_context: u64,
    contexts: u64,
) -> Result<ShardInfo> {
    let file = shard_file(index);
    let path = dir.join(&file);
    let rows = tensors
        .get("token_ids")
        .ok_or_else(|| Error::file(&path, "a shard needs token_ids"))?
        .dim(0)?;
    let mut sorted: Vec<(&String, &Tensor)> = tensors.iter().collect();
    sorted.sort_by_key(|(name, _)| *name);
    let (bytes, digest) = loupe_util::digest::seal(sorted, HashMap::new())
        .map_err(|e| Error::file(&path, format!("cannot serialize the shard: {e}")))?;
    loupe_util::write_atomically(&path, &bytes)?;
    Ok(ShardInfo {
        file,
        tokens: rows as u64,
        first_context,
        contexts,
        bytes: Some(bytes.len() as u64),
        xxh3: Some(digest.to_string()),
    })
}

/// The file name of shard `index`: `shard-00000.safetensors`, five digits, zero-padded.
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
