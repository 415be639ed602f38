//! Pieces the architectures share: the encoder's pre-activations, the backward pass through a
//! sparse code (TopK, BatchTopK) with the AuxK loss, and the dense one (ReLU, JumpReLU).

use std::borrow::Cow;

use candle_core::{Device, Tensor};

use super::StepOutput;
use crate::params::to_vec;
use crate::sparse::{top_k_per_row, SparseCode};
use crate::{Params, Result};

/// The encoder's input (x, or x − b_dec) and pre-activations `x_in · encᵀ + b_enc`,
/// `[batch, d_sae]`.
pub fn pre_activations(params: &Params, x: &Tensor, apply_b_dec_to_input: bool) -> Result<(Tensor, Tensor)> {
    let x_in = if apply_b_dec_to_input {
        x.broadcast_sub(&params.b_dec_tensor()?)?
    } else {
        x.clone()
    };
    let pre = x_in
        .matmul(&params.enc_tensor()?.t()?)?
        .broadcast_add(&params.b_enc_tensor()?)?;
    Ok((x_in, pre))
}

/// The encoder's input for the sparse architectures: `x`, or `x − b_dec`, as a flat vector.
pub fn encoder_input<'a>(params: &Params, x: &'a [f32], apply_b_dec_to_input: bool) -> Cow<'a, [f32]> {
    if !apply_b_dec_to_input {
        return Cow::Borrowed(x);
    }
    let mut x_in = x.to_vec();
    for row in x_in.chunks_mut(params.d_in) {
        row.iter_mut().zip(&params.b_dec).for_each(|(x, b)| *x -= b);
    }
    Cow::Owned(x_in)
}

/// The pre-activations `x_in · encᵀ + b_enc` (`[rows, d_sae]`) written into `out`, whose memory
/// is reused from step to step: the bias is laid down first and the product added onto it in
/// one pass of the matrix-multiply kernel (candle's own `gemm`), so the largest array of a step
/// is neither allocated nor swept again for the bias.
pub fn pre_activations_into(params: &Params, x_in: &[f32], out: &mut Vec<f32>) {
    let (d_in, d_sae) = (params.d_in, params.d_sae);
    let rows = x_in.len() / d_in;
    out.clear();
    for _ in 0..rows {
        out.extend_from_slice(&params.b_enc);
    }
    assert_eq!(x_in.len(), rows * d_in);
    assert_eq!(params.enc.len(), d_sae * d_in);
    // SAFETY: the pointers cover [rows, d_sae] (out, row-major), [rows, d_in] (x_in, row-major)
    // and [d_in, d_sae] read as encᵀ (enc is [d_sae, d_in] row-major: element (i, j) of encᵀ is
    // enc[j · d_in + i]); the lengths are asserted above and nothing else touches them meanwhile.
    unsafe {
        gemm::gemm(
            rows,
            d_sae,
            d_in,
            out.as_mut_ptr(),
            1,
            d_sae as isize,
            true,
            x_in.as_ptr(),
            1,
            d_in as isize,
            params.enc.as_ptr(),
            d_in as isize,
            1,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(rayon::current_num_threads()),
        );
    }
}

/// OpenAI's auxiliary loss: reconstruct the main reconstruction's error from the top `k` dead
/// latents, weighted by `coefficient · min(dead / k, 1)`, the error held fixed (detached).
#[derive(Clone, Copy, Debug)]
pub struct AuxK {
    /// Dead latents that reconstruct the error, at most.
    pub k: usize,
    /// Weight of the auxiliary loss (before the `min(dead / k, 1)` factor).
    pub coefficient: f64,
}

/// MSE (and AuxK) loss and gradients for a sparse code chosen from `pre`. The chosen values are
/// positive and equal to their pre-activations, so a value's gradient is its pre-activation's.
pub fn sparse_backward(
    params: &Params,
    x: &[f32],
    x_in: &[f32],
    pre: &[f32],
    code: &SparseCode,
    aux: Option<(AuxK, &[u32])>,
    apply_b_dec_to_input: bool,
) -> Result<StepOutput> {
    let d = params.d_in;
    let rows = x.len() / d;
    let scale = 2.0 / rows as f32;

    let mut recon = code.weighted_rows(&code.values, &params.dec, d);
    add_row_vector(&mut recon, &params.b_dec);
    let err: Vec<f32> = recon.iter().zip(x).map(|(r, x)| r - x).collect();
    let squared_error = sum_sq(&err);
    let g_recon: Vec<f32> = err.iter().map(|e| e * scale).collect();

    let mut grads = params.zeros_like();
    grads.b_dec = column_sums(&g_recon, d);
    grads.dec = code.scatter_rows(&code.values, &g_recon, d);
    let g_values = code.entry_dots(&g_recon, &params.dec, d);
    grads.enc = code.scatter_rows(&g_values, x_in, d);
    grads.b_enc = code.latent_sums(&g_values);
    let mut losses = vec![("mse", squared_error / rows as f64)];

    if let Some((aux, dead)) = aux.filter(|(_, dead)| !dead.is_empty()) {
        let k = aux.k.min(dead.len());
        let weight = aux.coefficient * (dead.len() as f64 / aux.k as f64).min(1.0);
        let aux_code = top_k_per_row(pre, params.d_sae, k, Some(dead));
        // The dead latents try to explain what the live ones missed: x − x̂ = −err.
        let aux_recon = aux_code.weighted_rows(&aux_code.values, &params.dec, d);
        let aux_err: Vec<f32> = aux_recon.iter().zip(&err).map(|(a, e)| a + e).collect();
        losses.push(("auxk", weight * sum_sq(&aux_err) / rows as f64));
        let g_aux: Vec<f32> = aux_err.iter().map(|e| e * scale * weight as f32).collect();
        add(
            &mut grads.dec,
            &aux_code.scatter_rows(&aux_code.values, &g_aux, d),
        );
        let g_aux_values = aux_code.entry_dots(&g_aux, &params.dec, d);
        add(&mut grads.enc, &aux_code.scatter_rows(&g_aux_values, x_in, d));
        add(&mut grads.b_enc, &aux_code.latent_sums(&g_aux_values));
    }
    if apply_b_dec_to_input {
        input_bias_gradient(params, &mut grads);
    }
    Ok(StepOutput {
        losses,
        fired: code.fire_counts(),
        grads,
        squared_error,
    })
}

/// The dense part shared by ReLU and JumpReLU: given activations `f` (`[batch, d_sae]`), the
/// reconstruction error and the gradients of the MSE with respect to the decoder, b_dec and `f`.
pub struct DenseDecode {
    /// Σ ||x̂ − x||² over the batch.
    pub squared_error: f64,
    /// d(MSE)/d(decoder), `[d_sae, d_in]`.
    pub g_dec: Tensor,
    /// d(MSE)/d(b_dec), `[d_in]`.
    pub g_b_dec: Tensor,
    /// d(MSE)/d(f), `[batch, d_sae]`
    pub g_f: Tensor,
}

/// Decodes the dense activations `f` (`[batch, d_sae]`) and returns the squared error against `x`
/// (`[batch, d_in]`) with the gradients of the batch-mean MSE.
pub fn dense_decode(params: &Params, x: &Tensor, f: &Tensor) -> Result<DenseDecode> {
    let rows = x.dim(0)?;
    let dec = params.dec_tensor()?;
    let recon = f.matmul(&dec)?.broadcast_add(&params.b_dec_tensor()?)?;
    let err = (recon - x)?;
    let squared_error = err.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
    let g_recon = (err * (2.0 / rows as f64))?;
    Ok(DenseDecode {
        squared_error,
        g_dec: f.t()?.matmul(&g_recon)?,
        g_b_dec: g_recon.sum(0)?,
        g_f: g_recon.matmul(&dec.t()?)?,
    })
}

/// Encoder gradients from the pre-activation gradient `g_pre` (`[batch, d_sae]`).
pub fn dense_encoder_grads(grads: &mut Params, g_pre: &Tensor, x_in: &Tensor) -> Result<()> {
    grads.enc = to_vec(&g_pre.t()?.matmul(x_in)?)?;
    grads.b_enc = to_vec(&g_pre.sum(0)?)?;
    Ok(())
}

/// When b_dec is subtracted from the input, every pre-activation i depends on it through
/// −enc_i: d(loss)/d(b_dec) gains −Σ_i (Σ_tokens d(loss)/d(pre_i)) · enc_i, and
/// Σ_tokens d(loss)/d(pre_i) is exactly b_enc's gradient.
pub fn input_bias_gradient(params: &Params, grads: &mut Params) {
    let d = params.d_in;
    for (row, &g) in params.enc.chunks(d).zip(&grads.b_enc) {
        if g != 0.0 {
            grads.b_dec.iter_mut().zip(row).for_each(|(b, &e)| *b -= g * e);
        }
    }
}

/// Tokens each latent fired on, from a 0/1 mask `[batch, d_sae]`.
pub fn fire_counts(mask: &Tensor) -> Result<Vec<u32>> {
    Ok(to_vec(&mask.sum(0)?)?
        .into_iter()
        .map(|c| c.round() as u32)
        .collect())
}

/// A 1-D f32 tensor on the CPU holding `values`.
pub fn vector(values: Vec<f32>) -> Result<Tensor> {
    let n = values.len();
    Ok(Tensor::from_vec(values, n, &Device::Cpu)?)
}

fn add_row_vector(rows: &mut [f32], v: &[f32]) {
    for row in rows.chunks_mut(v.len()) {
        row.iter_mut().zip(v).for_each(|(r, v)| *r += v);
    }
}

fn column_sums(rows: &[f32], d: usize) -> Vec<f32> {
    let mut sums = vec![0.0; d];
    for row in rows.chunks(d) {
        sums.iter_mut().zip(row).for_each(|(s, r)| *s += r);
    }
    sums
}

/// Adds `from` to `to` element by element (over the shorter of the two).
pub fn add(to: &mut [f32], from: &[f32]) {
    to.iter_mut().zip(from).for_each(|(t, f)| *t += f);
}

fn sum_sq(v: &[f32]) -> f64 {
    v.iter().map(|&e| (e as f64) * (e as f64)).sum()
}
