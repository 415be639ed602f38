//! The GPT-NeoX family (Pythia), from Hugging Face model directories, with a hook at every
//! [`HookPoint`] it has.
//!
//! What differs from llama: LayerNorm with a bias, biases on every projection, a GELU MLP (exact
//! erf GELU), rotary embedding on the first `rotary_pct` of each head only, q/k/v fused per head
//! in the checkpoint (`[head][q, k, v][d_head]`, regrouped when loaded), an untied unembedding,
//! and, with `use_parallel_residual` (Pythia's setting), attention and MLP reading the same
//! residual stream: `x + attn(ln1(x)) + mlp(ln2(x))`, so such a block has no `hook_resid_mid`.

use candle_core::{Device, Module, Tensor};
use candle_nn::{embedding, layer_norm, linear, Embedding, LayerNorm, Linear, VarBuilder};
use serde::Deserialize;

use crate::layers::{attend, check_positive, check_rope, project, split_qkv, AttentionShape, Pass, Rope};
use crate::network::{ModelSpec, Network};
use crate::{Batch, Error, HookPoint, Hooks, Result};

/// The fields of a GPT-NeoX `config.json` that loupe reads.
#[derive(Clone, Debug, Deserialize)]
struct NeoxConfig {
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    max_position_embeddings: usize,
    #[serde(default = "default_rotary_pct")]
    rotary_pct: f64,
    #[serde(default = "default_rotary_base")]
    rotary_emb_base: f32,
    #[serde(default = "default_eps")]
    layer_norm_eps: f64,
    #[serde(default = "default_true")]
    use_parallel_residual: bool,
    #[serde(default = "default_activation")]
    hidden_act: String,
    #[serde(default)]
    tie_word_embeddings: bool,
    #[serde(default = "default_true")]
    attention_bias: bool,
}

fn default_rotary_pct() -> f64 {
    0.25
}
fn default_rotary_base() -> f32 {
    10_000.0
}
fn default_eps() -> f64 {
    1e-5
}
fn default_true() -> bool {
    true
}
fn default_activation() -> String {
    "gelu".into()
}

impl NeoxConfig {
    fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Dimensions of each head that the rotary embedding turns (HF: `int(head_size * rotary_pct)`).
    fn rotary_dim(&self) -> usize {
        (self.head_dim() as f64 * self.rotary_pct) as usize
    }

    fn validate(&self) -> std::result::Result<(), String> {
        check_positive(
            [
                ("vocab_size", self.vocab_size),
                ("hidden_size", self.hidden_size),
                ("num_hidden_layers", self.num_hidden_layers),
                ("num_attention_heads", self.num_attention_heads),
                ("intermediate_size", self.intermediate_size),
            ]
            .map(|(field, value)| (field.to_string(), value)),
        )?;
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(format!(
                "hidden_size {} must split into num_attention_heads {} heads",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if self.hidden_act != "gelu" {
            return Err(format!(
                "hidden_act is '{}'; loupe runs GPT-NeoX with gelu only",
                self.hidden_act
            ));
        }
        if !self.attention_bias {
            return Err("attention_bias is false; loupe runs GPT-NeoX with biases (as Pythia)".into());
        }
        if !(self.rotary_pct > 0.0 && self.rotary_pct <= 1.0) {
            return Err(format!("rotary_pct is {}; it must be in (0, 1]", self.rotary_pct));
        }
        check_rope(
            self.rotary_emb_base,
            self.rotary_dim(),
            self.max_position_embeddings,
            |field| match field {
                "context" => "max_position_embeddings".into(),
                "rotary_dim" => "head size × rotary_pct".into(),
                _ => "rotary_emb_base".into(),
            },
        )
    }
}

/// Builds a GPT-NeoX model from a `config.json` and weights named as `GPTNeoXForCausalLM` saves
/// them.
pub(crate) fn from_hf(json: &str, vb: VarBuilder) -> Result<Neox> {
    let config: NeoxConfig =
        serde_json::from_str(json).map_err(|e| Error::Invalid(format!("config.json: {e}")))?;
    config
        .validate()
        .map_err(|e| Error::Invalid(format!("config.json: {e}")))?;
    Neox::load(vb, config)
}

/// The fused `query_key_value` projection, its output regrouped from `[head][q, k, v][d_head]`
/// to `[q | k | v]` (each `[head][d_head]`), the layout `split_qkv` reads.
fn regrouped_qkv(vb: VarBuilder, config: &NeoxConfig) -> Result<Linear> {
    let (d, nh, hd) = (config.hidden_size, config.num_attention_heads, config.head_dim());
    let weight = vb
        .get((3 * d, d), "weight")?
        .reshape((nh, 3, hd, d))?
        .transpose(0, 1)?
        .reshape((3 * d, d))?;
    let bias = vb
        .get(3 * d, "bias")?
        .reshape((nh, 3, hd))?
        .transpose(0, 1)?
        .reshape(3 * d)?;
    Ok(Linear::new(weight, Some(bias)))
}

struct Block {
    input_layernorm: LayerNorm,
    qkv: Linear,
    dense: Linear,
    post_attention_layernorm: LayerNorm,
    dense_h_to_4h: Linear,
    dense_4h_to_h: Linear,
}

/// A GPT-NeoX decoder with hooks, run by [`crate::Model`].
pub(crate) struct Neox {
    spec: ModelSpec,
    embed_in: Embedding,
    blocks: Vec<Block>,
    final_layer_norm: LayerNorm,
    embed_out: Linear,
    shape: AttentionShape,
    rope: [Rope; 1],
}

impl Neox {
    fn load(vb: VarBuilder, config: NeoxConfig) -> Result<Self> {
        let (d, m, eps) = (
            config.hidden_size,
            config.intermediate_size,
            config.layer_norm_eps,
        );
        let model = vb.pp("gpt_neox");
        let blocks = (0..config.num_hidden_layers)
            .map(|l| {
                let vb = model.pp(format!("layers.{l}"));
                Ok(Block {
                    input_layernorm: layer_norm(d, eps, vb.pp("input_layernorm"))?,
                    qkv: regrouped_qkv(vb.pp("attention.query_key_value"), &config)?,
                    dense: linear(d, d, vb.pp("attention.dense"))?,
                    post_attention_layernorm: layer_norm(d, eps, vb.pp("post_attention_layernorm"))?,
                    dense_h_to_4h: linear(d, m, vb.pp("mlp.dense_h_to_4h"))?,
                    dense_4h_to_h: linear(m, d, vb.pp("mlp.dense_4h_to_h"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let embed_in = embedding(config.vocab_size, d, model.pp("embed_in"))?;
        let embed_out = match config.tie_word_embeddings {
            true => Linear::new(embed_in.embeddings().clone(), None),
            false => candle_nn::linear_no_bias(d, config.vocab_size, vb.pp("embed_out"))?,
        };
        let head_dim = config.head_dim();
        let rope = Rope::new(
            config.rotary_emb_base,
            config.rotary_dim(),
            config.max_position_embeddings,
            vb.device(),
        )?;
        Ok(Neox {
            spec: ModelSpec {
                family: "gpt_neox",
                d_model: d,
                d_mlp: m,
                n_layers: config.num_hidden_layers,
                n_heads: config.num_attention_heads,
                n_kv_heads: config.num_attention_heads,
                d_head: head_dim,
                vocab_size: config.vocab_size,
                context: config.max_position_embeddings,
                learned_positions: false,
                parallel_attention: config.use_parallel_residual,
            },
            embed_in,
            blocks,
            final_layer_norm: layer_norm(d, eps, model.pp("final_layer_norm"))?,
            embed_out,
            shape: AttentionShape {
                n_heads: config.num_attention_heads,
                n_kv_heads: config.num_attention_heads,
                head_dim,
                scale: 1.0 / (head_dim as f64).sqrt(),
            },
            rope: [rope],
        })
    }
}

impl Network for Neox {
    fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    fn device(&self) -> &Device {
        self.embed_in.embeddings().device()
    }

    fn ropes(&self) -> &[Rope] {
        &self.rope
    }

    fn embed(&self, batch: &Batch, hooks: &mut Hooks) -> Result<Tensor> {
        hooks.apply(HookPoint::Embed, self.embed_in.forward(batch.ids())?, batch)
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
        let h = hooks.apply(
            HookPoint::Ln1Normalized(layer),
            block.input_layernorm.forward(&x)?,
            batch,
        )?;
        let qkv = split_qkv(&project(&block.qkv, &h)?, &self.shape)?;
        let rope = Some(&pass.ropes[0]);
        let z = attend(
            layer,
            &self.shape,
            qkv,
            rope,
            pass.mask.as_ref(),
            cache,
            batch,
            hooks,
        )?;
        let attn_out = hooks.apply(HookPoint::AttnOut(layer), project(&block.dense, &z)?, batch)?;

        // Parallel: the MLP reads the block's input; sequential: the residual after attention.
        let mid = match self.spec.parallel_attention {
            true => None,
            false => Some(hooks.apply(HookPoint::ResidMid(layer), (&x + &attn_out)?, batch)?),
        };
        let h = block
            .post_attention_layernorm
            .forward(mid.as_ref().unwrap_or(&x))?;
        let h = hooks.apply(HookPoint::Ln2Normalized(layer), h, batch)?;
        let neurons = project(&block.dense_h_to_4h, &h)?.gelu_erf()?;
        let neurons = hooks.apply(HookPoint::MlpPost(layer), neurons, batch)?;
        let mlp_out = hooks.apply(
            HookPoint::MlpOut(layer),
            project(&block.dense_4h_to_h, &neurons)?,
            batch,
        )?;
        let out = match mid {
            None => ((mlp_out + attn_out)? + x)?,
            Some(mid) => (mid + mlp_out)?,
        };
        hooks.apply(HookPoint::ResidPost(layer), out, batch)
    }

    fn unembed(&self, resid: &Tensor) -> Result<Tensor> {
        project(&self.embed_out, &self.final_layer_norm.forward(resid)?)
    }

    fn mlp_out_weight(&self, layer: usize) -> Option<&Tensor> {
        self.blocks.get(layer).map(|b| b.dense_4h_to_h.weight())
    }
}
