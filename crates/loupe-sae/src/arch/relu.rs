//! ReLU SAE, Anthropic's April 2024 recipe: `f = ReLU(W_enc x + b_enc)`, loss
//! `||x − x̂||² + λ Σ_i f_i ||W_dec,i||` (the L1 penalty weighted by each decoder row's norm, so
//! that shrinking a latent's activation while growing its decoder row does not evade it), no
//! constraint on the decoder norm, λ warmed up from 0, b_dec not subtracted from the input.
//! Dense: every latent's activation is decoded.
//!
//! The step is five matrix products and two sweeps over `[batch, d_sae]`: the ReLU (with each
//! latent's activation sum and firing count gathered on the way) and the gradient through it. Both
//! `[batch, d_sae]` arrays (activations and their gradient) live in buffers kept between steps.

use multiversion::multiversion;
use rayon::prelude::*;

use loupe_util::vector::axpy;

use super::common::{
    add_partials, dense_decode, dense_encoder_grad, encoder_input, input_bias_gradient, pre_activations_into,
    ROWS_PER_TASK,
};
use super::{Architecture, StepContext, StepOutput};
use crate::{Activation, Params, Result};

/// The ReLU recipe (see the module docs).
pub struct Relu {
    /// Weight λ of the decoder-norm-weighted L1 penalty.
    pub l1_coefficient: f64,
    /// Whether b_dec is subtracted from the input before encoding (false in the April 2024 recipe).
    pub apply_b_dec_to_input: bool,
    /// The last batch's activations `f`, `[batch, d_sae]`, kept for their memory.
    pub f: Vec<f32>,
    /// The last batch's gradient with respect to the pre-activations, `[batch, d_sae]`, likewise.
    pub g_pre: Vec<f32>,
}

impl Architecture for Relu {
    fn name(&self) -> &'static str {
        "relu"
    }

    fn apply_b_dec_to_input(&self) -> bool {
        self.apply_b_dec_to_input
    }

    fn step(&mut self, params: &Params, x: &[f32], target: &[f32], ctx: &StepContext) -> Result<StepOutput> {
        let (d, n) = (params.d_in, params.d_sae);
        let rows = x.len() / d;
        let x_in = encoder_input(params, x, self.apply_b_dec_to_input);

        pre_activations_into(params, &x_in, &mut self.f);
        let (f_sums, fired) = relu_in_place(&mut self.f, n);
        let mut grads = params.zeros_like();
        let (squared_error, recon_grad) = dense_decode(params, target, &self.f, &mut grads, &mut self.g_pre);

        let lambda = self.l1_coefficient * ctx.sparsity_scale;
        let norms = params.decoder_norms();
        let l1 = f_sums
            .iter()
            .zip(&norms)
            .map(|(&s, &n)| (s * n) as f64)
            .sum::<f64>()
            / rows as f64;
        // d(λ Σ f_i ||dec_i||)/d(dec_i) = λ (Σ_tokens f_i) dec_i / ||dec_i||, per token.
        for (i, g_row) in grads.dec.chunks_mut(d).enumerate() {
            let w = (lambda / rows as f64) as f32 * f_sums[i] / norms[i].max(1e-12);
            axpy(g_row, w, &params.dec[i * d..][..d]);
        }
        // d/d(pre) = (d/df + λ ||dec_i|| / batch) where the latent is active, else 0.
        let penalty: Vec<f32> = norms.iter().map(|n| n * (lambda / rows as f64) as f32).collect();
        grads.b_enc = relu_backward_in_place(&mut self.g_pre, &self.f, &penalty);
        dense_encoder_grad(params, &mut grads, &self.g_pre, &x_in);
        if self.apply_b_dec_to_input {
            input_bias_gradient(params, &mut grads);
        }
        Ok(StepOutput {
            losses: vec![("mse", squared_error / rows as f64), ("l1", lambda * l1)],
            grads,
            fired,
            squared_error,
            recon_grad,
        })
    }

    fn inference(&self, _params: &Params) -> Activation {
        Activation::Relu
    }
}

/// `f = max(pre, 0)` in place over `[rows, width]`, with each latent's sum of `f` and the number
/// of tokens it is active on.
fn relu_in_place(pre: &mut [f32], width: usize) -> (Vec<f32>, Vec<u32>) {
    let partials: Vec<(Vec<f32>, Vec<u32>)> = pre
        .par_chunks_mut(width * ROWS_PER_TASK)
        .map(|block| {
            let mut sums = vec![0.0; width];
            let mut counts = vec![0u32; width];
            relu_rows(block, &mut sums, &mut counts);
            (sums, counts)
        })
        .collect();
    let (sums, counts): (Vec<_>, Vec<_>) = partials.into_iter().unzip();
    (add_partials(sums, width), add_partials(counts, width))
}

#[multiversion(targets = "simd")]
fn relu_rows(block: &mut [f32], sums: &mut [f32], counts: &mut [u32]) {
    for row in block.chunks_mut(sums.len()) {
        for ((v, s), c) in row.iter_mut().zip(sums.iter_mut()).zip(counts.iter_mut()) {
            let active = *v > 0.0;
            *v = if active { *v } else { 0.0 };
            *s += *v;
            *c += active as u32;
        }
    }
}

/// `g = g + penalty` where `f > 0`, else 0, in place over `[rows, width]`; returns the column sums
/// (b_enc's gradient).
fn relu_backward_in_place(g: &mut [f32], f: &[f32], penalty: &[f32]) -> Vec<f32> {
    let width = penalty.len();
    let partials: Vec<Vec<f32>> = g
        .par_chunks_mut(width * ROWS_PER_TASK)
        .zip(f.par_chunks(width * ROWS_PER_TASK))
        .map(|(g, f)| {
            let mut sums = vec![0.0; width];
            relu_backward_rows(g, f, penalty, &mut sums);
            sums
        })
        .collect();
    add_partials(partials, width)
}

#[multiversion(targets = "simd")]
fn relu_backward_rows(g: &mut [f32], f: &[f32], penalty: &[f32], sums: &mut [f32]) {
    for (g_row, f_row) in g.chunks_mut(penalty.len()).zip(f.chunks(penalty.len())) {
        for (((g, &f), &p), s) in g_row.iter_mut().zip(f_row).zip(penalty).zip(sums.iter_mut()) {
            *g = if f > 0.0 { *g + p } else { 0.0 };
            *s += *g;
        }
    }
}
