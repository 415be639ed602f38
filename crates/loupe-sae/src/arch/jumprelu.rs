//! JumpReLU SAE (Rajamanoharan et al. 2024, Gemma Scope): `f_i = pre_i · H(pre_i − θ_i)` with a
//! learned threshold θ_i per latent, and a penalty on L0 itself. The step function has no useful
//! derivative, so θ learns through straight-through estimators: the derivative of H(z − θ) in θ
//! is taken as −K((z − θ)/ε)/ε with K the unit rectangle, i.e. the change of the loss when θ moves
//! across a window of width ε, which is what a finite difference of width ε measures. The L0
//! penalty steers towards a target: λ·(L0/target − 1)².

use candle_core::{DType, Tensor};

use super::common::{
    dense_decode, dense_encoder_grads, fire_counts, input_bias_gradient, pre_activations, vector,
};
use super::{Architecture, StepContext, StepOutput};
use crate::params::to_vec;
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

    fn step(&mut self, params: &Params, x: &Tensor, ctx: &StepContext) -> Result<StepOutput> {
        let rows = x.dim(0)? as f64;
        let eps = self.bandwidth;
        let thresholds = params.thresholds().expect("JumpReLU parameters have thresholds");
        let theta = vector(thresholds.clone())?;
        let (x_in, pre) = pre_activations(params, x, self.apply_b_dec_to_input)?;
        let active = pre.broadcast_gt(&theta)?.to_dtype(DType::F32)?;
        let f = (&pre * &active)?;
        let decoded = dense_decode(params, x, &f)?;

        let mut grads = params.zeros_like();
        grads.dec = to_vec(&decoded.g_dec)?;
        grads.b_dec = to_vec(&decoded.g_b_dec)?;
        let g_pre = (&decoded.g_f * &active)?;
        dense_encoder_grads(&mut grads, &g_pre, &x_in)?;
        if self.apply_b_dec_to_input {
            input_bias_gradient(params, &mut grads);
        }

        // Tokens whose pre-activation lies within ε/2 of the threshold.
        let in_window = pre
            .broadcast_sub(&theta)?
            .abs()?
            .lt(eps / 2.0)?
            .to_dtype(DType::F32)?;
        let window_counts = to_vec(&in_window.sum(0)?)?;
        let g_f_in_window = to_vec(&(&decoded.g_f * &in_window)?.sum(0)?)?;
        let fired = fire_counts(&active)?;
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
                ("mse", decoded.squared_error / rows),
                ("l0_penalty", lambda * relative * relative),
            ],
            grads,
            fired,
            squared_error: decoded.squared_error,
        })
    }

    fn inference(&self, params: &Params) -> Activation {
        Activation::JumpRelu {
            threshold: params.thresholds().expect("JumpReLU parameters have thresholds"),
        }
    }
}
