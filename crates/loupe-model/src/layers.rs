//! Building blocks that every model family shares: projections, rotary embeddings, the KV cache,
//! and the attention kernel with its hook points (`attn.hook_q` to `attn.hook_z`). A family file
//! (`llama.rs`, `gemma3.rs`, ...) puts them together in its own order.

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{Linear, VarBuilder};
use rayon::prelude::*;

use crate::{Batch, Error, HookPoint, Hooks, Result};

/// Token rows up to which a projection runs [`project_few_rows`] rather than gemm's matrix
/// product. Decoding feeds one token per row, so this covers generation in batches of up to this
/// many rows; a prefill or capture has hundreds of rows and goes to gemm. (On SmolLM2's
/// unembedding, 49152 × 576, here: 4 rows 6 ms against gemm's 15, 16 rows 19 against 21, 24 rows
/// 35 against 19.)
const FEW_ROWS: usize = 16;

/// `x · Wᵀ (+ b)` for a projection. With few token rows (decoding), gemm packs the whole weight
/// matrix for every call and spends most of a step copying it; [`project_few_rows`] reads each
/// weight row once for all token rows instead, on every core. Each output is then the same
/// arithmetic whatever the batch, so a row decodes to the same tokens alone and in a batch.
pub(crate) fn project(linear: &Linear, x: &Tensor) -> Result<Tensor> {
    let (out_dim, in_dim) = linear.weight().dims2()?;
    let rows = x.elem_count() / in_dim.max(1);
    let weight = linear.weight();
    if rows > FEW_ROWS
        || x.dtype() != DType::F32
        || weight.dtype() != DType::F32
        || !x.device().is_cpu()
        || !weight.is_contiguous()
    {
        return Ok(linear.forward(x)?);
    }
    let x = x.contiguous()?;
    let out = crate::with_f32(&x, |x| {
        crate::with_f32(weight, |w| project_few_rows(x, w, rows, in_dim, out_dim))
    })??;
    let mut shape = x.dims().to_vec();
    *shape.last_mut().expect("x has a feature dimension") = out_dim;
    let mut out = Tensor::from_vec(out, shape, x.device())?;
    if let Some(bias) = linear.bias() {
        out = out.broadcast_add(bias)?;
    }
    Ok(out)
}

/// Output features per rayon task in [`project_few_rows`].
const FEATURES_PER_TASK: usize = 64;

/// `x · Wᵀ` for `rows` rows of `x` (`[rows, in_dim]`) and `w` `[out_dim, in_dim]`, row-major,
/// reading `w` once: each weight row meets the token rows four at a time ([`dot_four`]) and the
/// rows left over one at a time.
fn project_few_rows(x: &[f32], w: &[f32], rows: usize, in_dim: usize, out_dim: usize) -> Vec<f32> {
    // Computed as [out_dim, rows] so that each task owns a contiguous block, then transposed.
    let mut by_feature = vec![0f32; out_dim * rows];
    let x_row = |r: usize| &x[r * in_dim..(r + 1) * in_dim];
    by_feature
        .par_chunks_mut(FEATURES_PER_TASK * rows)
        .zip(w.par_chunks(FEATURES_PER_TASK * in_dim))
        .for_each(|(out, w)| {
            for (out, w_row) in out.chunks_mut(rows).zip(w.chunks(in_dim)) {
                let mut groups = out.chunks_exact_mut(4);
                for (group, out) in (&mut groups).enumerate() {
                    let x = [0, 1, 2, 3].map(|i| x_row(4 * group + i));
                    out.copy_from_slice(&dot_four(w_row, x));
                }
                // The rows left over, one at a time: `dot` sums in the same order as `dot_four`.
                let done = rows - rows % 4;
                for (r, out) in (done..rows).zip(groups.into_remainder()) {
                    *out = loupe_util::vector::dot(x_row(r), w_row);
                }
            }
        });
    let mut out = vec![0f32; rows * out_dim];
    for (feature, sums) in by_feature.chunks(rows).enumerate() {
        for (row, &s) in sums.iter().enumerate() {
            out[row * out_dim + feature] = s;
        }
    }
    out
}

/// The dot products of `w` with four vectors of its length, reading `w` once. Each sum runs in
/// 16 lanes added in a fixed order, the order of `loupe_util::vector::dot`, so a product does not
/// depend on the other three nor on whether it was computed here or by `dot`. (Fused multiply-adds
/// over two weight rows at a time measured slower here.)
#[multiversion::multiversion(targets = "simd")]
fn dot_four(w: &[f32], x: [&[f32]; 4]) -> [f32; 4] {
    const LANES: usize = 16;
    let n = w.len();
    let [x0, x1, x2, x3] = x.map(|x| &x[..n]);
    let zero = [0f32; LANES];
    let (mut l0, mut l1, mut l2, mut l3) = (zero, zero, zero, zero);
    let chunks = w
        .chunks_exact(LANES)
        .zip(x0.chunks_exact(LANES))
        .zip(x1.chunks_exact(LANES))
        .zip(x2.chunks_exact(LANES))
        .zip(x3.chunks_exact(LANES));
    for ((((w, x0), x1), x2), x3) in chunks {
        for i in 0..LANES {
            l0[i] += w[i] * x0[i];
            l1[i] += w[i] * x1[i];
            l2[i] += w[i] * x2[i];
            l3[i] += w[i] * x3[i];
        }
    }
    let full = n - n % LANES;
    let sum = |lanes: &[f32; LANES], x: &[f32]| -> f32 {
        let tail: f32 = w[full..].iter().zip(&x[full..]).map(|(a, b)| a * b).sum();
        lanes.iter().sum::<f32>() + tail
    };
    [sum(&l0, x0), sum(&l1, x1), sum(&l2, x2), sum(&l3, x3)]
}

/// `silu(gate) · up` from a fused gate-and-up projection's output `[.., 2·width]` (the gate's
/// `width` columns first): one pass over memory that writes only the result, where candle's ops
/// would make the SiLU, its exponential and the product as three temporaries. The exponential
/// is [`exp`] below, which vectorises; it agrees with the C library's to about an ulp.
pub(crate) fn silu_gate(gate_up: &Tensor, width: usize) -> Result<Tensor> {
    let dims = gate_up.dims().to_vec();
    let gate_up = gate_up.contiguous()?;
    if gate_up.dtype() != DType::F32 || !gate_up.device().is_cpu() {
        let gate = gate_up.narrow(D::Minus1, 0, width)?;
        let up = gate_up.narrow(D::Minus1, width, width)?;
        return Ok((candle_nn::ops::silu(&gate)? * up)?);
    }
    let out = crate::with_f32(&gate_up, |input| {
        let mut out = vec![0f32; input.len() / 2];
        out.par_chunks_mut(width)
            .zip(input.par_chunks(2 * width))
            .with_min_len(16)
            .for_each(|(out, row)| silu_gate_row(out, &row[..width], &row[width..]));
        out
    })?;
    let mut shape = dims;
    *shape.last_mut().expect("a feature dimension") = width;
    Ok(Tensor::from_vec(out, shape, gate_up.device())?)
}

#[multiversion::multiversion(targets = "simd")]
fn silu_gate_row(out: &mut [f32], gate: &[f32], up: &[f32]) {
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = g / (1.0 + exp(-g)) * u;
    }
}

/// `e^x` for f32 in a form the compiler vectorises: `x = n·ln 2 + r` with |r| ≤ ln 2 / 2, a
/// degree-6 Taylor polynomial for `e^r` (truncation error below 2e-7 relative), and `2^n` put in
/// the exponent bits. Inputs are clamped to the range where the result is a normal f32.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * std::f32::consts::LOG2_E + 0.5).floor();
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    p * f32::from_bits(((n as i32 + 127) << 23) as u32)
}

/// Concatenates the weights (and biases, with `bias`) of several projections of the same input
/// into one `Linear`: one large matmul runs faster than several small ones.
pub(crate) fn fused_linear(
    vb: &VarBuilder,
    in_dim: usize,
    parts: &[(&str, usize)],
    bias: bool,
) -> Result<Linear> {
    let weights = parts
        .iter()
        .map(|&(name, out_dim)| vb.get((out_dim, in_dim), &format!("{name}.weight")))
        .collect::<candle_core::Result<Vec<_>>>()?;
    let bias = if bias {
        let biases = parts
            .iter()
            .map(|&(name, out_dim)| vb.get(out_dim, &format!("{name}.bias")))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Some(Tensor::cat(&biases, 0)?)
    } else {
        None
    };
    Ok(Linear::new(Tensor::cat(&weights, 0)?, bias))
}

/// An error naming the first of `sizes` (a field's name as its file spells it, and its value)
/// that is 0: a model with no layers, heads or width cannot be built.
pub(crate) fn check_positive(
    sizes: impl IntoIterator<Item = (String, usize)>,
) -> std::result::Result<(), String> {
    match sizes.into_iter().find(|(_, value)| *value == 0) {
        Some((field, _)) => Err(format!("{field} is 0; it must be positive")),
        None => Ok(()),
    }
}

/// The most positions loupe builds rotary tables for (the longest contexts are 1M).
const MAX_CONTEXT: usize = 1 << 20;
/// The most memory the rotary tables may take.
const MAX_ROPE_TABLE_BYTES: usize = 4 << 30;

/// Rotary position embedding tables: cos and sin of position × inverse frequency for every
/// position of the context, `[positions, rotary_dim / 2]`, in the rotate-half convention of
/// Hugging Face (GGUF weights permuted for llama.cpp's adjacent pairs are un-permuted on load).
/// `rotary_dim` below the head width rotates only the first dimensions of each head (GPT-NeoX).
pub(crate) struct Rope {
    cos: Tensor,
    sin: Tensor,
    rotary_dim: usize,
}

impl Rope {
    pub(crate) fn new(theta: f32, rotary_dim: usize, context: usize, device: &Device) -> Result<Self> {
        check_rope(theta, rotary_dim, context, str::to_string).map_err(Error::Invalid)?;
        let inv_freq: Vec<f32> = (0..rotary_dim)
            .step_by(2)
            .map(|i| 1f32 / theta.powf(i as f32 / rotary_dim as f32))
            .collect();
        let n_freq = inv_freq.len();
        let inv_freq = Tensor::from_vec(inv_freq, (1, n_freq), device)?;
        let positions = Tensor::arange(0u32, context as u32, device)?
            .to_dtype(DType::F32)?
            .reshape((context, 1))?;
        let angles = positions.matmul(&inv_freq)?;
        Ok(Rope {
            cos: angles.cos()?,
            sin: angles.sin()?,
            rotary_dim,
        })
    }

    /// The tables for the positions of one batch.
    pub(crate) fn at(&self, batch: &Batch) -> Result<RopeAt> {
        let positions = batch.rope_positions()?;
        let shape = (batch.rows(), batch.columns(), self.rotary_dim / 2);
        Ok(RopeAt {
            cos: self.cos.index_select(&positions, 0)?.reshape(shape)?,
            sin: self.sin.index_select(&positions, 0)?.reshape(shape)?,
            rotary_dim: self.rotary_dim,
        })
    }
}

/// Checks rotary settings before any table is allocated: a corrupt file's sizes must be an
/// error, not a 100 GB allocation. `name` gives each setting's name in the file it was read from
/// (`rope_theta`, `rotary_dim`, `context`), as a family calls it.
pub(crate) fn check_rope(
    theta: f32,
    rotary_dim: usize,
    context: usize,
    name: impl Fn(&'static str) -> String,
) -> std::result::Result<(), String> {
    if rotary_dim == 0 || !rotary_dim.is_multiple_of(2) {
        return Err(format!(
            "the rotary embedding's width ({}) is {rotary_dim}; it must be even and positive",
            name("rotary_dim")
        ));
    }
    let bytes = rotary_dim.checked_mul(4).and_then(|b| b.checked_mul(context));
    if context > MAX_CONTEXT || bytes.is_none_or(|b| b > MAX_ROPE_TABLE_BYTES) {
        return Err(format!(
            "{} is {context} positions, more than loupe builds rotary tables for (at most \
             {MAX_CONTEXT} positions and {} GiB of tables); the file is corrupt, or the model is \
             not one loupe can run",
            name("context"),
            MAX_ROPE_TABLE_BYTES >> 30
        ));
    }
    if !(theta.is_finite() && theta > 0.0) {
        return Err(format!(
            "{} is {theta}; it must be a positive number",
            name("rope_theta")
        ));
    }
    Ok(())
}

/// Rotary cos/sin for the positions of one batch, `[rows, columns, rotary_dim / 2]`.
pub(crate) struct RopeAt {
    cos: Tensor,
    sin: Tensor,
    rotary_dim: usize,
}

impl RopeAt {
    /// Rotates `x`, `[rows, heads, columns, head_dim]` (contiguous).
    fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let head_dim = x.dim(3)?;
        if self.rotary_dim == head_dim {
            return Ok(candle_nn::rotary_emb::rope(x, &self.cos, &self.sin)?);
        }
        let rotated = x.narrow(3, 0, self.rotary_dim)?.contiguous()?;
        let rotated = candle_nn::rotary_emb::rope(&rotated, &self.cos, &self.sin)?;
        let kept = x.narrow(3, self.rotary_dim, head_dim - self.rotary_dim)?;
        Ok(Tensor::cat(&[rotated, kept], 3)?.contiguous()?)
    }
}

/// What every block of one pass shares: the batch (for hooks' positions), its rotary tables (one
/// per base the family uses) and its attention masks (`None` when no token needs masking).
pub(crate) struct Pass<'a> {
    pub batch: &'a Batch,
    pub ropes: Vec<RopeAt>,
    /// Causal and padding mask, `[rows, 1, columns, keys]`.
    pub mask: Option<Tensor>,
    /// The same, also hiding keys more than the sliding window back; `None` when no key is.
    window_mask: Option<Tensor>,
}

impl<'a> Pass<'a> {
    /// The mask of a local-attention (sliding-window) layer.
    pub(crate) fn local_mask(&self) -> Option<&Tensor> {
        self.window_mask.as_ref().or(self.mask.as_ref())
    }

    pub(crate) fn new(batch: &'a Batch, ropes: &[Rope], window: Option<usize>) -> Result<Self> {
        Ok(Pass {
            batch,
            ropes: ropes.iter().map(|r| r.at(batch)).collect::<Result<_>>()?,
            mask: batch.attention_mask(None)?,
            // Only when some key is out of the window; otherwise the causal mask is the same.
            window_mask: match window.filter(|&w| batch.max_len() > w) {
                Some(window) => batch.attention_mask(Some(window))?,
                None => None,
            },
        })
    }
}

/// Keys and values of every layer for the columns already run, `[rows, kv_heads, columns,
/// head_dim]` (keys after the rotary embedding).
pub struct KvCache {
    pub(crate) layers: Vec<candle_nn::kv_cache::KvCache>,
}

impl KvCache {
    /// An empty cache for a model of `n_layers` blocks ([`crate::Model::n_layers`]).
    pub fn new(n_layers: usize) -> Self {
        // The cache grows in steps of this many columns when it fills up.
        const GROW_BY: usize = 256;
        let layers = (0..n_layers)
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

/// The shape of one attention layer and how it mixes: what [`attend`] needs beside its inputs.
pub(crate) struct AttentionShape {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// Multiplies q·k (usually 1/√head_dim).
    pub scale: f64,
}

/// Multi-head attention with grouped-query sharing, from queries, keys and values laid out as
/// `[rows, columns, heads, head_dim]` before the rotary embedding (`None` for models with learned
/// positions), with the hook points
/// `attn.hook_q` to `attn.hook_z` of `layer` on the way. Returns the heads' outputs concatenated,
/// `[rows, columns, heads × head_dim]`, the input of the output projection.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attend(
    layer: usize,
    shape: &AttentionShape,
    (q, k, v): (Tensor, Tensor, Tensor),
    rope: Option<&RopeAt>,
    mask: Option<&Tensor>,
    cache: Option<&mut candle_nn::kv_cache::KvCache>,
    pass_batch: &Batch,
    hooks: &mut Hooks,
) -> Result<Tensor> {
    let (b, t, _, _) = q.dims4()?;
    let AttentionShape {
        n_heads: nh,
        n_kv_heads: nkv,
        head_dim: hd,
        scale,
    } = *shape;
    let q = hooks.apply(HookPoint::AttnQ(layer), q, pass_batch)?;
    let k = hooks.apply(HookPoint::AttnK(layer), k, pass_batch)?;
    let v = hooks.apply(HookPoint::AttnV(layer), v, pass_batch)?;
    let (q, k) = (q.transpose(1, 2)?.contiguous()?, k.transpose(1, 2)?.contiguous()?);
    let (q, k) = match rope {
        Some(rope) => (rope.apply(&q)?, rope.apply(&k)?),
        None => (q, k),
    };
    let v = v.transpose(1, 2)?.contiguous()?;
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
    let mut scores = (q.matmul(&k.t()?)? * scale)?;
    if let Some(mask) = mask {
        scores = scores.reshape((b, nh, t, keys))?.broadcast_add(mask)?;
    }
    let scores_hook = HookPoint::AttnScores(layer);
    if hooks.touches(scores_hook) {
        scores = hooks.apply(scores_hook, scores.reshape((b, nh, t, keys))?, pass_batch)?;
    }
    let mut probs = candle_nn::ops::softmax_last_dim(&scores)?;
    let pattern_hook = HookPoint::AttnPattern(layer);
    if hooks.touches(pattern_hook) {
        probs = hooks.apply(pattern_hook, probs.reshape((b, nh, t, keys))?, pass_batch)?;
    }
    let z = probs
        .reshape((b, nkv, n_rep * t, keys))?
        .matmul(&v)?
        .reshape((b, nh, t, hd))?
        .transpose(1, 2)?;
    let z_hook = HookPoint::AttnZ(layer);
    let z = if hooks.touches(z_hook) {
        hooks.apply(z_hook, z.contiguous()?, pass_batch)?
    } else {
        z
    };
    Ok(z.reshape((b, t, nh * hd))?)
}

/// Splits a fused `[q | k | v]` projection's output, `[rows, columns, (nh + 2·nkv) × hd]`, into
/// queries, keys and values laid out as `[rows, columns, heads, head_dim]`.
pub(crate) fn split_qkv(qkv: &Tensor, shape: &AttentionShape) -> Result<(Tensor, Tensor, Tensor)> {
    let (b, t, _) = qkv.dims3()?;
    let (nh, nkv, hd) = (shape.n_heads, shape.n_kv_heads, shape.head_dim);
    let heads = |start: usize, n: usize| -> Result<Tensor> {
        Ok(qkv.narrow(2, start * hd, n * hd)?.reshape((b, t, n, hd))?)
    };
    Ok((heads(0, nh)?, heads(nh, nkv)?, heads(nh + nkv, nkv)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn few_row_projection_equals_the_matrix_product_and_ignores_the_batch() -> Result<()> {
        // in_dim 37 (two 16-lane chunks and a tail), out_dim 130 (a short last task), 7 rows
        // (a short last group of four), with a bias.
        let device = Device::Cpu;
        let weight = Tensor::randn(0f32, 1.0, (130, 37), &device)?;
        let bias = Tensor::randn(0f32, 1.0, 130, &device)?;
        let linear = Linear::new(weight, Some(bias));
        let x = Tensor::randn(0f32, 1.0, (1, 7, 37), &device)?;
        let ours = project(&linear, &x)?;
        let gemm = linear.forward(&x)?;
        let diff = (&ours - &gemm)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "max difference {diff}");
        // Each row alone gives bit for bit what it gives among the others.
        for row in 0..7 {
            let alone = project(&linear, &x.narrow(1, row, 1)?)?;
            let among = ours.narrow(1, row, 1)?;
            assert_eq!(
                alone.flatten_all()?.to_vec1::<f32>()?,
                among.flatten_all()?.to_vec1::<f32>()?
            );
        }
        Ok(())
    }

    #[test]
    fn exp_agrees_with_the_c_library_to_a_few_ulps() {
        for i in -8700..=8800 {
            let x = i as f32 / 100.0;
            let (ours, libm) = (exp(x), x.exp());
            assert!(((ours - libm) / libm).abs() < 4e-7, "exp({x}): {ours} vs {libm}");
        }
    }

    #[test]
    fn fused_silu_gate_equals_candles_ops() {
        let values: Vec<f32> = (0..2 * 3 * 2 * 5)
            .map(|i| (i as f32 * 0.77).sin() * 9.0)
            .collect();
        let gate_up = Tensor::from_vec(values, (2, 3, 10), &Device::Cpu).unwrap();
        let fused = silu_gate(&gate_up, 5).unwrap();
        let gate = gate_up.narrow(D::Minus1, 0, 5).unwrap();
        let up = gate_up.narrow(D::Minus1, 5, 5).unwrap();
        let expected = (candle_nn::ops::silu(&gate).unwrap() * up).unwrap();
        assert_eq!(fused.dims(), [2, 3, 5]);
        let (a, b) = (
            fused.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            expected.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        );
        for (a, b) in a.iter().zip(&b) {
            assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "{a} vs {b}");
        }
    }
}
