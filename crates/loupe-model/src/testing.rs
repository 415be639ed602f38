//! Tiny random-weight llama models that tests write for themselves, so that most tests need no
//! download: a Hugging Face directory (`config.json`, `model.safetensors`, `tokenizer.json`) and
//! the same model as a GGUF file laid out as llama.cpp writes it (q and k rows permuted, tokenizer
//! in the metadata). Weights come from a seeded generator, so every run writes the same model.

use std::collections::HashMap;
use std::path::Path;

use ahash::AHashMap;
use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use loupe_util::Problems as _;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::AddedToken;

use crate::{Error, LlamaConfig, Result};

/// The tiny model's shape: 3 layers, GQA (4 heads, 2 KV heads), untied unembedding, 64 positions.
pub fn tiny_config() -> LlamaConfig {
    LlamaConfig {
        hidden_size: 32,
        intermediate_size: 48,
        vocab_size: TINY_VOCAB,
        num_hidden_layers: 3,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        rms_norm_eps: 1e-5,
        rope_theta: 10_000.0,
        max_position_embeddings: 64,
        tie_word_embeddings: false,
        attention_bias: false,
    }
}

/// 256 byte-level symbols, one merge ("Ġt"), and two special tokens.
const TINY_VOCAB: usize = 259;
const SPECIAL_TOKENS: [&str; 2] = ["<|endoftext|>", "<|im_end|>"];
/// Id of `<|im_end|>`, the tiny model's EOS.
pub const TINY_EOS: u32 = 258;

fn tiny_tokens() -> Vec<String> {
    let mut bytes: Vec<char> = ByteLevel::alphabet().into_iter().collect();
    bytes.sort();
    let mut tokens: Vec<String> = bytes.into_iter().map(String::from).collect();
    tokens.push("Ġt".into());
    tokens.extend(SPECIAL_TOKENS.map(String::from));
    assert_eq!(tokens.len(), TINY_VOCAB);
    tokens
}

/// Deterministic uniform numbers in [-scale, scale] (splitmix64), so tests need no RNG crate.
fn uniform(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// The tiny model's weights, named as in Hugging Face checkpoints.
pub fn tiny_weights(config: &LlamaConfig, seed: u64) -> Result<HashMap<String, Tensor>> {
    let (d, m, v) = (config.hidden_size, config.intermediate_size, config.vocab_size);
    let kv = config.num_key_value_heads * config.head_dim();
    let mut shapes: Vec<(String, Vec<usize>)> = vec![
        ("model.embed_tokens.weight".into(), vec![v, d]),
        ("model.norm.weight".into(), vec![d]),
        ("lm_head.weight".into(), vec![v, d]),
    ];
    for l in 0..config.num_hidden_layers {
        let p = format!("model.layers.{l}");
        shapes.extend([
            (format!("{p}.input_layernorm.weight"), vec![d]),
            (format!("{p}.post_attention_layernorm.weight"), vec![d]),
            (format!("{p}.self_attn.q_proj.weight"), vec![d, d]),
            (format!("{p}.self_attn.k_proj.weight"), vec![kv, d]),
            (format!("{p}.self_attn.v_proj.weight"), vec![kv, d]),
            (format!("{p}.self_attn.o_proj.weight"), vec![d, d]),
            (format!("{p}.mlp.gate_proj.weight"), vec![m, d]),
            (format!("{p}.mlp.up_proj.weight"), vec![m, d]),
            (format!("{p}.mlp.down_proj.weight"), vec![d, m]),
        ]);
    }
    let mut weights = HashMap::new();
    for (i, (name, shape)) in shapes.into_iter().enumerate() {
        let n = shape.iter().product();
        let values = if name.ends_with("norm.weight") {
            uniform(seed + i as u64, n, 0.2)
                .into_iter()
                .map(|x| 1.0 + x)
                .collect()
        } else {
            uniform(seed + i as u64, n, 0.5)
        };
        weights.insert(name, Tensor::from_vec(values, shape, &Device::Cpu)?);
    }
    Ok(weights)
}

fn tiny_tokenizer() -> Result<tokenizers::Tokenizer> {
    let tokens = tiny_tokens();
    let vocab: AHashMap<String, u32> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, vec![("Ġ".to_string(), "t".to_string())])
        .build()
        .map_err(|e| Error::Tokenizer(e.to_string()))?;
    let mut tokenizer = tokenizers::Tokenizer::new(bpe);
    tokenizer.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
    tokenizer.add_special_tokens(&SPECIAL_TOKENS.map(|t| AddedToken::from(t, true)));
    Ok(tokenizer)
}

/// Writes the tiny model as a Hugging Face directory.
pub fn write_tiny_hf_dir(dir: &Path, seed: u64) -> Result<LlamaConfig> {
    let config = tiny_config();
    std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, e))?;
    let config_json = serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "vocab_size": config.vocab_size,
        "num_hidden_layers": config.num_hidden_layers,
        "num_attention_heads": config.num_attention_heads,
        "num_key_value_heads": config.num_key_value_heads,
        "rms_norm_eps": config.rms_norm_eps,
        "rope_theta": config.rope_theta,
        "max_position_embeddings": config.max_position_embeddings,
        "tie_word_embeddings": false,
        "bos_token_id": TINY_EOS,
        "eos_token_id": TINY_EOS,
    });
    let path = dir.join("config.json");
    std::fs::write(&path, serde_json::to_string_pretty(&config_json).expect("json"))
        .map_err(|e| Error::file(&path, e))?;
    candle_core::safetensors::save(&tiny_weights(&config, seed)?, dir.join("model.safetensors"))?;
    let path = dir.join("tokenizer.json");
    tiny_tokenizer()?
        .save(&path, false)
        .map_err(|e| Error::file(&path, e))?;
    Ok(config)
}

/// Writes the same tiny model as a GGUF file, as llama.cpp's converter would: tensors renamed,
/// q and k rows permuted for interleaved rotary embeddings, tokenizer in the metadata.
pub fn write_tiny_gguf(path: &Path, seed: u64) -> Result<LlamaConfig> {
    let config = tiny_config();
    let weights = tiny_weights(&config, seed)?;
    // In name order, so that every run writes the same bytes (tests damage it at fixed places).
    let mut weights: Vec<_> = weights.into_iter().collect();
    weights.sort_by(|a, b| a.0.cmp(&b.0));
    let mut tensors = Vec::new();
    for (name, w) in &weights {
        let gguf_name = gguf_name(name);
        let w = if name.ends_with("q_proj.weight") {
            permute_for_interleaved_rope(w, config.num_attention_heads)?
        } else if name.ends_with("k_proj.weight") {
            permute_for_interleaved_rope(w, config.num_key_value_heads)?
        } else {
            w.clone()
        };
        tensors.push((gguf_name, QTensor::quantize(&w, GgmlDType::F32)?));
    }
    let tokens = tiny_tokens();
    let token_types: Vec<Value> = tokens
        .iter()
        .map(|t| {
            Value::I32(if SPECIAL_TOKENS.contains(&t.as_str()) {
                3
            } else {
                1
            })
        })
        .collect();
    let metadata: Vec<(&str, Value)> = vec![
        ("general.architecture", Value::String("llama".into())),
        ("llama.block_count", Value::U32(config.num_hidden_layers as u32)),
        (
            "llama.context_length",
            Value::U32(config.max_position_embeddings as u32),
        ),
        ("llama.embedding_length", Value::U32(config.hidden_size as u32)),
        (
            "llama.feed_forward_length",
            Value::U32(config.intermediate_size as u32),
        ),
        (
            "llama.attention.head_count",
            Value::U32(config.num_attention_heads as u32),
        ),
        (
            "llama.attention.head_count_kv",
            Value::U32(config.num_key_value_heads as u32),
        ),
        ("llama.rope.freq_base", Value::F32(config.rope_theta)),
        (
            "llama.attention.layer_norm_rms_epsilon",
            Value::F32(config.rms_norm_eps as f32),
        ),
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String("gpt2".into())),
        (
            "tokenizer.ggml.tokens",
            Value::Array(tokens.into_iter().map(Value::String).collect()),
        ),
        ("tokenizer.ggml.token_type", Value::Array(token_types)),
        (
            "tokenizer.ggml.merges",
            Value::Array(vec![Value::String("Ġ t".into())]),
        ),
        ("tokenizer.ggml.eos_token_id", Value::U32(TINY_EOS)),
        ("tokenizer.ggml.bos_token_id", Value::U32(TINY_EOS)),
        ("tokenizer.ggml.add_bos_token", Value::Bool(false)),
    ];
    let metadata_refs: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut file = std::fs::File::create(path).map_err(|e| Error::file(path, e))?;
    candle_core::quantized::gguf_file::write(&mut file, &metadata_refs, &tensor_refs)?;
    Ok(config)
}

fn gguf_name(hf_name: &str) -> String {
    match hf_name {
        "model.embed_tokens.weight" => return "token_embd.weight".into(),
        "model.norm.weight" => return "output_norm.weight".into(),
        "lm_head.weight" => return "output.weight".into(),
        _ => {}
    }
    let rest = hf_name.strip_prefix("model.layers.").expect("a layer weight");
    let (layer, part) = rest.split_once('.').expect("layer.part");
    let part = match part {
        "input_layernorm.weight" => "attn_norm.weight",
        "post_attention_layernorm.weight" => "ffn_norm.weight",
        "self_attn.q_proj.weight" => "attn_q.weight",
        "self_attn.k_proj.weight" => "attn_k.weight",
        "self_attn.v_proj.weight" => "attn_v.weight",
        "self_attn.o_proj.weight" => "attn_output.weight",
        "mlp.gate_proj.weight" => "ffn_gate.weight",
        "mlp.up_proj.weight" => "ffn_up.weight",
        "mlp.down_proj.weight" => "ffn_down.weight",
        other => panic!("no GGUF name for {other}"),
    };
    format!("blk.{layer}.{part}")
}

/// What llama.cpp's `convert_hf_to_gguf.py` does to q and k: within each head, the rows of the
/// two rotary halves are interleaved (`reshape(heads, 2, head_dim / 2, in).swapaxes(1, 2)`).
fn permute_for_interleaved_rope(w: &Tensor, n_heads: usize) -> Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    Ok(w.reshape((n_heads, 2, rows / n_heads / 2, cols))?
        .transpose(1, 2)?
        .reshape((rows, cols))?)
}

/// The largest absolute value in `t` (for comparing tensors in tests; panics on a non-f32 tensor).
pub fn max_abs(t: &Tensor) -> f32 {
    let flat = t.abs().and_then(|a| a.flatten_all()).and_then(|a| a.max(0));
    flat.and_then(|m| m.to_scalar::<f32>()).expect("an f32 tensor")
}
