//! ReLU SAE, Anthropic's April 2024 recipe: `f = ReLU(W_enc x + b_enc)`, loss
//! `||x − x̂||² + λ Σ_i f_i ||W_dec,i||` (the L1 penalty weighted by each decoder row's norm, so
//! that shrinking a latent's activation while growing its decoder row does not evade it), no
//! constraint on the decoder norm, λ warmed up from 0, b_dec not subtracted from the input.
//! Dense: every latent's activation is decoded.

use candle_core::Tensor;

use super::common::{
    dense_decode, dense_encoder_grads, fire_counts, input_bias_gradient, pre_activations, vector,
};
use super::{Architecture, StepContext, StepOutput};
use crate::params::to_vec;
use crate::{Activation, Params, Result};

/// The ReLU recipe (see the module docs).
pub struct Relu {
    /// Weight λ of the decoder-norm-weighted L1 penalty.
    pub l1_coefficient: f64,
    /// Whether b_dec is subtracted from the input before encoding (false in the April 2024 recipe).
    pub apply_b_dec_to_input: bool,
}

impl Architecture for Relu {
    fn name(&self) -> &'static str {
        "relu"
    }

    fn apply_b_dec_to_input(&self) -> bool {
        self.apply_b_dec_to_input
    }

    fn step(&mut self, params: &Params, x: &Tensor, ctx: &StepContext) -> Result<StepOutput> {
        let rows = x.dim(0)? as f64;
        let (x_in, pre) = pre_activations(params, x, self.apply_b_dec_to_input)?;
        let active = pre.gt(0.0)?.to_dtype(candle_core::DType::F32)?;
        let f = pre.relu()?;
        let decoded = dense_decode(params, x, &f)?;

        let lambda = self.l1_coefficient * ctx.sparsity_scale;
        let norms = params.decoder_norms();
        let f_sums = to_vec(&f.sum(0)?)?;
        let l1: f64 = f_sums
            .iter()
            .zip(&norms)
            .map(|(&s, &n)| (s * n) as f64)
            .sum::<f64>()
            / rows;

        let mut grads = params.zeros_like();
        // d(λ Σ f_i ||dec_i||)/d(dec_i) = λ (Σ_tokens f_i) dec_i / ||dec_i||, per token.
        grads.dec = to_vec(&decoded.g_dec)?;
        let d = params.d_in;
        for (i, g_row) in grads.dec.chunks_mut(d).enumerate() {
            let w = (lambda / rows) as f32 * f_sums[i] / norms[i].max(1e-12);
            g_row
                .iter_mut()
                .zip(&params.dec[i * d..][..d])
                .for_each(|(g, &w_i)| *g += w * w_i);
        }
        grads.b_dec = to_vec(&decoded.g_b_dec)?;
        let penalty = vector(norms.iter().map(|n| n * (lambda / rows) as f32).collect())?;
        let g_pre = (decoded.g_f.broadcast_add(&penalty)? * &active)?;
        dense_encoder_grads(&mut grads, &g_pre, &x_in)?;
        if self.apply_b_dec_to_input {
            input_bias_gradient(params, &mut grads);
        }
        Ok(StepOutput {
            losses: vec![("mse", decoded.squared_error / rows), ("l1", lambda * l1)],
            grads,
            fired: fire_counts(&active)?,
            squared_error: decoded.squared_error,
        })
    }

    fn inference(&self, _params: &Params) -> Activation {
        Activation::Relu
    }
}
