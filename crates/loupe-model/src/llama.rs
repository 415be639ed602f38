//! The llama family (Llama 2/3 without rope scaling, TinyLlama, SmolLM/SmolLM2), with a hook at
//! every [`HookPoint`]. Weights are named as in Hugging Face checkpoints
//! (`model.layers.0.self_attn.q_proj.weight`, ...); GGUF files are renamed into this layout when
//! they are loaded (see `gguf.rs`).

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{embedding, linear_no_bias, rms_norm, Embedding, Linear, RmsNorm, VarBuilder};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

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
}

impl LlamaConfig {
    /// Width of one attention head: `hidden_size / num_attention_heads`.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Parses a Hugging Face `config.json` (through candle-transformers' llama config).
    pub fn from_hf_json(json: &str) -> std::result::Result<Self, String> {
        check_hf_architecture(json)?;
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
        };
        config.validate()?;
        Ok(config)
    }

    pub(crate) fn validate(&self) -> std::result::Result<(), String> {
        self.validate_named(|field| field)
    }

    /// Checks that the config describes a model that can be built, before anything is allocated
    /// from it: a corrupt file's sizes must be an error, not a 100 GB allocation. `name` gives each
    /// field's name in the file the config was read from (GGUF keys differ from `config.json`'s).
    pub(crate) fn validate_named(
        &self,
        name: impl Fn(&'static str) -> &'static str,
    ) -> std::result::Result<(), String> {
        let sizes = [
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("vocab_size", self.vocab_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("max_position_embeddings", self.max_position_embeddings),
        ];
        for (field, value) in sizes {
            if value == 0 {
                return Err(format!("{} is 0; it must be positive", name(field)));
            }
        }
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
        // The rotary tables (cos and sin, f32, head_dim / 2 columns each) are built for every
        // position when the model loads.
        let context = self.max_position_embeddings;
        let rope_bytes = self
            .head_dim()
            .checked_mul(4)
            .and_then(|b| b.checked_mul(context));
        if context > MAX_CONTEXT || rope_bytes.is_none_or(|b| b > MAX_ROPE_TABLE_BYTES) {
            return Err(format!(
                "{} is {context} positions, more than loupe builds rotary tables for (at most \
                 {MAX_CONTEXT} positions and {} GiB of tables); the file is corrupt, or the model \
                 is not one loupe can run",
                name("max_position_embeddings"),
                MAX_ROPE_TABLE_BYTES >> 30
            ));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            return Err(format!(
                "{} is {}; it must be a small positive number",
                name("rms_norm_eps"),
                self.rms_norm_eps
            ));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return Err(format!(
                "{} is {}; it must be a positive number",
                name("rope_theta"),
                self.rope_theta
            ));
        }
        Ok(())
    }
}

/// The most positions loupe builds rotary tables for (the longest llama contexts are 1M).
const MAX_CONTEXT: usize = 1 << 20;
/// The most memory the rotary tables may take.
const MAX_ROPE_TABLE_BYTES: usize = 4 << 30;

/// An error naming the architecture when `config.json` describes a model that is not a llama
/// (otherwise serde reports the first llama field it misses, such as `rms_norm_eps`).
fn check_hf_architecture(json: &str) -> std::result::Result<(), String> {
    let config: serde_json::Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let unsupported = |arch: &str| {
        Err(format!(
            "architecture {arch} is not supported; loupe runs the llama family (llama, SmolLM, \
             TinyLlama)"
        ))
    };
    if let Some(model_type) = config.get("model_type").and_then(|t| t.as_str()) {
        if model_type != "llama" {
            return unsupported(model_type);
        }
    } else if let Some(archs) = config.get("architectures").and_then(|a| a.as_array()) {
        let names: Vec<&str> = archs.iter().filter_map(|a| a.as_str()).collect();
        if !names.is_empty() && !names.iter().any(|a| a.starts_with("Llama")) {
            return unsupported(&names.join(", "));
        }
    }
    Ok(())
}

/// Which logits [`Llama::forward`] computes. The unembedding is a fifth of SmolLM2's compute, so
/// generation asks only for the last column. (A pass that needs no logits is [`Llama::capture`],
/// which also stops after the deepest hooked layer.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// Logits for every column, `[rows, columns, vocab]`.
    All,
    /// Logits for the last column only, `[rows, 1, vocab]` (what generation needs).
    Last,
}

/// Keys and values of every layer for the columns already run, `[rows, kv_heads, columns, head_dim]`.
pub struct KvCache {
    layers: Vec<candle_nn::kv_cache::KvCache>,
}

impl KvCache {
    /// An empty cache for a model of shape `config`, one per layer.
    pub fn new(config: &LlamaConfig) -> Self {
        // The cache grows in steps of this many columns when it fills up.
        const GROW_BY: usize = 256;
        let layers = (0..config.num_hidden_layers)
            .map(|_| candle_nn::kv_cache::KvCache::new(2, GROW_BY))
            .collect();
        KvCache { layers }
    }

    /// Columns held.
    pub fn columns(&self) -> usize {
        self.layers.first().map_or(0, |l| l.current_seq_len())
    }

    /// A cache of `rows` rows, each a copy of this one-row cache: a prompt prefix run once and
    /// then continued by many rows (patch experiments share the target prompt's prefill so).
    pub fn repeat_rows(&self, rows: usize) -> Result<KvCache> {
        // Room for the prefix and a short continuation; the cache grows by as much again when
        // it fills. (Many rows at the default 256 columns would allocate gigabytes.)
        let capacity = self.columns() + 32;
        let mut layers = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            let mut copy = candle_nn::kv_cache::KvCache::new(2, capacity);
            if let (Some(k), Some(v)) = (layer.k()?, layer.v()?) {
                if k.dim(0)? != 1 {
                    return Err(Error::Invalid(format!(
                        "repeat_rows needs a one-row cache, this one has {} rows",
                        k.dim(0)?
                    )));
                }
                let (k, v) = (k.repeat((rows, 1, 1, 1))?, v.repeat((rows, 1, 1, 1))?);
                copy.append(&k.contiguous()?, &v.contiguous()?)?;
            }
            layers.push(copy);
        }
        Ok(KvCache { layers })
    }
}

/// `x · Wᵀ` for a projection. With a single row (batch-1 decoding), gemm's matrix-vector path runs
/// on one core and is bound by reading the weights; splitting the output features across rayon's
/// threads reads them with every core (on two cores, batch-1 decoding ran 1.7× faster). Each output
/// is the same dot product either way, so results do not change.
fn project(linear: &Linear, x: &Tensor) -> Result<Tensor> {
    let threads = rayon::current_num_threads();
    let (out_dim, in_dim) = linear.weight().dims2()?;
    if x.elem_count() != in_dim || threads < 2 || out_dim < 2 * threads {
        return Ok(linear.forward(x)?);
    }
    let row = x.reshape((1, in_dim))?;
    let chunk = out_dim.div_ceil(threads);
    let parts: Vec<Tensor> = (0..out_dim)
        .step_by(chunk)
        .collect::<Vec<_>>()
        .into_par_iter()
        .map(|start| {
            row.matmul(
                &linear
                    .weight()
                    .narrow(0, start, chunk.min(out_dim - start))?
                    .t()?,
            )
        })
        .collect::<candle_core::Result<_>>()?;
    let mut shape = x.dims().to_vec();
    *shape.last_mut().expect("x has a feature dimension") = out_dim;
    Ok(Tensor::cat(&parts, 1)?.reshape(shape)?)
}

/// Concatenates the weights of several projections of the same input into one `Linear`: one large
/// matmul runs faster than several small ones.
fn fused_linear(vb: &VarBuilder, in_dim: usize, parts: &[(&str, usize)]) -> Result<Linear> {
    let weights = parts
        .iter()
        .map(|&(name, out_dim)| vb.get((out_dim, in_dim), &format!("{name}.weight")))
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok(Linear::new(Tensor::cat(&weights, 0)?, None))
}

struct Attention {
    /// q, k and v projections fused: `[q | k | v]` along the output dimension.
    qkv_proj: Linear,
    o_proj: Linear,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
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
            )?,
            o_proj: linear_no_bias(q_dim, d, vb.pp("o_proj"))?,
            n_heads: cfg.num_attention_heads,
            n_kv_heads: cfg.num_key_value_heads,
            head_dim: hd,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        rope: &RopeAt,
        mask: Option<&Tensor>,
        cache: Option<&mut candle_nn::kv_cache::KvCache>,
    ) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let (nh, nkv, hd) = (self.n_heads, self.n_kv_heads, self.head_dim);
        let qkv = project(&self.qkv_proj, x)?;
        // [b, t, n * hd] slice of qkv -> [b, n, t, hd]
        let heads = |start: usize, n: usize| -> Result<Tensor> {
            Ok(qkv
                .narrow(2, start * hd, n * hd)?
                .reshape((b, t, n, hd))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let q = candle_nn::rotary_emb::rope(&heads(0, nh)?, &rope.cos, &rope.sin)?;
        let k = candle_nn::rotary_emb::rope(&heads(nh, nkv)?, &rope.cos, &rope.sin)?;
        let v = heads(nh + nkv, nkv)?;
        let (k, v) = match cache {
            Some(cache) => cache.append(&k, &v)?,
            None => (k, v),
        };
        let (k, v) = (k.contiguous()?, v.contiguous()?);
        let keys = k.dim(2)?;

        // Grouped-query attention without copying k and v for every query head: the n_rep query
        // heads that share a kv head are consecutive, so [b, nh, t, hd] regroups as
        // [b, nkv, n_rep * t, hd] and each group is one matmul against its kv head.
        let n_rep = nh / nkv;
        let q = q.reshape((b, nkv, n_rep * t, hd))?;
        let scale = 1.0 / (hd as f64).sqrt();
        let mut scores = (q.matmul(&k.t()?)? * scale)?;
        if let Some(mask) = mask {
            scores = scores.reshape((b, nh, t, keys))?.broadcast_add(mask)?;
        }
        let probs = candle_nn::ops::softmax_last_dim(&scores)?.reshape((b, nkv, n_rep * t, keys))?;
        let y = probs
            .matmul(&v)?
            .reshape((b, nh, t, hd))?
            .transpose(1, 2)?
            .reshape((b, t, nh * hd))?;
        project(&self.o_proj, &y)
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
            gate_up_proj: fused_linear(&vb, d, &[("gate_proj", m), ("up_proj", m)])?,
            down_proj: linear_no_bias(m, d, vb.pp("down_proj"))?,
            width: m,
        })
    }

    /// The neurons: silu(gate) * up, the input of the down projection.
    fn neurons(&self, x: &Tensor) -> Result<Tensor> {
        let gate_up = project(&self.gate_up_proj, x)?;
        let gate = gate_up.narrow(D::Minus1, 0, self.width)?;
        let up = gate_up.narrow(D::Minus1, self.width, self.width)?;
        Ok((candle_nn::ops::silu(&gate)? * up)?)
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

    /// One block, with its six hook points in forward order.
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &self,
        layer: usize,
        x: Tensor,
        pass: &Pass,
        cache: Option<&mut candle_nn::kv_cache::KvCache>,
        hooks: &mut Hooks,
    ) -> Result<Tensor> {
        let batch = pass.batch;
        let x = hooks.apply(HookPoint::ResidPre(layer), x, batch)?;
        let attn = self.self_attn.forward(
            &self.input_layernorm.forward(&x)?,
            &pass.rope,
            pass.mask.as_ref(),
            cache,
        )?;
        let attn = hooks.apply(HookPoint::AttnOut(layer), attn, batch)?;
        let x = hooks.apply(HookPoint::ResidMid(layer), (x + attn)?, batch)?;

        let h = self.post_attention_layernorm.forward(&x)?;
        let neurons = hooks.apply(HookPoint::MlpPost(layer), self.mlp.neurons(&h)?, batch)?;
        let mlp_out = hooks.apply(
            HookPoint::MlpOut(layer),
            project(&self.mlp.down_proj, &neurons)?,
            batch,
        )?;
        hooks.apply(HookPoint::ResidPost(layer), (x + mlp_out)?, batch)
    }
}

/// Rotary cos/sin for the positions of one batch, `[rows, columns, head_dim / 2]`.
struct RopeAt {
    cos: Tensor,
    sin: Tensor,
}

/// What every block of one pass shares: the batch (for hooks' positions), its rotary tables and
/// its attention mask (`None` when no token needs masking).
struct Pass<'a> {
    batch: &'a Batch,
    rope: RopeAt,
    mask: Option<Tensor>,
}

/// A llama-family decoder with hooks. See [`Llama::forward`].
pub struct Llama {
    config: LlamaConfig,
    embed_tokens: Embedding,
    blocks: Vec<Block>,
    norm: RmsNorm,
    lm_head: Linear,
    /// cos and sin of every position up to the context length, `[positions, head_dim / 2]`.
    rope_cos: Tensor,
    rope_sin: Tensor,
}

impl Llama {
    /// Builds the model from weights named as in Hugging Face llama checkpoints.
    pub fn load(vb: VarBuilder, config: LlamaConfig) -> Result<Self> {
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
        let (rope_cos, rope_sin) = rope_tables(&config, vb.device())?;
        Ok(Llama {
            config,
            embed_tokens,
            blocks,
            norm,
            lm_head,
            rope_cos,
            rope_sin,
        })
    }

    /// The model's shape.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// Transformer blocks in the model (`num_hidden_layers`).
    pub fn n_layers(&self) -> usize {
        self.config.num_hidden_layers
    }

    /// The device the weights live on (CPU or a GPU).
    pub fn device(&self) -> &Device {
        self.rope_cos.device()
    }

    /// Block `layer`'s MLP down projection, `[d_model, d_mlp]`: it maps the neurons
    /// (`mlp.hook_post`) to the MLP's output (`hook_mlp_out`).
    pub fn mlp_down_proj(&self, layer: usize) -> Option<&Tensor> {
        self.blocks.get(layer).map(|b| b.mlp.down_proj.weight())
    }

    /// The width of the activation at `hook`.
    pub fn width(&self, hook: HookPoint) -> usize {
        match hook {
            HookPoint::MlpPost(_) => self.config.intermediate_size,
            _ => self.config.hidden_size,
        }
    }

    /// Runs the model over `batch`, capturing and intervening as `hooks` says, and returns the
    /// logits asked for: `[rows, columns, vocab]` for [`Logits::All`], `[rows, 1, vocab]` for
    /// [`Logits::Last`] (the last column is every row's last token: batches are left-padded).
    pub fn forward(&self, batch: &Batch, hooks: &mut Hooks, logits: Logits) -> Result<Tensor> {
        let hidden = self.run(batch, hooks, None, Some(self.n_layers() - 1))?;
        self.logits(&hidden, batch, logits)
    }

    /// Runs the model over `batch` only as deep as `hooks` needs, for what they capture (and
    /// change): no logits, and no layer after the deepest hooked one.
    pub fn capture(&self, batch: &Batch, hooks: &mut Hooks) -> Result<()> {
        let Some(deepest) = hooks.deepest_layer() else {
            return Ok(()); // nothing hooked: nothing to run
        };
        self.run(batch, hooks, None, deepest)?;
        Ok(())
    }

    /// [`Llama::forward`] with a KV cache: `batch` holds only the columns after those in `cache`
    /// (see [`Batch::next_step`]), whose keys and values are appended to it. Every layer runs.
    pub fn forward_cached(
        &self,
        batch: &Batch,
        hooks: &mut Hooks,
        cache: &mut KvCache,
        logits: Logits,
    ) -> Result<Tensor> {
        let hidden = self.prefill(batch, hooks, cache)?;
        self.logits(&hidden, batch, logits)
    }

    /// Runs `batch` through every layer into `cache` (a shared prompt prefix, say) and returns
    /// the last layer's residual stream, `[rows, columns, d_model]`, without unembedding it.
    pub fn prefill(&self, batch: &Batch, hooks: &mut Hooks, cache: &mut KvCache) -> Result<Tensor> {
        if cache.columns() != batch.start_column() {
            return Err(Error::Invalid(format!(
                "the KV cache holds {} columns but the batch starts at column {}",
                cache.columns(),
                batch.start_column()
            )));
        }
        self.run(batch, hooks, Some(cache), Some(self.n_layers() - 1))
    }

    fn logits(&self, hidden: &Tensor, batch: &Batch, logits: Logits) -> Result<Tensor> {
        match logits {
            Logits::All => self.unembed(hidden),
            Logits::Last => self.unembed(&hidden.narrow(1, batch.columns() - 1, 1)?),
        }
    }

    /// The residual stream after block `last_layer` (`None`: after the embedding alone), with
    /// `hooks` applied on the way.
    fn run(
        &self,
        batch: &Batch,
        hooks: &mut Hooks,
        mut cache: Option<&mut KvCache>,
        last_layer: Option<usize>,
    ) -> Result<Tensor> {
        hooks.check_depth(self.n_layers())?;
        let context = self.config.max_position_embeddings;
        if batch.max_len() > context {
            return Err(Error::TooLong {
                what: "the input".into(),
                len: batch.max_len(),
                context,
            });
        }
        let x = self.embed_tokens.forward(batch.ids())?;
        let mut x = hooks.apply(HookPoint::Embed, x, batch)?;
        if let Some(last_layer) = last_layer {
            let pass = Pass {
                batch,
                rope: self.rope_at(batch)?,
                mask: batch.attention_mask()?,
            };
            for (layer, block) in self.blocks.iter().enumerate().take(last_layer + 1) {
                let layer_cache = cache.as_deref_mut().map(|c| &mut c.layers[layer]);
                x = block.forward(layer, x, &pass, layer_cache, hooks)?;
            }
        }
        Ok(x)
    }

    /// Final norm and unembedding: logits for residual-stream vectors `[..., hidden]`. Applied to
    /// an intermediate layer's residual stream, this is the logit lens.
    pub fn unembed(&self, resid: &Tensor) -> Result<Tensor> {
        project(&self.lm_head, &self.norm.forward(resid)?)
    }

    fn rope_at(&self, batch: &Batch) -> Result<RopeAt> {
        let positions = batch.rope_positions()?;
        let shape = (batch.rows(), batch.columns(), self.config.head_dim() / 2);
        Ok(RopeAt {
            cos: self.rope_cos.index_select(&positions, 0)?.reshape(shape)?,
            sin: self.rope_sin.index_select(&positions, 0)?.reshape(shape)?,
        })
    }
}

/// cos and sin of position × inverse frequency, as Hugging Face's llama computes them (the
/// rotate-half convention: GGUF weights are un-permuted to it when loaded).
fn rope_tables(config: &LlamaConfig, device: &Device) -> Result<(Tensor, Tensor)> {
    let hd = config.head_dim();
    let inv_freq: Vec<f32> = (0..hd)
        .step_by(2)
        .map(|i| 1f32 / config.rope_theta.powf(i as f32 / hd as f32))
        .collect();
    let n_freq = inv_freq.len();
    let inv_freq = Tensor::from_vec(inv_freq, (1, n_freq), device)?;
    let positions = Tensor::arange(0u32, config.max_position_embeddings as u32, device)?
        .to_dtype(DType::F32)?
        .reshape((config.max_position_embeddings, 1))?;
    let angles = positions.matmul(&inv_freq)?;
    Ok((angles.cos()?, angles.sin()?))
}
