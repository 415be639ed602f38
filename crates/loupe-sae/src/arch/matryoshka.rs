//! Matryoshka BatchTopK SAE (Bussmann et al. 2025; Nabeshima 2024): the dictionary is cut into
//! groups, and each prefix of groups (the first group, the first two, ..., all of them) must
//! reconstruct the input on its own. The loss is the sum of the prefixes' MSEs. Early latents
//! then carry the general features that every prefix needs, and the later ones refine them,
//! instead of a general feature being absorbed into many specific ones. Latents are chosen as
//! in BatchTopK (the batch keeps its k × batch largest activations), and the saved SAE is the
//! same JumpReLU with BatchTopK's learned threshold, as SAELens saves it.

use super::batchtopk::BatchTopK;
use super::{Architecture, StepContext, StepOutput};
use crate::{Activation, Params, Result};

/// The Matryoshka BatchTopK recipe (see the module docs).
pub struct Matryoshka {
    /// Latent selection, threshold and AuxK, as in plain BatchTopK.
    pub batch_top_k: BatchTopK,
    /// Where each prefix ends: the running sums of the configured group sizes, the last d_sae.
    pub level_ends: Vec<usize>,
}

impl Architecture for Matryoshka {
    fn name(&self) -> &'static str {
        "matryoshka"
    }

    fn apply_b_dec_to_input(&self) -> bool {
        self.batch_top_k.apply_b_dec_to_input
    }

    fn step(&mut self, params: &Params, x: &[f32], target: &[f32], ctx: &StepContext) -> Result<StepOutput> {
        self.batch_top_k
            .step_nested(params, x, target, ctx, &self.level_ends)
    }

    fn unit_norm_decoder(&self) -> bool {
        self.batch_top_k.unit_norm_decoder()
    }

    fn inference(&self, params: &Params) -> Activation {
        self.batch_top_k.inference(params)
    }

    fn state(&self) -> Vec<(String, f64)> {
        self.batch_top_k.state()
    }

    fn set_state(&mut self, state: &[(String, f64)]) {
        self.batch_top_k.set_state(state)
    }
}
