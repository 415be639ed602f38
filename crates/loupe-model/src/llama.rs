//! The llama family (Llama 2/3 without rope scaling, TinyLlama, SmolLM/SmolLM2) and its variant
//! with q/k/v biases, Qwen2 (see `qwen2.rs`), with a hook at every [`HookPoint`]. Weights are named
//! as in Hugging Face checkpoints (`model.layers.0.self_attn.q_proj.weight`, ...); GGUF tensors are
//! renamed into this layout when they are loaded.

use candle_core::{Device, Module, Tensor};
use candle_nn::{embedding, linear_no_bias, rms_norm, Embedding, Linear, RmsNorm, VarBuilder};
use serde::{Deserialize, Serialize};

use crate::gguf::GgufFile;
use crate::layers::{
    attend, check_positive, check_rope, fused_linear, project, silu_gate, split_qkv, AttentionShape, Pass,
    Rope,
};
use crate::network::{ModelSpec, Network};
use crate::{Batch, Error, HookPoint, Hooks, Result};

/// The shape of a llama-family model: what `config.json` says, resolved (no optional fields).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    /// Residual stream width, `d_model`.
    pub hidden_size: usize,
    /// Width of the MLP's hidden layer.
    pub intermediate_size: usize,
    /// Tokens in the vocabulary (rows of the embedding and of the unembedding).
    pub vocab_size: usize,
    /// Transformer blocks (layers).
    pub num_hidden_layers: usize,
    /// Attention (query) heads per layer.
    pub num_attention_heads: usize,
    /// Key/value heads per layer (fewer than query heads under grouped-query attention).
    pub num_key_value_heads: usize,
    /// Epsilon added to the mean square in RMSNorm.
    pub rms_norm_eps: f64,
    /// Base of the rotary position embedding's frequencies.
    pub rope_theta: f32,
    /// The context window, in tokens.
    pub max_position_embeddings: usize,
    /// Whether the unembedding reuses the token embedding matrix.
    pub tie_word_embeddings: bool,
    /// Whether the q, k and v projections have biases (Qwen2).
    #[serde(default)]
    pub attention_bias: bool,
}

impl LlamaConfig {
    /// Width of one attention head: `hidden_size / num_attention_heads`.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Parses a Hugging Face `config.json` (through candle-transformers' llama config; Qwen2's
    /// has the same fields).
    pub fn from_hf_json(json: &str) -> std::result::Result<Self, String> {
        let hf: candle_transformers::models::llama::LlamaConfig =
            serde_json::from_str(json).map_err(|e| e.to_string())?;
        if hf.rope_scaling.is_some() {
            return Err(
                "rope_scaling (Llama 3.1 style) is not supported yet: without it, loupe \
                        would rotate positions differently from how the model was trained"
                    .into(),
            );
        }
        let config = LlamaConfig {
            hidden_size: hf.hidden_size,
            intermediate_size: hf.intermediate_size,
            vocab_size: hf.vocab_size,
            num_hidden_layers: hf.num_hidden_layers,
            num_attention_heads: hf.num_attention_heads,
            num_key_value_heads: hf.num_key_value_heads(),
            rms_norm_eps: hf.rms_norm_eps,
            rope_theta: hf.rope_theta,
            max_position_embeddings: hf.max_position_embeddings,
            tie_word_embeddings: hf.tie_word_embeddings.unwrap_or(false),
            attention_bias: false,
        };
        config.validate()?;
        Ok(config)
    }

    pub(crate) fn validate(&self) -> std::result::Result<(), String> {
        self.validate_named(str::to_string)
    }

    /// Checks that the config describes a model that can be built, before anything is allocated
    /// from it: a corrupt file's sizes must be an error, not a 100 GB allocation. `name` gives each
    /// field's name in the file the config was read from (GGUF keys differ from `config.json`'s).
    pub(crate) fn validate_named(&self, name: impl Fn(&str) -> String) -> std::result::Result<(), String> {
        let sizes = [
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("vocab_size", self.vocab_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("max_position_embeddings", self.max_position_embeddings),
        ];
        check_positive(sizes.map(|(field, value)| (name(field), value)))?;
        let heads = self.num_attention_heads;
        if !self.hidden_size.is_multiple_of(heads) || !self.head_dim().is_multiple_of(2) {
            return Err(format!(
                "{} {} must split into {heads} heads ({}) of even size",
                name("hidden_size"),
                self.hidden_size,
                name("num_attention_heads")
            ));
        }
        if !heads.is_multiple_of(self.num_key_value_heads) {
            return Err(format!(
                "{} {heads} must be a multiple of {} {}",
                name("num_attention_heads"),
                name("num_key_value_heads"),
                self.num_key_value_heads
            ));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            return Err(format!(
                "{} is {}; it must be a small positive number",
                name("rms_norm_eps"),
                self.rms_norm_eps
            ));
        }
        check_rope(
            self.rope_theta,
            self.head_dim(),
            self.max_position_embeddings,
            |field| match field {
                "context" => name("max_position_embeddings"),
                "rotary_dim" => name("hidden_size"),
                _ => name("rope_theta"),
            },
        )
    }

    /// Reads the config from a GGUF file's `<arch>.*` metadata (llama and qwen2 name them alike).
    fn from_gguf(file: &GgufFile) -> Result<Self> {
        let meta = file.meta();
        let key = |field: &str| file.key(field);
        let n_heads = meta.u64(&key("attention.head_count"))? as usize;
        let config = LlamaConfig {
            hidden_size: meta.u64(&key("embedding_length"))? as usize,
            intermediate_size: meta.u64(&key("feed_forward_length"))? as usize,
            vocab_size: meta.u64_or(&key("vocab_size"), file.tokenizer.tokens.len() as u64)? as usize,
            num_hidden_layers: meta.u64(&key("block_count"))? as usize,
            num_attention_heads: n_heads,
            num_key_value_heads: meta.u64_or(&key("attention.head_count_kv"), n_heads as u64)? as usize,
            rms_norm_eps: meta.f64(&key("attention.layer_norm_rms_epsilon"))?,
            rope_theta: meta.f64_or(&key("rope.freq_base"), 10_000.0)? as f32,
            max_position_embeddings: meta.u64(&key("context_length"))? as usize,
            tie_word_embeddings: !file.tensors.contains_key("output.weight"),
            attention_bias: file.tensors.contains_key("blk.0.attn_q.bias"),
        };
        let arch = file.arch.clone();
        config
            .validate_named(|field| gguf_key(&arch, field))
            .map_err(|e| file.invalid(e))?;
        if file.tokenizer.tokens.len() > config.vocab_size {
            return Err(file.invalid(format!(
                "tokenizer.ggml.tokens has {} tokens but {} is {}; the file is corrupt: delete it \
                 and fetch it again",
                file.tokenizer.tokens.len(),
                key("vocab_size"),
                config.vocab_size
            )));
        }
        if meta.has(&key("rope.scaling.type")) || file.tensors.contains_key("rope_freqs.weight") {
            return Err(file.invalid("rope scaling (Llama 3.1 style) is not supported yet"));
        }
        Ok(config)
    }
}

/// The GGUF metadata key a [`LlamaConfig`] field is read from, for error messages.
fn gguf_key(arch: &str, field: &str) -> String {
    let key = |suffix: &str| format!("{arch}.{suffix}");
    match field {
        "hidden_size" => key("embedding_length"),
        "intermediate_size" => key("feed_forward_length"),
        "vocab_size" => key("vocab_size (or the length of tokenizer.ggml.tokens)"),
        "num_hidden_layers" => key("block_count"),
        "num_attention_heads" => key("attention.head_count"),
        "num_key_value_heads" => key("attention.head_count_kv"),
        "max_position_embeddings" => key("context_length"),
        "rms_norm_eps" => key("attention.layer_norm_rms_epsilon"),
        "rope_theta" => key("rope.freq_base"),
        other => other.to_string(),
    }
}

/// Builds a llama-family model (or Qwen2, with biases) from a GGUF file: llama.cpp's names mapped
/// to Hugging Face's, and for `llama` files the q and k rows un-permuted (see
/// [`unpermute_rope_rows`]).
pub(crate) fn from_gguf(mut file: GgufFile, family: &'static str) -> Result<Llama> {
    let config = LlamaConfig::from_gguf(&file)?;
    // llama.cpp permutes q and k only for the `llama` architecture (qwen2 keeps HF's layout).
    let permuted = file.arch == "llama";
    let mut tensors = file.renamed_tensors(hf_name)?;
    if permuted {
        let q_or_k: Vec<String> = tensors
            .keys()
            .filter(|name| name.ends_with("q_proj.weight") || name.ends_with("k_proj.weight"))
            .cloned()
            .collect();
        for name in q_or_k {
            let heads = match name.ends_with("q_proj.weight") {
                true => config.num_attention_heads,
                false => config.num_key_value_heads,
            };
            let w = unpermute_rope_rows(&tensors[&name], heads)
                .map_err(|e| file.invalid(format!("tensor '{name}' does not split into heads: {e}")))?;
            tensors.insert(name, w);
        }
    }
    let vb = VarBuilder::from_tensors(tensors, candle_core::DType::F32, &file.device);
    Llama::load(vb, config, family).map_err(|e| file.invalid(e))
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
        "attn_q.bias" => "self_attn.q_proj.bias",
        "attn_k.bias" => "self_attn.k_proj.bias",
        "attn_v.bias" => "self_attn.v_proj.bias",
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

struct Attention {
    /// q, k and v projections fused: `[q | k | v]` along the output dimension.
    qkv_proj: Linear,
    o_proj: Linear,
    shape: AttentionShape,
}

impl Attention {
    fn load(vb: VarBuilder, cfg: &LlamaConfig) -> Result<Self> {
        let (d, hd) = (cfg.hidden_size, cfg.head_dim());
        let (q_dim, kv_dim) = (cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd);
        Ok(Attention {
            qkv_proj: fused_linear(
                &vb,
                d,
                &[("q_proj", q_dim), ("k_proj", kv_dim), ("v_proj", kv_dim)],
                cfg.attention_bias,
            )?,
            o_proj: linear_no_bias(q_dim, d, vb.pp("o_proj"))?,
            shape: AttentionShape {
                n_heads: cfg.num_attention_heads,
                n_kv_heads: cfg.num_key_value_heads,
                head_dim: hd,
                scale: 1.0 / (hd as f64).sqrt(),
            },
        })
    }
}

struct Mlp {
    /// gate and up projections fused: `[gate | up]` along the output dimension.
    gate_up_proj: Linear,
    down_proj: Linear,
    width: usize,
}

impl Mlp {
    fn load(vb: VarBuilder, cfg: &LlamaConfig) -> Result<Self> {
        let (d, m) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(Mlp {
            gate_up_proj: fused_linear(&vb, d, &[("gate_proj", m), ("up_proj", m)], false)?,
            down_proj: linear_no_bias(m, d, vb.pp("down_proj"))?,
            width: m,
        })
    }

    /// The neurons: silu(gate) * up, the input of the down projection.
    fn neurons(&self, x: &Tensor) -> Result<Tensor> {
        silu_gate(&project(&self.gate_up_proj, x)?, self.width)
    }
}

struct Block {
    input_layernorm: RmsNorm,
    self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    mlp: Mlp,
}

impl Block {
    fn load(vb: VarBuilder, cfg: &LlamaConfig) -> Result<Self> {
        let (d, eps) = (cfg.hidden_size, cfg.rms_norm_eps);
        Ok(Block {
            input_layernorm: rms_norm(d, eps, vb.pp("input_layernorm"))?,
            self_attn: Attention::load(vb.pp("self_attn"), cfg)?,
            post_attention_layernorm: rms_norm(d, eps, vb.pp("post_attention_layernorm"))?,
            mlp: Mlp::load(vb.pp("mlp"), cfg)?,
        })
    }
}

/// A llama-family decoder with hooks, run by [`crate::Model`].
pub(crate) struct Llama {
    spec: ModelSpec,
    embed_tokens: Embedding,
    blocks: Vec<Block>,
    norm: RmsNorm,
    lm_head: Linear,
    rope: [Rope; 1],
}

impl Llama {
    /// Builds the model from weights named as in Hugging Face llama checkpoints; `family` is the
    /// name it goes by (`llama`, or `qwen2` for the variant with q/k/v biases).
    pub(crate) fn load(vb: VarBuilder, config: LlamaConfig, family: &'static str) -> Result<Self> {
        config.validate().map_err(Error::Invalid)?;
        let embed_tokens = embedding(config.vocab_size, config.hidden_size, vb.pp("model.embed_tokens"))?;
        let lm_head = if config.tie_word_embeddings {
            Linear::new(embed_tokens.embeddings().clone(), None)
        } else {
            linear_no_bias(config.hidden_size, config.vocab_size, vb.pp("lm_head"))?
        };
        let blocks = (0..config.num_hidden_layers)
            .map(|l| Block::load(vb.pp(format!("model.layers.{l}")), &config))
            .collect::<Result<Vec<_>>>()?;
        let norm = rms_norm(config.hidden_size, config.rms_norm_eps, vb.pp("model.norm"))?;
        let rope = Rope::new(
            config.rope_theta,
            config.head_dim(),
            config.max_position_embeddings,
            vb.device(),
        )?;
        let spec = ModelSpec {
            family,
            d_model: config.hidden_size,
            d_mlp: config.intermediate_size,
            n_layers: config.num_hidden_layers,
            n_heads: config.num_attention_heads,
            n_kv_heads: config.num_key_value_heads,
            d_head: config.head_dim(),
            vocab_size: config.vocab_size,
            context: config.max_position_embeddings,
            learned_positions: false,
            parallel_attention: false,
        };
        Ok(Llama {
            spec,
            embed_tokens,
            blocks,
            norm,
            lm_head,
            rope: [rope],
        })
    }
}

impl Network for Llama {
    fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    fn device(&self) -> &Device {
        self.embed_tokens.embeddings().device()
    }

    fn ropes(&self) -> &[Rope] {
        &self.rope
    }

    fn embed(&self, batch: &Batch, hooks: &mut Hooks) -> Result<Tensor> {
        let x = self.embed_tokens.forward(batch.ids())?;
        hooks.apply(HookPoint::Embed, x, batch)
    }

    fn block(
        &self,
        layer: usize,
        x: Tensor,
        pass: &Pass,
        cache: Option<&mut candle_nn::kv_cache::KvCache>,
        hooks: &mut Hooks,
    ) -> Result<Tensor> {
        let block = &self.blocks[layer];
        let batch = pass.batch;
        let x = hooks.apply(HookPoint::ResidPre(layer), x, batch)?;
        let h = block.input_layernorm.forward(&x)?;
        let h = hooks.apply(HookPoint::Ln1Normalized(layer), h, batch)?;
        let attn = &block.self_attn;
        let qkv = split_qkv(&project(&attn.qkv_proj, &h)?, &attn.shape)?;
        let z = attend(
            layer,
            &attn.shape,
            qkv,
            Some(&pass.ropes[0]),
            pass.mask.as_ref(),
            cache,
            batch,
            hooks,
        )?;
        let attn_out = hooks.apply(HookPoint::AttnOut(layer), project(&attn.o_proj, &z)?, batch)?;
        let x = hooks.apply(HookPoint::ResidMid(layer), (x + attn_out)?, batch)?;

        let h = block.post_attention_layernorm.forward(&x)?;
        let h = hooks.apply(HookPoint::Ln2Normalized(layer), h, batch)?;
        let neurons = hooks.apply(HookPoint::MlpPost(layer), block.mlp.neurons(&h)?, batch)?;
        let mlp_out = hooks.apply(
            HookPoint::MlpOut(layer),
            project(&block.mlp.down_proj, &neurons)?,
            batch,
        )?;
        hooks.apply(HookPoint::ResidPost(layer), (x + mlp_out)?, batch)
    }

    fn unembed(&self, resid: &Tensor) -> Result<Tensor> {
        project(&self.lm_head, &self.norm.forward(resid)?)
    }

    fn mlp_out_weight(&self, layer: usize) -> Option<&Tensor> {
        self.blocks.get(layer).map(|b| b.mlp.down_proj.weight())
    }
}
