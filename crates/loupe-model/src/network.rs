//! What every model family provides, so that the rest of loupe needs no family-specific code:
//! [`ModelSpec`] (its shape and which hook points it has) and the `Network` trait (embedding, one
//! block, unembedding), which [`crate::Model`] runs with hooks and a KV cache.

use candle_core::{Device, Tensor};
use serde::Serialize;

use crate::layers::{Pass, Rope};
use crate::{Batch, Error, HookLayout, HookPoint, Hooks, Result};

/// The model families loupe runs, by the name their files give (`general.architecture` in a
/// GGUF file, `model_type` in `config.json`), for error messages.
pub const SUPPORTED_FAMILIES: &str =
    "llama (Llama, SmolLM, TinyLlama), qwen2, gemma3, gpt2, gpt_neox (Pythia)";

/// The shape of a loaded model, whatever its family.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ModelSpec {
    /// The family: `llama`, `qwen2`, `gemma3`, `gpt2` or `gpt_neox`.
    pub family: &'static str,
    /// Residual stream width.
    pub d_model: usize,
    /// MLP hidden width (the width of `mlp.hook_post`).
    pub d_mlp: usize,
    /// Transformer blocks.
    pub n_layers: usize,
    /// Attention (query) heads per layer.
    pub n_heads: usize,
    /// Key/value heads per layer (fewer than query heads under grouped-query attention).
    pub n_kv_heads: usize,
    /// Width of one head.
    pub d_head: usize,
    /// Tokens in the vocabulary (rows of the embedding and of the unembedding).
    pub vocab_size: usize,
    /// The context window, in tokens.
    pub context: usize,
    /// Whether positions are learned embeddings (GPT-2: `hook_pos_embed`) rather than rotary.
    pub learned_positions: bool,
    /// Whether attention and MLP read the same residual stream in parallel (GPT-NeoX): such a
    /// block has no `hook_resid_mid`.
    pub parallel_attention: bool,
}

impl ModelSpec {
    /// Whether the model has this hook point (its layer within the model's depth).
    pub fn has(&self, hook: HookPoint) -> bool {
        if hook.check_depth(self.n_layers).is_err() {
            return false;
        }
        match hook {
            HookPoint::PosEmbed => self.learned_positions,
            HookPoint::ResidMid(_) => !self.parallel_attention,
            _ => true,
        }
    }

    /// The model's hook points, in forward order.
    pub fn hook_points(&self) -> Vec<HookPoint> {
        HookPoint::all(self.n_layers)
            .into_iter()
            .filter(|h| self.has(*h))
            .collect()
    }

    /// An error unless the model has `hook`, naming why not.
    pub fn check(&self, hook: HookPoint) -> Result<()> {
        hook.check_depth(self.n_layers)?;
        if self.has(hook) {
            return Ok(());
        }
        let why = match hook {
            HookPoint::PosEmbed => "its positions are rotary, not learned embeddings",
            _ => {
                "its attention and MLP run in parallel from the same residual stream; use \
                  hook_resid_pre, or hook_attn_out and hook_mlp_out"
            }
        };
        Err(Error::Invalid(format!(
            "a {} model has no {hook}: {why}",
            self.family
        )))
    }

    /// The shape of the activation at `hook`, with `batch` and `pos` (and `q_pos`, `k_pos`) for
    /// the sizes that depend on the input: what `loupe hooks` lists.
    pub fn shape(&self, hook: HookPoint) -> String {
        match hook {
            HookPoint::AttnQ(_) | HookPoint::AttnZ(_) => {
                format!("[batch, pos, {}, {}]", self.n_heads, self.d_head)
            }
            HookPoint::AttnK(_) | HookPoint::AttnV(_) => {
                format!("[batch, pos, {}, {}]", self.n_kv_heads, self.d_head)
            }
            HookPoint::AttnScores(_) | HookPoint::AttnPattern(_) => {
                format!("[batch, {}, q_pos, k_pos]", self.n_heads)
            }
            HookPoint::MlpPost(_) => format!("[batch, pos, {}]", self.d_mlp),
            _ => format!("[batch, pos, {}]", self.d_model),
        }
    }

    /// The width of one token's activation at `hook` (per-head activations flattened, as
    /// activation stores and SAEs on `hook_z` hold them). An error for the attention pattern and
    /// scores, whose width is the number of keys.
    pub fn width(&self, hook: HookPoint) -> Result<usize> {
        match hook {
            HookPoint::AttnQ(_) | HookPoint::AttnZ(_) => Ok(self.n_heads * self.d_head),
            HookPoint::AttnK(_) | HookPoint::AttnV(_) => Ok(self.n_kv_heads * self.d_head),
            HookPoint::MlpPost(_) => Ok(self.d_mlp),
            _ if hook.layout() == HookLayout::Pattern => Err(Error::Invalid(format!(
                "{hook} has one entry per key position, not a fixed width: capture it with \
                 Hooks, not into an activation store or an SAE"
            ))),
            _ => Ok(self.d_model),
        }
    }
}

/// One family's network: what [`crate::Model`] needs to run it. A family file implements it for
/// its own model struct; the shared loop (hooks, KV cache, stopping after the deepest hook) is
/// [`crate::Model`]'s.
pub(crate) trait Network: Send + Sync {
    /// The model's shape.
    fn spec(&self) -> &ModelSpec;

    /// The device the weights live on.
    fn device(&self) -> &Device;

    /// The rotary tables each block may use (`Pass::ropes` holds them in this order for a batch).
    fn ropes(&self) -> &[Rope] {
        &[]
    }

    /// The sliding window of the family's local-attention layers, if it has any.
    fn sliding_window(&self) -> Option<usize> {
        None
    }

    /// The residual stream entering block 0, with `hook_embed` (and `hook_pos_embed`) applied.
    fn embed(&self, batch: &Batch, hooks: &mut Hooks) -> Result<Tensor>;

    /// Block `layer`, with its hook points in forward order.
    fn block(
        &self,
        layer: usize,
        x: Tensor,
        pass: &Pass,
        cache: Option<&mut candle_nn::kv_cache::KvCache>,
        hooks: &mut Hooks,
    ) -> Result<Tensor>;

    /// Final norm and unembedding of residual-stream vectors `[..., d_model]`.
    fn unembed(&self, resid: &Tensor) -> Result<Tensor>;

    /// Block `layer`'s MLP output projection, `[d_model, d_mlp]`, when `hook_mlp_out` is that
    /// projection of `mlp.hook_post` (`None` where a norm follows it).
    fn mlp_out_weight(&self, layer: usize) -> Option<&Tensor>;
}
