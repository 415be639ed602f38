//! Reading llama-family GGUF files (llama.cpp's format): metadata into a [`LlamaConfig`], every
//! tensor dequantized to f32 and renamed to the Hugging Face layout, and the tokenizer's fields.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::{Device, Tensor};
use loupe_util::Problems as _;

use crate::{Error, LlamaConfig, Result};

/// What a GGUF file holds, ready to build a model and a tokenizer from.
pub(crate) struct GgufModel {
    pub config: LlamaConfig,
    /// f32 weights named as in Hugging Face llama checkpoints.
    pub tensors: HashMap<String, Tensor>,
    pub tokenizer: GgufTokenizerFields,
}

/// The `tokenizer.ggml.*` fields of a GGUF file.
pub(crate) struct GgufTokenizerFields {
    /// `gpt2` for byte-level BPE, `llama` for SentencePiece, ...
    pub model: String,
    /// The pre-tokenizer kind (`smollm`, `gpt2`, `llama-bpe`, ...).
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

pub(crate) fn read(path: &Path, device: &Device) -> Result<GgufModel> {
    // candle allocates whatever the header claims; a corrupt count must be an error, not an abort.
    crate::gguf_check::check(path)?;
    let file = File::open(path).map_err(|e| Error::file(path, format!("cannot open: {e}")))?;
    let mut reader = BufReader::new(file);
    let content = Content::read(&mut reader).map_err(|e| {
        Error::file(path, format!("not a readable GGUF file ({e}); it may be truncated or corrupt: delete it and fetch it again"))
    })?;
    let meta = Metadata {
        path,
        map: &content.metadata,
    };

    let arch = meta.string("general.architecture")?;
    if arch != "llama" {
        return Err(Error::file(path, format!("architecture '{arch}' is not supported; loupe runs the llama family (llama, SmolLM, TinyLlama)")));
    }
    let n_heads = meta.u64("llama.attention.head_count")? as usize;
    let n_kv_heads = meta.u64_or("llama.attention.head_count_kv", n_heads as u64)? as usize;
    let tokens = meta.strings("tokenizer.ggml.tokens")?;
    let has_output = content.tensor_infos.contains_key("output.weight");
    let config = LlamaConfig {
        hidden_size: meta.u64("llama.embedding_length")? as usize,
        intermediate_size: meta.u64("llama.feed_forward_length")? as usize,
        vocab_size: meta.u64_or("llama.vocab_size", tokens.len() as u64)? as usize,
        num_hidden_layers: meta.u64("llama.block_count")? as usize,
        num_attention_heads: n_heads,
        num_key_value_heads: n_kv_heads,
        rms_norm_eps: meta.f64("llama.attention.layer_norm_rms_epsilon")?,
        rope_theta: meta.f64_or("llama.rope.freq_base", 10_000.0)? as f32,
        max_position_embeddings: meta.u64("llama.context_length")? as usize,
        tie_word_embeddings: !has_output,
    };
    config
        .validate_named(gguf_key)
        .map_err(|e| Error::file(path, e))?;
    if tokens.len() > config.vocab_size {
        return Err(Error::file(
            path,
            format!(
                "tokenizer.ggml.tokens has {} tokens but llama.vocab_size is {}; the file is corrupt: delete it and fetch it again",
                tokens.len(),
                config.vocab_size
            ),
        ));
    }
    if meta.map.contains_key("llama.rope.scaling.type")
        || content.tensor_infos.contains_key("rope_freqs.weight")
    {
        return Err(Error::file(
            path,
            "rope scaling (Llama 3.1 style) is not supported yet",
        ));
    }

    let mut tensors = HashMap::with_capacity(content.tensor_infos.len());
    for name in content.tensor_infos.keys() {
        let hf_name = hf_name(name)
            .ok_or_else(|| Error::file(path, format!("unexpected tensor '{name}' for a llama model")))?;
        let tensor = content
            .tensor(&mut reader, name, device)
            .and_then(|q| q.dequantize(device))
            .map_err(|e| {
                Error::file(
                    path,
                    format!("cannot read tensor '{name}' ({e}); the file may be corrupt"),
                )
            })?;
        let tensor = if name.ends_with("attn_q.weight") {
            unpermute_rope_rows(&tensor, n_heads)
        } else if name.ends_with("attn_k.weight") {
            unpermute_rope_rows(&tensor, n_kv_heads)
        } else {
            Ok(tensor)
        }
        .map_err(|e| Error::file(path, format!("tensor '{name}' does not split into heads: {e}")))?;
        tensors.insert(hf_name, tensor);
    }

    let n_tokens = tokens.len();
    let tokenizer = GgufTokenizerFields {
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
    };
    Ok(GgufModel {
        config,
        tensors,
        tokenizer,
    })
}

/// The GGUF metadata key a [`LlamaConfig`] field is read from, for error messages.
fn gguf_key(field: &'static str) -> &'static str {
    match field {
        "hidden_size" => "llama.embedding_length",
        "intermediate_size" => "llama.feed_forward_length",
        "vocab_size" => "llama.vocab_size (or the length of tokenizer.ggml.tokens)",
        "num_hidden_layers" => "llama.block_count",
        "num_attention_heads" => "llama.attention.head_count",
        "num_key_value_heads" => "llama.attention.head_count_kv",
        "max_position_embeddings" => "llama.context_length",
        "rms_norm_eps" => "llama.attention.layer_norm_rms_epsilon",
        "rope_theta" => "llama.rope.freq_base",
        other => other,
    }
}

/// The Hugging Face name of a llama.cpp tensor.
fn hf_name(gguf_name: &str) -> Option<String> {
    let top = match gguf_name {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(name) = top {
        return Some(name.to_string());
    }
    let rest = gguf_name.strip_prefix("blk.")?;
    let (layer, part) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let hf_part = match part {
        "attn_norm.weight" => "input_layernorm.weight",
        "ffn_norm.weight" => "post_attention_layernorm.weight",
        "attn_q.weight" => "self_attn.q_proj.weight",
        "attn_k.weight" => "self_attn.k_proj.weight",
        "attn_v.weight" => "self_attn.v_proj.weight",
        "attn_output.weight" => "self_attn.o_proj.weight",
        "ffn_gate.weight" => "mlp.gate_proj.weight",
        "ffn_up.weight" => "mlp.up_proj.weight",
        "ffn_down.weight" => "mlp.down_proj.weight",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf_part}"))
}

/// llama.cpp's converter permutes the rows of q and k within each head so that rotary embeddings
/// can rotate adjacent pairs (`rope_i`); Hugging Face rotates the two halves of a head. This undoes
/// the permutation (a head's rows `[pair][2]` become `[2][pair]`), so the model has one rope path.
fn unpermute_rope_rows(w: &Tensor, n_heads: usize) -> Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    let head_dim = rows / n_heads;
    Ok(w.reshape((n_heads, head_dim / 2, 2, cols))?
        .transpose(1, 2)?
        .reshape((rows, cols))?)
}

/// Typed access to GGUF metadata, with errors that name the file and the key.
struct Metadata<'a> {
    path: &'a Path,
    map: &'a HashMap<String, Value>,
}

impl Metadata<'_> {
    fn get(&self, key: &str) -> Result<&Value> {
        self.map
            .get(key)
            .ok_or_else(|| Error::file(self.path, format!("GGUF metadata has no '{key}'")))
    }

    fn bad(&self, key: &str, e: candle_core::Error) -> Error {
        Error::file(
            self.path,
            format!("GGUF metadata '{key}' has the wrong type: {e}"),
        )
    }

    fn string(&self, key: &str) -> Result<String> {
        self.get(key)?.to_string().cloned().map_err(|e| self.bad(key, e))
    }

    fn strings(&self, key: &str) -> Result<Vec<String>> {
        let values = self.get(key)?.to_vec().map_err(|e| self.bad(key, e))?;
        values
            .iter()
            .map(|v| v.to_string().cloned().map_err(|e| self.bad(key, e)))
            .collect()
    }

    fn u64(&self, key: &str) -> Result<u64> {
        let v = self.get(key)?;
        v.to_u64()
            .or_else(|_| v.to_i64().map(|i| i as u64))
            .or_else(|_| v.to_i32().map(|i| i as u64))
            .map_err(|e| self.bad(key, e))
    }

    fn u64_or(&self, key: &str, default: u64) -> Result<u64> {
        if self.map.contains_key(key) {
            self.u64(key)
        } else {
            Ok(default)
        }
    }

    /// A token id, which must be one of the `n_tokens` tokens.
    fn token_id(&self, key: &str, n_tokens: usize) -> Result<Option<u32>> {
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

    fn f64(&self, key: &str) -> Result<f64> {
        let v = self.get(key)?;
        v.to_f32()
            .map(f64::from)
            .or_else(|_| v.to_f64())
            .map_err(|e| self.bad(key, e))
    }

    fn f64_or(&self, key: &str, default: f64) -> Result<f64> {
        if self.map.contains_key(key) {
            self.f64(key)
        } else {
            Ok(default)
        }
    }
}
