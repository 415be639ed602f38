//! BatchTopK SAE (Bussmann et al. 2024): the batch as a whole keeps its k × batch largest
//! activations, so tokens get as many latents as they need. A single threshold, the running
//! mean of the smallest activation kept, replaces the batch at inference: the saved SAE is a
//! JumpReLU with that threshold for every latent (as SAELens saves it). Unit-norm decoder and
//! AuxK as in TopK.

use super::common::{encoder_input, pre_activations_into, sparse_backward, AuxK};
use super::{Architecture, StepContext, StepOutput};
use crate::sparse::batch_top_k;
use crate::{Activation, Params, Result};

/// The BatchTopK recipe (see the module docs).
pub struct BatchTopK {
    /// Mean active latents per token; the batch keeps its k × batch largest activations.
    pub k: usize,
    /// The AuxK loss on dead latents.
    pub aux: AuxK,
    /// Whether b_dec is subtracted from the input before encoding.
    pub apply_b_dec_to_input: bool,
    /// Rate of the running mean that estimates the inference threshold.
    pub threshold_lr: f64,
    /// The running estimate; `None` until the first step.
    pub threshold: Option<f64>,
    /// The pre-activations of the last batch, `[batch, d_sae]`, kept so that the next step
    /// reuses their memory.
    pub pre: Vec<f32>,
}

impl Architecture for BatchTopK {
    fn name(&self) -> &'static str {
        "batchtopk"
    }

    fn apply_b_dec_to_input(&self) -> bool {
        self.apply_b_dec_to_input
    }

    fn step(&mut self, params: &Params, x: &[f32], target: &[f32], ctx: &StepContext) -> Result<StepOutput> {
        self.step_nested(params, x, target, ctx, &[params.d_sae])
    }

    fn unit_norm_decoder(&self) -> bool {
        true
    }

    fn inference(&self, params: &Params) -> Activation {
        Activation::JumpRelu {
            threshold: vec![self.threshold.unwrap_or(0.0) as f32; params.d_sae],
        }
    }

    fn state(&self) -> Vec<(String, f64)> {
        self.threshold
            .map(|t| ("threshold".to_string(), t))
            .into_iter()
            .collect()
    }

    fn set_state(&mut self, state: &[(String, f64)]) {
        self.threshold = state.iter().find(|(k, _)| k == "threshold").map(|(_, v)| *v);
    }
}

impl BatchTopK {
    /// A step whose reconstruction loss is taken at each nested level of the dictionary
    /// (`level_ends`, see `sparse_backward`); `[d_sae]` is plain BatchTopK.
    pub(super) fn step_nested(
        &mut self,
        params: &Params,
        x: &[f32],
        target: &[f32],
        ctx: &StepContext,
        level_ends: &[usize],
    ) -> Result<StepOutput> {
        let rows = x.len() / params.d_in;
        let x_in = encoder_input(params, x, self.apply_b_dec_to_input);
        pre_activations_into(params, &x_in, &mut self.pre);
        let (code, smallest_kept) = batch_top_k(&self.pre, params.d_sae, self.k * rows);
        if let Some(smallest) = smallest_kept {
            let smallest = smallest as f64;
            self.threshold = Some(match self.threshold {
                None => smallest,
                Some(t) => t + self.threshold_lr * (smallest - t),
            });
        }
        sparse_backward(
            params,
            target,
            &x_in,
            &self.pre,
            &code,
            Some((self.aux, ctx.dead)),
            self.apply_b_dec_to_input,
            level_ends,
        )
    }
}
