//! Pieces the architectures share: the encoder's pre-activations, the backward pass through a
//! sparse code (TopK, BatchTopK) with the AuxK loss, and the dense one (ReLU, JumpReLU).

use std::borrow::Cow;

use super::StepOutput;
use crate::sparse::{top_k_per_row, SparseCode};
use crate::{Params, Result};

/// The encoder's input: `x`, or `x − b_dec`, as a flat vector.
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

/// A matrix inside a flat slice: element (i, j) is at `i · row_stride + j · col_stride`, so a
/// transpose is a swap of strides, not a copy.
#[derive(Clone, Copy)]
pub struct Matrix<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> Matrix<'a> {
    /// `data` read as a row-major `[rows, cols]` matrix.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        assert_eq!(data.len(), rows * cols, "a [{rows}, {cols}] matrix");
        Matrix {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The transpose (same data).
    pub fn t(self) -> Self {
        Matrix {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }
}

/// `out = a · b`, or `out += a · b` when `accumulate`; `out` is row-major `[a.rows, b.cols]`.
/// This calls the matrix-multiply kernel candle uses (`gemm`, on every core) without candle's
/// tensors, so that the training steps write their largest arrays into buffers they reuse.
pub fn matmul_into(out: &mut [f32], a: Matrix, b: Matrix, accumulate: bool) {
    assert_eq!(a.cols, b.rows, "inner dimensions");
    assert_eq!(out.len(), a.rows * b.cols, "output size");
    if out.is_empty() {
        return;
    }
    if a.cols == 0 {
        if !accumulate {
            out.fill(0.0);
        }
        return;
    }
    // SAFETY: every element gemm touches lies inside the slices: the `new` and `t` constructors
    // keep (rows − 1)·row_stride + (cols − 1)·col_stride below `data.len()`, `out` is exactly
    // [a.rows, b.cols] row-major, and `out` is borrowed mutably, so it aliases neither input.
    unsafe {
        gemm::gemm(
            a.rows,
            b.cols,
            a.cols,
            out.as_mut_ptr(),
            1,
            b.cols as isize,
            accumulate,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(rayon::current_num_threads()),
        );
    }
}

/// The pre-activations `x_in · encᵀ + b_enc` (`[rows, d_sae]`) written into `out`, whose memory
/// is reused from step to step: the bias is laid down first and the product added onto it, so the
/// largest array of a step is neither allocated nor swept again for the bias.
pub fn pre_activations_into(params: &Params, x_in: &[f32], out: &mut Vec<f32>) {
    let rows = x_in.len() / params.d_in;
    out.clear();
    for _ in 0..rows {
        out.extend_from_slice(&params.b_enc);
    }
    matmul_into(
        out,
        Matrix::new(x_in, rows, params.d_in),
        Matrix::new(&params.enc, params.d_sae, params.d_in).t(),
        true,
    );
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

/// MSE (and AuxK) loss and gradients for a sparse code chosen from `pre`, reconstructing `target`
/// (the input itself, for an SAE). The chosen values are
/// positive and equal to their pre-activations, so a value's gradient is its pre-activation's.
///
/// `level_ends` nests the dictionary (Matryoshka): level j reconstructs from latents
/// `0..level_ends[j]` alone, and every level's MSE is a loss term (the last level, the whole
/// dictionary, is `mse`; the others sum to `inner_mse`). A latent of level j is in the
/// reconstructions of levels j and up, so its gradient is taken against the sum of their
/// reconstruction gradients. `[d_sae]` is the ordinary, single-level SAE. AuxK explains the
/// whole dictionary's error.
#[allow(clippy::too_many_arguments)]
pub fn sparse_backward(
    params: &Params,
    target: &[f32],
    x_in: &[f32],
    pre: &[f32],
    code: &SparseCode,
    aux: Option<(AuxK, &[u32])>,
    apply_b_dec_to_input: bool,
    level_ends: &[usize],
) -> Result<StepOutput> {
    let d = params.d_in;
    let rows = target.len() / d;
    let scale = 2.0 / rows as f32;
    let levels: Vec<Cow<SparseCode>> = if level_ends.len() > 1 {
        code.split_at_latents(level_ends)
            .into_iter()
            .map(Cow::Owned)
            .collect()
    } else {
        vec![Cow::Borrowed(code)]
    };

    // Each level's error x̂_j − x, the reconstruction growing level by level.
    let mut errors: Vec<Vec<f32>> = Vec::with_capacity(levels.len());
    let mut recon = Vec::new();
    for (j, level) in levels.iter().enumerate() {
        let added = level.weighted_rows(&level.values, &params.dec, d);
        if j == 0 {
            recon = added;
            add_row_vector(&mut recon, &params.b_dec);
        } else {
            add(&mut recon, &added);
        }
        errors.push(recon.iter().zip(target).map(|(r, t)| r - t).collect());
    }
    let err = errors.last().expect("at least one level");
    let squared_error = sum_sq(err);
    let mut losses = vec![("mse", squared_error / rows as f64)];
    if levels.len() > 1 {
        let inner: f64 = errors[..levels.len() - 1].iter().map(|e| sum_sq(e)).sum();
        losses.push(("inner_mse", inner / rows as f64));
    }

    // g[j]: the gradient reaching level j's latents, Σ over levels i ≥ j of d(mse_i)/d(x̂_i).
    let mut g: Vec<Vec<f32>> = vec![Vec::new(); levels.len()];
    for j in (0..levels.len()).rev() {
        let mut g_j: Vec<f32> = errors[j].iter().map(|e| e * scale).collect();
        if let Some(outer) = g.get(j + 1) {
            add(&mut g_j, outer);
        }
        g[j] = g_j;
    }

    let mut grads = params.zeros_like();
    grads.b_dec = column_sums(&g[0], d);
    for (j, (level, g_recon)) in levels.iter().zip(&g).enumerate() {
        let g_dec = level.scatter_rows(&level.values, g_recon, d);
        let g_values = level.entry_dots(g_recon, &params.dec, d);
        let g_enc = level.scatter_rows(&g_values, x_in, d);
        let g_b_enc = level.latent_sums(&g_values);
        if j == 0 {
            (grads.dec, grads.enc, grads.b_enc) = (g_dec, g_enc, g_b_enc);
        } else {
            add(&mut grads.dec, &g_dec);
            add(&mut grads.enc, &g_enc);
            add(&mut grads.b_enc, &g_b_enc);
        }
    }

    if let Some((aux, dead)) = aux.filter(|(_, dead)| !dead.is_empty()) {
        let k = aux.k.min(dead.len());
        let weight = aux.coefficient * (dead.len() as f64 / aux.k as f64).min(1.0);
        let aux_code = top_k_per_row(pre, params.d_sae, k, Some(dead));
        // The dead latents try to explain what the live ones missed: x − x̂ = −err.
        let aux_recon = aux_code.weighted_rows(&aux_code.values, &params.dec, d);
        let aux_err: Vec<f32> = aux_recon.iter().zip(err).map(|(a, e)| a + e).collect();
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
        recon_grad: g.swap_remove(0),
    })
}

/// Rows per parallel task of the sweeps over `[batch, d_sae]` in the dense architectures. Each
/// task sums its own rows' columns and the partial sums are added in task order, so results do
/// not depend on the thread count.
pub const ROWS_PER_TASK: usize = 64;

/// The dense decode shared by ReLU and JumpReLU: given the activations `f` (`[rows, d_sae]`) and
/// the `target` (`[rows, d_in]`), the squared error of `x̂ = f · dec + b_dec` and the gradient of
/// the batch-mean MSE with respect to x̂ (returned), the decoder's and b_dec's gradients into
/// `grads`, and the activations' (`g_recon · decᵀ`) into `g_f`, a buffer kept between steps.
pub fn dense_decode(
    params: &Params,
    target: &[f32],
    f: &[f32],
    grads: &mut Params,
    g_f: &mut Vec<f32>,
) -> (f64, Vec<f32>) {
    let (d, n) = (params.d_in, params.d_sae);
    let rows = target.len() / d;
    let f = Matrix::new(f, rows, n);
    let dec = Matrix::new(&params.dec, n, d);
    let mut g_recon: Vec<f32> = params.b_dec.repeat(rows);
    matmul_into(&mut g_recon, f, dec, true);
    let mut squared_error = 0.0;
    for (r, &t) in g_recon.iter_mut().zip(target) {
        let e = *r - t;
        squared_error += (e as f64) * (e as f64);
        *r = e * (2.0 / rows as f32);
    }
    let g_recon_matrix = Matrix::new(&g_recon, rows, d);
    matmul_into(&mut grads.dec, f.t(), g_recon_matrix, false);
    grads.b_dec = column_sums(&g_recon, d);
    g_f.resize(rows * n, 0.0);
    matmul_into(g_f, g_recon_matrix, dec.t(), false);
    (squared_error, g_recon)
}

/// The encoder's gradient from the pre-activation gradient `g_pre` (`[rows, d_sae]`).
pub fn dense_encoder_grad(params: &Params, grads: &mut Params, g_pre: &[f32], x_in: &[f32]) {
    let rows = x_in.len() / params.d_in;
    matmul_into(
        &mut grads.enc,
        Matrix::new(g_pre, rows, params.d_sae).t(),
        Matrix::new(x_in, rows, params.d_in),
        false,
    );
}

/// Adds the per-task partial column sums in task order.
pub fn add_partials<T: Copy + std::ops::AddAssign + Default>(
    partials: impl IntoIterator<Item = Vec<T>>,
    width: usize,
) -> Vec<T> {
    let mut total = vec![T::default(); width];
    for part in partials {
        total.iter_mut().zip(&part).for_each(|(t, &p)| *t += p);
    }
    total
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
