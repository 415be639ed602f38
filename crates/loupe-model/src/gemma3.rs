//! The Gemma 3 family (text models: Gemma 3 270M, 1B, ...), with a hook at every [`HookPoint`].
//!
//! What differs from llama: the token embeddings are scaled by √d_model; every RMSNorm multiplies
//! by (1 + w); attention and MLP each have a norm before and after them (`hook_attn_out` and
//! `hook_mlp_out` are the post-norms' outputs, what is added to the residual stream); q and k are
//! RMS-normalised per head before the rotary embedding; the MLP is GeGLU (tanh GELU); five local
//! layers (sliding window, rotary base 10,000) alternate with one global layer (full attention,
//! the file's rotary base); the unembedding is tied to the embedding.
//!
//! Loaded from GGUF files, whose norm weights llama.cpp's converter stores as 1 + w already.

use candle_core::{Device, Module, Tensor, D};
use candle_nn::{embedding, linear_no_bias, rms_norm, Embedding, Linear, RmsNorm, VarBuilder};

use crate::gguf::GgufFile;
use crate::layers::{
    attend, check_positive, check_rope, fused_linear, project, split_qkv, AttentionShape, Pass, Rope,
};
use crate::network::{ModelSpec, Network};
use crate::{Batch, HookPoint, Hooks, Result};

/// Every this-many-th layer is global (full attention); the others are local (Gemma 3's 5:1).
const GLOBAL_EVERY: usize = 6;
/// The rotary base of local layers (Hugging Face's `rope_local_base_freq`; GGUF files do not
/// record it).
const LOCAL_ROPE_BASE: f32 = 10_000.0;

/// The shape of a Gemma 3 text model.
#[derive(Clone, Debug, PartialEq)]
struct Gemma3Config {
    hidden_size: usize,
    intermediate_size: usize,
    vocab_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: usize,
    head_dim: usize,
    rms_norm_eps: f64,
    /// Rotary base of the global layers.
    rope_theta: f32,
    sliding_window: usize,
    max_position_embeddings: usize,
}

impl Gemma3Config {
    fn from_gguf(file: &GgufFile) -> Result<Self> {
        let meta = file.meta();
        let key = |field: &str| file.key(field);
        for unsupported in [
            "rope.scaling.type",
            "attn_logit_softcapping",
            "final_logit_softcapping",
        ] {
            if meta.has(&key(unsupported)) {
                return Err(file.invalid(format!(
                    "{} is set; loupe runs Gemma 3 models without it (such as Gemma 3 270M) only",
                    key(unsupported)
                )));
            }
        }
        let n_heads = meta.u64(&key("attention.head_count"))? as usize;
        let hidden_size = meta.u64(&key("embedding_length"))? as usize;
        let head_dim = meta.u64_or(
            &key("attention.key_length"),
            (hidden_size / n_heads.max(1)) as u64,
        )? as usize;
        let value_dim = meta.u64_or(&key("attention.value_length"), head_dim as u64)? as usize;
        if value_dim != head_dim {
            return Err(file.invalid(format!(
                "{} ({value_dim}) differs from {} ({head_dim}); loupe needs them equal",
                key("attention.value_length"),
                key("attention.key_length")
            )));
        }
        let config = Gemma3Config {
            hidden_size,
            intermediate_size: meta.u64(&key("feed_forward_length"))? as usize,
            vocab_size: meta.u64_or(&key("vocab_size"), file.tokenizer.tokens.len() as u64)? as usize,
            num_hidden_layers: meta.u64(&key("block_count"))? as usize,
            num_attention_heads: n_heads,
            num_key_value_heads: meta.u64_or(&key("attention.head_count_kv"), n_heads as u64)? as usize,
            head_dim,
            rms_norm_eps: meta.f64(&key("attention.layer_norm_rms_epsilon"))?,
            rope_theta: meta.f64_or(&key("rope.freq_base"), 1_000_000.0)? as f32,
            sliding_window: meta.u64(&key("attention.sliding_window"))? as usize,
            max_position_embeddings: meta.u64(&key("context_length"))? as usize,
        };
        config.validate(&file.arch).map_err(|e| file.invalid(e))?;
        Ok(config)
    }

    fn validate(&self, arch: &str) -> std::result::Result<(), String> {
        let sizes = [
            ("embedding_length", self.hidden_size),
            ("feed_forward_length", self.intermediate_size),
            ("vocab_size", self.vocab_size),
            ("block_count", self.num_hidden_layers),
            ("attention.head_count", self.num_attention_heads),
            ("attention.head_count_kv", self.num_key_value_heads),
            ("attention.sliding_window", self.sliding_window),
        ];
        check_positive(sizes.map(|(field, value)| (format!("{arch}.{field}"), value)))?;
        if !self.num_attention_heads.is_multiple_of(self.num_key_value_heads) {
            return Err(format!(
                "{arch}.attention.head_count {} must be a multiple of {arch}.attention.head_count_kv {}",
                self.num_attention_heads, self.num_key_value_heads
            ));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            return Err(format!(
                "{arch}.attention.layer_norm_rms_epsilon is {}; it must be a small positive number",
                self.rms_norm_eps
            ));
        }
        check_rope(
            self.rope_theta,
            self.head_dim,
            self.max_position_embeddings,
            |field| match field {
                "context" => format!("{arch}.context_length"),
                "rotary_dim" => format!("{arch}.attention.key_length"),
                _ => format!("{arch}.rope.freq_base"),
            },
        )
    }

    fn is_local(&self, layer: usize) -> bool {
        !(layer + 1).is_multiple_of(GLOBAL_EVERY)
    }
}

/// Builds a Gemma 3 model from a GGUF file (`general.architecture = gemma3`).
pub(crate) fn from_gguf(mut file: GgufFile) -> Result<Gemma3> {
    let config = Gemma3Config::from_gguf(&file)?;
    let tensors = file.renamed_tensors(hf_name)?;
    let vb = VarBuilder::from_tensors(tensors, candle_core::DType::F32, &file.device);
    Gemma3::load(vb, config).map_err(|e| file.invalid(e))
}

/// The Hugging Face name of a llama.cpp Gemma 3 tensor.
fn hf_name(gguf_name: &str) -> Option<String> {
    match gguf_name {
        "token_embd.weight" => return Some("model.embed_tokens.weight".into()),
        "output_norm.weight" => return Some("model.norm.weight".into()),
        _ => {}
    }
    let rest = gguf_name.strip_prefix("blk.")?;
    let (layer, part) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let hf_part = match part {
        "attn_norm.weight" => "input_layernorm.weight",
        "attn_q.weight" => "self_attn.q_proj.weight",
        "attn_k.weight" => "self_attn.k_proj.weight",
        "attn_v.weight" => "self_attn.v_proj.weight",
        "attn_q_norm.weight" => "self_attn.q_norm.weight",
        "attn_k_norm.weight" => "self_attn.k_norm.weight",
        "attn_output.weight" => "self_attn.o_proj.weight",
        "post_attention_norm.weight" => "post_attention_layernorm.weight",
        "ffn_norm.weight" => "pre_feedforward_layernorm.weight",
        "ffn_gate.weight" => "mlp.gate_proj.weight",
        "ffn_up.weight" => "mlp.up_proj.weight",
        "ffn_down.weight" => "mlp.down_proj.weight",
        "post_ffw_norm.weight" => "post_feedforward_layernorm.weight",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf_part}"))
}

struct Block {
    input_layernorm: RmsNorm,
    qkv_proj: Linear,
    q_norm: RmsNorm,
    k_norm: RmsNorm,
    o_proj: Linear,
    post_attention_layernorm: RmsNorm,
    pre_feedforward_layernorm: RmsNorm,
    /// gate and up projections fused: `[gate | up]`.
    gate_up_proj: Linear,
    down_proj: Linear,
    post_feedforward_layernorm: RmsNorm,
    local: bool,
}

impl Block {
    /// Norm weights are read as the multipliers (1 + w), as GGUF files store them.
    fn load(vb: VarBuilder, cfg: &Gemma3Config, layer: usize) -> Result<Self> {
        let (d, m, hd, eps) = (
            cfg.hidden_size,
            cfg.intermediate_size,
            cfg.head_dim,
            cfg.rms_norm_eps,
        );
        let (q_dim, kv_dim) = (cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd);
        let attn = vb.pp("self_attn");
        let mlp = vb.pp("mlp");
        Ok(Block {
            input_layernorm: rms_norm(d, eps, vb.pp("input_layernorm"))?,
            qkv_proj: fused_linear(
                &attn,
                d,
                &[("q_proj", q_dim), ("k_proj", kv_dim), ("v_proj", kv_dim)],
                false,
            )?,
            q_norm: rms_norm(hd, eps, attn.pp("q_norm"))?,
            k_norm: rms_norm(hd, eps, attn.pp("k_norm"))?,
            o_proj: linear_no_bias(q_dim, d, attn.pp("o_proj"))?,
            post_attention_layernorm: rms_norm(d, eps, vb.pp("post_attention_layernorm"))?,
            pre_feedforward_layernorm: rms_norm(d, eps, vb.pp("pre_feedforward_layernorm"))?,
            gate_up_proj: fused_linear(&mlp, d, &[("gate_proj", m), ("up_proj", m)], false)?,
            down_proj: linear_no_bias(m, d, mlp.pp("down_proj"))?,
            post_feedforward_layernorm: rms_norm(d, eps, vb.pp("post_feedforward_layernorm"))?,
            local: cfg.is_local(layer),
        })
    }
}

/// A Gemma 3 text decoder with hooks, run by [`crate::Model`].
pub(crate) struct Gemma3 {
    config: Gemma3Config,
    spec: ModelSpec,
    embed_tokens: Embedding,
    blocks: Vec<Block>,
    norm: RmsNorm,
    lm_head: Linear,
    shape: AttentionShape,
    /// `[local, global]` rotary tables.
    ropes: [Rope; 2],
}

impl Gemma3 {
    fn load(vb: VarBuilder, config: Gemma3Config) -> Result<Self> {
        let embed_tokens = embedding(config.vocab_size, config.hidden_size, vb.pp("model.embed_tokens"))?;
        let lm_head = Linear::new(embed_tokens.embeddings().clone(), None);
        let blocks = (0..config.num_hidden_layers)
            .map(|l| Block::load(vb.pp(format!("model.layers.{l}")), &config, l))
            .collect::<Result<Vec<_>>>()?;
        let norm = rms_norm(config.hidden_size, config.rms_norm_eps, vb.pp("model.norm"))?;
        let (hd, context) = (config.head_dim, config.max_position_embeddings);
        let ropes = [
            Rope::new(LOCAL_ROPE_BASE, hd, context, vb.device())?,
            Rope::new(config.rope_theta, hd, context, vb.device())?,
        ];
        let spec = ModelSpec {
            family: "gemma3",
            d_model: config.hidden_size,
            d_mlp: config.intermediate_size,
            n_layers: config.num_hidden_layers,
            n_heads: config.num_attention_heads,
            n_kv_heads: config.num_key_value_heads,
            d_head: hd,
            vocab_size: config.vocab_size,
            context,
            learned_positions: false,
            parallel_attention: false,
        };
        let shape = AttentionShape {
            n_heads: config.num_attention_heads,
            n_kv_heads: config.num_key_value_heads,
            head_dim: hd,
            // query_pre_attn_scalar is head_dim for the Gemma 3 models llama.cpp converts so.
            scale: 1.0 / (hd as f64).sqrt(),
        };
        Ok(Gemma3 {
            config,
            spec,
            embed_tokens,
            blocks,
            norm,
            lm_head,
            shape,
            ropes,
        })
    }
}

impl Network for Gemma3 {
    fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    fn device(&self) -> &Device {
        self.embed_tokens.embeddings().device()
    }

    fn ropes(&self) -> &[Rope] {
        &self.ropes
    }

    fn sliding_window(&self) -> Option<usize> {
        Some(self.config.sliding_window)
    }

    fn embed(&self, batch: &Batch, hooks: &mut Hooks) -> Result<Tensor> {
        let scale = (self.config.hidden_size as f64).sqrt();
        let x = (self.embed_tokens.forward(batch.ids())? * scale)?;
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
        let (q, k, v) = split_qkv(&project(&block.qkv_proj, &h)?, &self.shape)?;
        let (q, k) = (block.q_norm.forward(&q)?, block.k_norm.forward(&k)?);
        let (rope, mask) = match block.local {
            true => (Some(&pass.ropes[0]), pass.local_mask()),
            false => (Some(&pass.ropes[1]), pass.mask.as_ref()),
        };
        let z = attend(layer, &self.shape, (q, k, v), rope, mask, cache, batch, hooks)?;
        let attn_out = block
            .post_attention_layernorm
            .forward(&project(&block.o_proj, &z)?)?;
        let attn_out = hooks.apply(HookPoint::AttnOut(layer), attn_out, batch)?;
        let x = hooks.apply(HookPoint::ResidMid(layer), (x + attn_out)?, batch)?;

        let h = block.pre_feedforward_layernorm.forward(&x)?;
        let h = hooks.apply(HookPoint::Ln2Normalized(layer), h, batch)?;
        let gate_up = project(&block.gate_up_proj, &h)?;
        let width = self.config.intermediate_size;
        let gate = gate_up.narrow(D::Minus1, 0, width)?;
        let up = gate_up.narrow(D::Minus1, width, width)?;
        let neurons = hooks.apply(HookPoint::MlpPost(layer), (gate.gelu()? * up)?, batch)?;
        let mlp_out = block
            .post_feedforward_layernorm
            .forward(&project(&block.down_proj, &neurons)?)?;
        let mlp_out = hooks.apply(HookPoint::MlpOut(layer), mlp_out, batch)?;
        hooks.apply(HookPoint::ResidPost(layer), (x + mlp_out)?, batch)
    }

    fn unembed(&self, resid: &Tensor) -> Result<Tensor> {
        project(&self.lm_head, &self.norm.forward(resid)?)
    }

    /// `None`: `hook_mlp_out` is the post-MLP norm of the down projection, which no matrix gives.
    fn mlp_out_weight(&self, _layer: usize) -> Option<&Tensor> {
        None
    }
}
