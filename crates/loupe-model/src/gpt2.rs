//! The GPT-2 family, from Hugging Face model directories, with a hook at every [`HookPoint`].
//!
//! What differs from llama: learned position embeddings (`hook_pos_embed`, added to the token
//! embeddings before block 0), LayerNorm with a bias, biases on every projection, a GELU MLP
//! (tanh approximation, `gelu_new`), no rotary embedding, and `Conv1D` weights stored
//! `[in, out]` (transposed to `[out, in]` when loaded). The unembedding is tied to the embedding.

use candle_core::{Device, Module, Tensor};
use candle_nn::{embedding, layer_norm, Embedding, LayerNorm, Linear, VarBuilder};
use serde::Deserialize;

use crate::layers::{attend, check_positive, project, split_qkv, AttentionShape, Pass};
use crate::network::{ModelSpec, Network};
use crate::{Batch, Error, HookPoint, Hooks, Result};

/// The fields of a GPT-2 `config.json` that loupe reads.
#[derive(Clone, Debug, Deserialize)]
struct Gpt2Config {
    vocab_size: usize,
    n_positions: usize,
    n_embd: usize,
    n_layer: usize,
    n_head: usize,
    n_inner: Option<usize>,
    #[serde(default = "default_eps")]
    layer_norm_epsilon: f64,
    #[serde(default = "default_activation")]
    activation_function: String,
    #[serde(default = "default_true")]
    scale_attn_weights: bool,
    #[serde(default)]
    scale_attn_by_inverse_layer_idx: bool,
}

fn default_eps() -> f64 {
    1e-5
}
fn default_activation() -> String {
    "gelu_new".into()
}
fn default_true() -> bool {
    true
}

impl Gpt2Config {
    fn validate(&self) -> std::result::Result<(), String> {
        check_positive(
            [
                ("vocab_size", self.vocab_size),
                ("n_positions", self.n_positions),
                ("n_embd", self.n_embd),
                ("n_layer", self.n_layer),
                ("n_head", self.n_head),
            ]
            .map(|(field, value)| (field.to_string(), value)),
        )?;
        if !self.n_embd.is_multiple_of(self.n_head) {
            return Err(format!(
                "n_embd {} must split into n_head {} heads",
                self.n_embd, self.n_head
            ));
        }
        if self.activation_function != "gelu_new" && self.activation_function != "gelu_pytorch_tanh" {
            return Err(format!(
                "activation_function is '{}'; loupe runs GPT-2 with gelu_new only",
                self.activation_function
            ));
        }
        if !self.scale_attn_weights || self.scale_attn_by_inverse_layer_idx {
            return Err(
                "scale_attn_weights must be true and scale_attn_by_inverse_layer_idx false (as in GPT-2)"
                    .into(),
            );
        }
        Ok(())
    }
}

/// Builds a GPT-2 model from a `config.json` and weights named as `GPT2LMHeadModel` saves them
/// (with or without the `transformer.` prefix).
pub(crate) fn from_hf(json: &str, vb: VarBuilder) -> Result<Gpt2> {
    let config: Gpt2Config =
        serde_json::from_str(json).map_err(|e| Error::Invalid(format!("config.json: {e}")))?;
    config
        .validate()
        .map_err(|e| Error::Invalid(format!("config.json: {e}")))?;
    let vb = match vb.contains_tensor("transformer.wte.weight") {
        true => vb.pp("transformer"),
        false => vb,
    };
    Gpt2::load(vb, config)
}

/// A `Conv1D` projection (weight `[in, out]`) as a `Linear` (weight `[out, in]`).
fn conv1d(vb: VarBuilder, in_dim: usize, out_dim: usize) -> Result<Linear> {
    let weight = vb.get((in_dim, out_dim), "weight")?.t()?.contiguous()?;
    Ok(Linear::new(weight, Some(vb.get(out_dim, "bias")?)))
}

struct Block {
    ln_1: LayerNorm,
    c_attn: Linear,
    c_proj: Linear,
    ln_2: LayerNorm,
    c_fc: Linear,
    mlp_c_proj: Linear,
}

/// A GPT-2 decoder with hooks, run by [`crate::Model`].
pub(crate) struct Gpt2 {
    spec: ModelSpec,
    wte: Embedding,
    wpe: Embedding,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    lm_head: Linear,
    shape: AttentionShape,
}

impl Gpt2 {
    fn load(vb: VarBuilder, config: Gpt2Config) -> Result<Self> {
        let (d, eps) = (config.n_embd, config.layer_norm_epsilon);
        let d_mlp = config.n_inner.unwrap_or(4 * d);
        let blocks = (0..config.n_layer)
            .map(|l| {
                let vb = vb.pp(format!("h.{l}"));
                Ok(Block {
                    ln_1: layer_norm(d, eps, vb.pp("ln_1"))?,
                    c_attn: conv1d(vb.pp("attn.c_attn"), d, 3 * d)?,
                    c_proj: conv1d(vb.pp("attn.c_proj"), d, d)?,
                    ln_2: layer_norm(d, eps, vb.pp("ln_2"))?,
                    c_fc: conv1d(vb.pp("mlp.c_fc"), d, d_mlp)?,
                    mlp_c_proj: conv1d(vb.pp("mlp.c_proj"), d_mlp, d)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let wte = embedding(config.vocab_size, d, vb.pp("wte"))?;
        let head_dim = d / config.n_head;
        Ok(Gpt2 {
            spec: ModelSpec {
                family: "gpt2",
                d_model: d,
                d_mlp,
                n_layers: config.n_layer,
                n_heads: config.n_head,
                n_kv_heads: config.n_head,
                d_head: head_dim,
                vocab_size: config.vocab_size,
                context: config.n_positions,
                learned_positions: true,
                parallel_attention: false,
            },
            lm_head: Linear::new(wte.embeddings().clone(), None),
            wte,
            wpe: embedding(config.n_positions, d, vb.pp("wpe"))?,
            blocks,
            ln_f: layer_norm(d, eps, vb.pp("ln_f"))?,
            shape: AttentionShape {
                n_heads: config.n_head,
                n_kv_heads: config.n_head,
                head_dim,
                scale: 1.0 / (head_dim as f64).sqrt(),
            },
        })
    }
}

impl Network for Gpt2 {
    fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    fn device(&self) -> &Device {
        self.wte.embeddings().device()
    }

    fn embed(&self, batch: &Batch, hooks: &mut Hooks) -> Result<Tensor> {
        let tokens = hooks.apply(HookPoint::Embed, self.wte.forward(batch.ids())?, batch)?;
        let positions = batch.rope_positions()?.reshape((batch.rows(), batch.columns()))?;
        let positions = hooks.apply(HookPoint::PosEmbed, self.wpe.forward(&positions)?, batch)?;
        Ok((tokens + positions)?)
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
        let h = hooks.apply(HookPoint::Ln1Normalized(layer), block.ln_1.forward(&x)?, batch)?;
        let qkv = split_qkv(&project(&block.c_attn, &h)?, &self.shape)?;
        let z = attend(
            layer,
            &self.shape,
            qkv,
            None,
            pass.mask.as_ref(),
            cache,
            batch,
            hooks,
        )?;
        let attn_out = hooks.apply(HookPoint::AttnOut(layer), project(&block.c_proj, &z)?, batch)?;
        let x = hooks.apply(HookPoint::ResidMid(layer), (x + attn_out)?, batch)?;

        let h = hooks.apply(HookPoint::Ln2Normalized(layer), block.ln_2.forward(&x)?, batch)?;
        let neurons = project(&block.c_fc, &h)?.gelu()?;
        let neurons = hooks.apply(HookPoint::MlpPost(layer), neurons, batch)?;
        let mlp_out = hooks.apply(
            HookPoint::MlpOut(layer),
            project(&block.mlp_c_proj, &neurons)?,
            batch,
        )?;
        hooks.apply(HookPoint::ResidPost(layer), (x + mlp_out)?, batch)
    }

    fn unembed(&self, resid: &Tensor) -> Result<Tensor> {
        project(&self.lm_head, &self.ln_f.forward(resid)?)
    }

    fn mlp_out_weight(&self, layer: usize) -> Option<&Tensor> {
        self.blocks.get(layer).map(|b| b.mlp_c_proj.weight())
    }
}
