//! TopK SAE (Gao et al. 2024, OpenAI): each token keeps its k largest pre-activations (then a
//! ReLU); decoder rows have unit norm; the AuxK loss gives dead latents a gradient. Decoding and
//! backpropagation touch only the active latents (see `sparse.rs`).

use super::common::{encoder_input, pre_activations_into, sparse_backward, AuxK};
use super::{Architecture, StepContext, StepOutput};
use crate::sparse::top_k_per_row;
use crate::{Activation, Params, Result};

/// The TopK recipe (see the module docs).
pub struct TopK {
    /// Active latents per token.
    pub k: usize,
    /// The AuxK loss on dead latents.
    pub aux: AuxK,
    /// Whether b_dec is subtracted from the input before encoding.
    pub apply_b_dec_to_input: bool,
    /// The pre-activations of the last batch, `[batch, d_sae]`, kept so that the next step
    /// reuses their memory.
    pub pre: Vec<f32>,
}

impl Architecture for TopK {
    fn name(&self) -> &'static str {
        "topk"
    }

    fn apply_b_dec_to_input(&self) -> bool {
        self.apply_b_dec_to_input
    }

    fn step(&mut self, params: &Params, x: &[f32], target: &[f32], ctx: &StepContext) -> Result<StepOutput> {
        let x_in = encoder_input(params, x, self.apply_b_dec_to_input);
        pre_activations_into(params, &x_in, &mut self.pre);
        let code = top_k_per_row(&self.pre, params.d_sae, self.k, None);
        sparse_backward(
            params,
            target,
            &x_in,
            &self.pre,
            &code,
            Some((self.aux, ctx.dead)),
            self.apply_b_dec_to_input,
            &[params.d_sae],
        )
    }

    fn unit_norm_decoder(&self) -> bool {
        true
    }

    fn inference(&self, _params: &Params) -> Activation {
        Activation::TopK { k: self.k }
    }
}
