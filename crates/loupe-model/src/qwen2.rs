//! The Qwen2 family (Qwen2, Qwen2.5, Qwen2.5-Coder): a llama with biases on the q, k and v
//! projections. Its blocks are llama's (`llama.rs`, built with `attention_bias`); this file reads
//! its configs.

use candle_nn::VarBuilder;

use crate::gguf::GgufFile;
use crate::llama::{self, Llama, LlamaConfig};
use crate::Result;

/// Builds a Qwen2 model from a GGUF file (`general.architecture = qwen2`).
pub(crate) fn from_gguf(file: GgufFile) -> Result<Llama> {
    if !file.tensors.contains_key("blk.0.attn_q.bias") {
        return Err(file.invalid(
            "a qwen2 model must have q/k/v biases (blk.0.attn_q.bias is missing); the file is \
             damaged or mislabelled",
        ));
    }
    llama::from_gguf(file, "qwen2")
}

/// Reads a Qwen2 `config.json`: llama's fields, with q/k/v biases.
pub(crate) fn config_from_hf_json(json: &str) -> std::result::Result<LlamaConfig, String> {
    let value: serde_json::Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
    if value["use_sliding_window"].as_bool() == Some(true) {
        return Err("use_sliding_window is true; loupe runs Qwen2 with full attention only".into());
    }
    let mut config = LlamaConfig::from_hf_json(json)?;
    config.attention_bias = true;
    Ok(config)
}

/// Builds a Qwen2 model from Hugging Face weights.
pub(crate) fn load(vb: VarBuilder, config: LlamaConfig) -> Result<Llama> {
    Llama::load(vb, config, "qwen2")
}
