//! JumpReLU SAE (Rajamanoharan et al. 2024, Gemma Scope): `f_i = pre_i · H(pre_i − θ_i)` with a
//! learned threshold θ_i per latent, and a penalty on L0 itself. The step function has no useful
//! derivative, so θ learns through straight-through estimators: the derivative of H(z − θ) in θ
//! is taken as −K((z − θ)/ε)/ε with K the unit rectangle, i.e. the change of the loss when θ moves
//! across a window of width ε, which is what a finite difference of width ε measures. The L0
//! penalty steers towards a target: λ·(L0/target − 1)².

use multiversion::multiversion;
use rayon::prelude::*;

use super::common::{
    add_partials, dense_decode, dense_encoder_grad, encoder_input, input_bias_gradient, pre_activations_into,
    ROWS_PER_TASK,
};
use super::{Architecture, StepContext, StepOutput};
use crate::{Activation, Params, Result};

/// The JumpReLU recipe (see the module docs).
pub struct JumpRelu {
    /// The L0 (mean active latents per token) the penalty steers towards.
    pub target_l0: f64,
    /// Weight λ of the penalty λ·(L0/target − 1)².
    pub l0_coefficient: f64,
    /// ε, the width of the estimator's window.
    pub bandwidth: f64,
    /// Every latent's threshold θ at initialisation, in normalised activation units.
    pub initial_threshold: f64,
    /// Whether b_dec is subtracted from the input before encoding.
    pub apply_b_dec_to_input: bool,
    /// The last batch's pre-activations, activations and activation gradients, each
    /// `[batch, d_sae]`, kept for their memory.
    pub buffers: [Vec<f32>; 3],
}

impl Architecture for JumpRelu {
    fn name(&self) -> &'static str {
        "jumprelu"
    }

    fn apply_b_dec_to_input(&self) -> bool {
        self.apply_b_dec_to_input
    }

    fn has_thresholds(&self) -> bool {
        true
    }

    fn init(&self, params: &mut Params) {
        params.log_threshold = Some(vec![self.initial_threshold.ln() as f32; params.d_sae]);
    }

    fn step(&mut self, params: &Params, x: &[f32], target: &[f32], ctx: &StepContext) -> Result<StepOutput> {
        let rows = (x.len() / params.d_in) as f64;
        let eps = self.bandwidth;
        let thresholds = params.thresholds().expect("JumpReLU parameters have thresholds");
        let x_in = encoder_input(params, x, self.apply_b_dec_to_input);
        let [pre, f, g] = &mut self.buffers;
        pre_activations_into(params, &x_in, pre);
        let fired = jump(pre, f, &thresholds);
        let mut grads = params.zeros_like();
        let (squared_error, recon_grad) = dense_decode(params, target, f, &mut grads, g);
        let window = jump_backward_in_place(g, pre, &thresholds, (eps / 2.0) as f32);
        grads.b_enc = window.g_pre_sums;
        dense_encoder_grad(params, &mut grads, g, &x_in);
        if self.apply_b_dec_to_input {
            input_bias_gradient(params, &mut grads);
        }
        let (window_counts, g_f_in_window) = (window.counts, window.g_f_sums);

        let l0 = fired.iter().map(|&c| c as f64).sum::<f64>() / rows;
        let lambda = self.l0_coefficient * ctx.sparsity_scale;
        let relative = l0 / self.target_l0 - 1.0;
        let d_penalty_d_l0 = 2.0 * lambda * relative / self.target_l0;
        let g_log_threshold = thresholds
            .iter()
            .enumerate()
            .map(|(i, &t)| {
                let t = t as f64;
                // d f_i / dθ_i ≈ −(θ_i/ε) K, d L0 / dθ_i ≈ −(1/ε) K / rows
                let g_mse = -(t / eps) * g_f_in_window[i] as f64;
                let g_l0 = -d_penalty_d_l0 * window_counts[i] as f64 / (eps * rows);
                ((g_mse + g_l0) * t) as f32 // through θ = exp(log θ)
            })
            .collect();
        grads.log_threshold = Some(g_log_threshold);
        Ok(StepOutput {
            losses: vec![
                ("mse", squared_error / rows),
                ("l0_penalty", lambda * relative * relative),
            ],
            grads,
            fired,
            squared_error,
            recon_grad,
        })
    }

    fn inference(&self, params: &Params) -> Activation {
        Activation::JumpRelu {
            threshold: params.thresholds().expect("JumpReLU parameters have thresholds"),
        }
    }
}

/// `f = pre` where `pre > θ`, else 0 (`[rows, d_sae]`, θ per latent); returns how many tokens
/// each latent fired on.
fn jump(pre: &[f32], f: &mut Vec<f32>, thresholds: &[f32]) -> Vec<u32> {
    let width = thresholds.len();
    f.resize(pre.len(), 0.0);
    let partials: Vec<Vec<u32>> = f
        .par_chunks_mut(width * ROWS_PER_TASK)
        .zip(pre.par_chunks(width * ROWS_PER_TASK))
        .map(|(f, pre)| {
            let mut counts = vec![0; width];
            jump_rows(f, pre, thresholds, &mut counts);
            counts
        })
        .collect();
    add_partials(partials, width)
}

#[multiversion(targets = "simd")]
fn jump_rows(f: &mut [f32], pre: &[f32], thresholds: &[f32], counts: &mut [u32]) {
    for (f_row, pre_row) in f.chunks_mut(thresholds.len()).zip(pre.chunks(thresholds.len())) {
        for (((f, &p), &t), c) in f_row
            .iter_mut()
            .zip(pre_row)
            .zip(thresholds)
            .zip(counts.iter_mut())
        {
            let active = p > t;
            *f = if active { p } else { 0.0 };
            *c += active as u32;
        }
    }
}

/// What the backward sweep gathers per latent.
struct Window {
    /// Σ over tokens of the pre-activation gradient (b_enc's gradient).
    g_pre_sums: Vec<f32>,
    /// Tokens whose pre-activation lies within ε/2 of the threshold.
    counts: Vec<u32>,
    /// Σ of the activation gradient over those tokens.
    g_f_sums: Vec<f32>,
}

/// Turns the activation gradient `g` into the pre-activation gradient in place (kept where
/// `pre > θ`, else 0) and gathers the threshold estimator's window sums.
fn jump_backward_in_place(g: &mut [f32], pre: &[f32], thresholds: &[f32], half_width: f32) -> Window {
    let width = thresholds.len();
    let partials: Vec<[Vec<f32>; 3]> = g
        .par_chunks_mut(width * ROWS_PER_TASK)
        .zip(pre.par_chunks(width * ROWS_PER_TASK))
        .map(|(g, pre)| {
            let mut sums = [vec![0.0; width], vec![0.0; width], vec![0.0; width]];
            jump_backward_rows(g, pre, thresholds, half_width, &mut sums);
            sums
        })
        .collect();
    let mut sums: [Vec<Vec<f32>>; 3] = Default::default();
    for partial in partials {
        for (all, part) in sums.iter_mut().zip(partial) {
            all.push(part);
        }
    }
    let [g_pre_sums, counts, g_f_sums] = sums.map(|parts| add_partials(parts, width));
    Window {
        g_pre_sums,
        counts: counts.iter().map(|&c| c as u32).collect(),
        g_f_sums,
    }
}

/// `sums`: the pre-activation gradient's, the window's token counts, the window's gradient.
#[multiversion(targets = "simd")]
fn jump_backward_rows(
    g: &mut [f32],
    pre: &[f32],
    thresholds: &[f32],
    half_width: f32,
    sums: &mut [Vec<f32>; 3],
) {
    let [g_pre_sums, counts, g_f_sums] = sums;
    for (g_row, pre_row) in g.chunks_mut(thresholds.len()).zip(pre.chunks(thresholds.len())) {
        for (j, (g, &p)) in g_row.iter_mut().zip(pre_row).enumerate() {
            let t = thresholds[j];
            let in_window = (p - t).abs() < half_width;
            counts[j] += if in_window { 1.0 } else { 0.0 };
            g_f_sums[j] += if in_window { *g } else { 0.0 };
            *g = if p > t { *g } else { 0.0 };
            g_pre_sums[j] += *g;
        }
    }
}
