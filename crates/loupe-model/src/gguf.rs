//! Reading GGUF files (llama.cpp's format), whatever the family: metadata, every tensor
//! dequantized to f32 under its GGUF name, and the tokenizer's fields. A family file turns them
//! into its model (`llama::from_gguf`, `gemma3::from_gguf`, ...), renaming tensors to the Hugging
//! Face layout so that both kinds of file load through one path.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::{Device, Tensor};
use loupe_util::Problems as _;

use crate::{Error, Result};

/// What a GGUF file holds, ready to build a model and a tokenizer from.
pub(crate) struct GgufFile {
    pub path: PathBuf,
    /// `general.architecture`: the family (`llama`, `qwen2`, `gemma3`, ...).
    pub arch: String,
    pub metadata: HashMap<String, Value>,
    /// f32 weights under their GGUF names (`blk.0.attn_q.weight`, ...).
    pub tensors: HashMap<String, Tensor>,
    pub tokenizer: GgufTokenizerFields,
    /// Where the tensors live.
    pub device: Device,
}

/// The `tokenizer.ggml.*` fields of a GGUF file.
pub(crate) struct GgufTokenizerFields {
    /// `gpt2` for byte-level BPE, `llama` for SentencePiece, ...
    pub model: String,
    /// The pre-tokenizer kind (`smollm`, `gpt2`, `qwen2`, ...).
    pub pre: Option<String>,
    pub tokens: Vec<String>,
    /// llama.cpp token types: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
    pub token_types: Vec<i32>,
    pub merges: Vec<String>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub add_bos: bool,
    /// The Jinja chat template (`tokenizer.chat_template`), when the model has one.
    pub chat_template: Option<String>,
}

/// The file's header (metadata and tensor directory), checked, with a reader after it.
fn read_header(path: &Path) -> Result<(Content, BufReader<File>)> {
    // candle allocates whatever the header claims; a corrupt count must be an error, not an abort.
    crate::gguf_check::check(path)?;
    let file = File::open(path).map_err(|e| Error::file(path, format!("cannot open: {e}")))?;
    let mut reader = BufReader::new(file);
    let content = Content::read(&mut reader).map_err(|e| {
        Error::file(path, format!("not a readable GGUF file ({e}); it may be truncated or corrupt: delete it and fetch it again"))
    })?;
    Ok((content, reader))
}

/// The tokenizer's fields alone, without reading a weight.
pub(crate) fn read_tokenizer_fields(path: &Path) -> Result<GgufTokenizerFields> {
    let (content, _) = read_header(path)?;
    tokenizer_fields(&Metadata {
        path,
        map: &content.metadata,
    })
}

pub(crate) fn read(path: &Path, device: &Device) -> Result<GgufFile> {
    let (content, mut reader) = read_header(path)?;
    let meta = Metadata {
        path,
        map: &content.metadata,
    };
    let arch = meta.string("general.architecture")?;
    let tokenizer = tokenizer_fields(&meta)?;

    let mut tensors = HashMap::with_capacity(content.tensor_infos.len());
    for name in content.tensor_infos.keys() {
        let tensor = content
            .tensor(&mut reader, name, device)
            .and_then(|q| q.dequantize(device))
            .map_err(|e| {
                Error::file(
                    path,
                    format!("cannot read tensor '{name}' ({e}); the file may be corrupt"),
                )
            })?;
        tensors.insert(name.clone(), tensor);
    }
    Ok(GgufFile {
        path: path.to_path_buf(),
        arch,
        metadata: content.metadata,
        tensors,
        tokenizer,
        device: device.clone(),
    })
}

impl GgufFile {
    /// Typed access to the metadata, errors naming the file and the key.
    pub(crate) fn meta(&self) -> Metadata<'_> {
        Metadata {
            path: &self.path,
            map: &self.metadata,
        }
    }

    /// The key of a family field: `block_count` is `<arch>.block_count`.
    pub(crate) fn key(&self, field: &str) -> String {
        format!("{}.{field}", self.arch)
    }

    /// The tensors under new names (`rename` gives the Hugging Face name of a GGUF name, or
    /// `None` for a tensor the family does not know: an error naming it).
    pub(crate) fn renamed_tensors(
        &mut self,
        rename: impl Fn(&str) -> Option<String>,
    ) -> Result<HashMap<String, Tensor>> {
        let mut renamed = HashMap::with_capacity(self.tensors.len());
        for (name, tensor) in self.tensors.drain() {
            let hf_name = rename(&name).ok_or_else(|| {
                Error::file(
                    &self.path,
                    format!("unexpected tensor '{name}' for a {} model", self.arch),
                )
            })?;
            renamed.insert(hf_name, tensor);
        }
        Ok(renamed)
    }

    /// An error for a value the family cannot run with, naming the file.
    pub(crate) fn invalid(&self, message: impl std::fmt::Display) -> Error {
        Error::file(&self.path, message)
    }
}

fn tokenizer_fields(meta: &Metadata) -> Result<GgufTokenizerFields> {
    let tokens = meta.strings("tokenizer.ggml.tokens")?;
    let n_tokens = tokens.len();
    Ok(GgufTokenizerFields {
        model: meta.string("tokenizer.ggml.model")?,
        pre: meta
            .map
            .get("tokenizer.ggml.pre")
            .and_then(|v| v.to_string().ok())
            .cloned(),
        tokens,
        token_types: match meta.map.get("tokenizer.ggml.token_type") {
            Some(v) => v
                .to_vec()
                .and_then(|types| types.iter().map(|t| t.to_i32()).collect())
                .map_err(|e| meta.bad("tokenizer.ggml.token_type", e))?,
            None => Vec::new(),
        },
        merges: match meta.map.get("tokenizer.ggml.merges") {
            Some(_) => meta.strings("tokenizer.ggml.merges")?,
            None => Vec::new(),
        },
        bos: meta.token_id("tokenizer.ggml.bos_token_id", n_tokens)?,
        eos: meta.token_id("tokenizer.ggml.eos_token_id", n_tokens)?,
        add_bos: meta
            .map
            .get("tokenizer.ggml.add_bos_token")
            .map(|v| v.to_bool())
            .transpose()
            .map_err(|e| meta.bad("tokenizer.ggml.add_bos_token", e))?
            .unwrap_or(false),
        chat_template: meta
            .map
            .get("tokenizer.chat_template")
            .and_then(|v| v.to_string().ok())
            .cloned(),
    })
}

/// Typed access to GGUF metadata, with errors that name the file and the key.
pub(crate) struct Metadata<'a> {
    path: &'a Path,
    map: &'a HashMap<String, Value>,
}

impl Metadata<'_> {
    /// Whether the file has `key`.
    pub(crate) fn has(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    pub(crate) fn get(&self, key: &str) -> Result<&Value> {
        self.map
            .get(key)
            .ok_or_else(|| Error::file(self.path, format!("GGUF metadata has no '{key}'")))
    }

    pub(crate) fn bad(&self, key: &str, e: candle_core::Error) -> Error {
        Error::file(
            self.path,
            format!("GGUF metadata '{key}' has the wrong type: {e}"),
        )
    }

    pub(crate) fn string(&self, key: &str) -> Result<String> {
        self.get(key)?.to_string().cloned().map_err(|e| self.bad(key, e))
    }

    pub(crate) fn strings(&self, key: &str) -> Result<Vec<String>> {
        let values = self.get(key)?.to_vec().map_err(|e| self.bad(key, e))?;
        values
            .iter()
            .map(|v| v.to_string().cloned().map_err(|e| self.bad(key, e)))
            .collect()
    }

    pub(crate) fn u64(&self, key: &str) -> Result<u64> {
        let v = self.get(key)?;
        v.to_u64()
            .or_else(|_| v.to_i64().map(|i| i as u64))
            .or_else(|_| v.to_i32().map(|i| i as u64))
            .map_err(|e| self.bad(key, e))
    }

    pub(crate) fn u64_or(&self, key: &str, default: u64) -> Result<u64> {
        if self.map.contains_key(key) {
            self.u64(key)
        } else {
            Ok(default)
        }
    }

    /// A token id, which must be one of the `n_tokens` tokens.
    pub(crate) fn token_id(&self, key: &str, n_tokens: usize) -> Result<Option<u32>> {
        if !self.map.contains_key(key) {
            return Ok(None);
        }
        let id = self.u64(key)?;
        match u32::try_from(id) {
            Ok(id) if (id as usize) < n_tokens => Ok(Some(id)),
            _ => Err(Error::file(
                self.path,
                format!("GGUF metadata '{key}' is {id}, past the vocabulary of {n_tokens} tokens"),
            )),
        }
    }

    pub(crate) fn f64(&self, key: &str) -> Result<f64> {
        let v = self.get(key)?;
        v.to_f32()
            .map(f64::from)
            .or_else(|_| v.to_f64())
            .map_err(|e| self.bad(key, e))
    }

    pub(crate) fn f64_or(&self, key: &str, default: f64) -> Result<f64> {
        if self.map.contains_key(key) {
            self.f64(key)
        } else {
            Ok(default)
        }
    }
}
