//! SAE architectures: one file each behind the [`Architecture`] trait, found by name through
//! [`build`] (the registry).
//!
//! An architecture owns what differs between recipes: how latents are chosen from the
//! pre-activations, the sparsity and auxiliary losses, their gradients, constraints on the
//! decoder, and what the saved (inference) SAE computes. The trainer owns everything shared:
//! data, normalisation, the optimiser, schedules, checkpoints.

mod batchtopk;
mod common;
mod jumprelu;
mod matryoshka;
mod relu;
mod topk;

use loupe_util::Problems as _;

use crate::{Activation, Error, Params, Result, TrainConfig};

/// The architectures [`build`] knows, as a config names them (`architecture = "topk"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArchitectureName {
    /// ReLU with a decoder-norm-weighted L1 penalty (Anthropic, April 2024).
    Relu,
    /// TopK: the k largest pre-activations per token (Gao et al. 2024), with AuxK.
    Topk,
    /// BatchTopK: the k × batch largest over the batch (Bussmann et al. 2024); saved as a JumpReLU.
    Batchtopk,
    /// JumpReLU with learned per-latent thresholds and an L0 penalty (Rajamanoharan et al. 2024).
    Jumprelu,
    /// Matryoshka BatchTopK: BatchTopK whose nested prefixes each reconstruct the input
    /// (Bussmann et al. 2025); saved as a JumpReLU.
    Matryoshka,
}

impl ArchitectureName {
    /// The name as written in configs.
    pub fn as_str(self) -> &'static str {
        match self {
            ArchitectureName::Relu => "relu",
            ArchitectureName::Topk => "topk",
            ArchitectureName::Batchtopk => "batchtopk",
            ArchitectureName::Jumprelu => "jumprelu",
            ArchitectureName::Matryoshka => "matryoshka",
        }
    }
}

impl std::fmt::Display for ArchitectureName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a training step needs to know besides the batch.
pub struct StepContext<'a> {
    /// 0 to 1: how far the sparsity penalty has warmed up.
    pub sparsity_scale: f64,
    /// Latents that have not fired within the dead window (for AuxK).
    pub dead: &'a [u32],
}

/// The result of one forward and backward pass.
pub struct StepOutput {
    /// Named loss terms; the training loss is their sum.
    pub losses: Vec<(&'static str, f64)>,
    /// d(loss)/d(parameter), for every parameter.
    pub grads: Params,
    /// Tokens of this batch each latent fired on.
    pub fired: Vec<u32>,
    /// Σ ||x̂ − target||² over the batch, in the (normalised) training space.
    pub squared_error: f64,
    /// d(loss)/d(x̂), `[batch, d_in]`: the gradient reaching the reconstruction (every nested
    /// level's, for Matryoshka), through which a skip transcoder's skip term learns.
    pub recon_grad: Vec<f32>,
}

impl StepOutput {
    /// The training loss: the sum of the named terms.
    pub fn loss(&self) -> f64 {
        self.losses.iter().map(|(_, v)| v).sum()
    }

    /// Mean active latents per token.
    pub fn l0(&self, tokens: usize) -> f64 {
        self.fired.iter().map(|&c| c as f64).sum::<f64>() / tokens.max(1) as f64
    }
}

/// One SAE training recipe: how latents are chosen, the losses and their gradients, decoder
/// constraints, and what the saved SAE computes. Built by name with [`build`].
pub trait Architecture: Send {
    /// The name as configs write it (`topk`), also recorded in the saved SAE's metadata.
    fn name(&self) -> &'static str;

    /// Whether the recipe subtracts b_dec from the input before encoding.
    fn apply_b_dec_to_input(&self) -> bool;

    /// Whether the parameters include learned thresholds (`Params::log_threshold`).
    fn has_thresholds(&self) -> bool {
        false
    }

    /// Sets architecture-specific initial values (thresholds) on freshly initialised parameters.
    fn init(&self, _params: &mut Params) {}

    /// Loss terms and gradients on a batch: inputs `x` and the `target` to reconstruct (both
    /// `[batch, d_in]` row-major, normalised). An SAE's target is `x` itself; a transcoder's is
    /// another hook's activations of the same tokens.
    fn step(&mut self, params: &Params, x: &[f32], target: &[f32], ctx: &StepContext) -> Result<StepOutput>;

    /// Decoder rows are kept at unit norm: the trainer removes each row's gradient component
    /// along the row before the update and renormalises after it.
    fn unit_norm_decoder(&self) -> bool {
        false
    }

    /// What the saved SAE computes from its pre-activations.
    fn inference(&self, params: &Params) -> Activation;

    /// State outside the parameters that a checkpoint must keep (BatchTopK's threshold).
    fn state(&self) -> Vec<(String, f64)> {
        Vec::new()
    }

    /// Restores the state [`Architecture::state`] returned, when resuming from a checkpoint.
    fn set_state(&mut self, _state: &[(String, f64)]) {}
}

/// One training step of `arch` on inputs `x` towards `target` (`x` itself for an SAE), with a
/// skip transcoder's linear skip term when `params.skip` is set. Any architecture can be a skip
/// transcoder this way: with x̂ = dictionary(x) + x · skipᵀ, the dictionary reconstructs what
/// the skip term leaves, `target − x · skipᵀ`, and the skip matrix gets the gradient that
/// reaches x̂, `Σ_tokens d(loss)/d(x̂) ⊗ x`.
pub fn step(
    arch: &mut dyn Architecture,
    params: &Params,
    x: &[f32],
    target: &[f32],
    ctx: &StepContext,
) -> Result<StepOutput> {
    let Some(skip) = &params.skip else {
        return arch.step(params, x, target, ctx);
    };
    let d = params.d_in;
    let rows = x.len() / d;
    let mut skipped = vec![0.0; rows * d];
    common::matmul_into(
        &mut skipped,
        common::Matrix::new(x, rows, d),
        common::Matrix::new(skip, d, d).t(),
        false,
    );
    let residual: Vec<f32> = target.iter().zip(&skipped).map(|(t, s)| t - s).collect();
    let mut output = arch.step(params, x, &residual, ctx)?;
    let g_skip = output
        .grads
        .skip
        .as_mut()
        .expect("gradients shaped like the parameters");
    common::matmul_into(
        g_skip,
        common::Matrix::new(&output.recon_grad, rows, d).t(),
        common::Matrix::new(x, rows, d),
        false,
    );
    Ok(output)
}

/// The registry: the architecture `config.architecture` names, set up for inputs of width `d_in`.
pub fn build(config: &TrainConfig, d_in: usize) -> Result<Box<dyn Architecture>> {
    let d_sae = config.d_sae(d_in);
    let need = |field: &str, value: Option<f64>| {
        value.ok_or_else(|| {
            Error::config(
                field,
                format!("architecture {} needs it set", config.architecture),
            )
        })
    };
    let k = || -> Result<usize> {
        let k = need("k", config.k.map(|k| k as f64))? as usize;
        if k == 0 || k > d_sae {
            return Err(Error::config(
                "k",
                format!("must be between 1 and d_sae = {d_sae}, not {k}"),
            ));
        }
        Ok(k)
    };
    let aux = common::AuxK {
        k: config.aux_k.unwrap_or(d_in / 2).max(1),
        coefficient: config.aux_coefficient,
    };
    // A transcoder's b_dec lives at the target hook, so it is never taken from the input.
    let apply = |default: bool| {
        config
            .apply_b_dec_to_input
            .unwrap_or(default && !config.is_transcoder())
    };
    let batch_top_k = || -> Result<batchtopk::BatchTopK> {
        Ok(batchtopk::BatchTopK {
            k: k()?,
            aux,
            apply_b_dec_to_input: apply(true),
            threshold_lr: config.threshold_lr,
            threshold: None,
            pre: Vec::new(),
        })
    };
    Ok(match config.architecture {
        ArchitectureName::Relu => Box::new(relu::Relu {
            l1_coefficient: need("l1_coefficient", config.l1_coefficient)?,
            apply_b_dec_to_input: apply(false),
            f: Vec::new(),
            g_pre: Vec::new(),
        }),
        ArchitectureName::Topk => Box::new(topk::TopK {
            k: k()?,
            aux,
            apply_b_dec_to_input: apply(true),
            pre: Vec::new(),
        }),
        ArchitectureName::Batchtopk => Box::new(batch_top_k()?),
        ArchitectureName::Matryoshka => Box::new(matryoshka::Matryoshka {
            batch_top_k: batch_top_k()?,
            level_ends: matryoshka_level_ends(config.matryoshka_groups.as_deref(), d_sae)?,
        }),
        ArchitectureName::Jumprelu => Box::new(jumprelu::JumpRelu {
            target_l0: need("target_l0", config.target_l0)?,
            l0_coefficient: config.l0_coefficient,
            bandwidth: config.threshold_bandwidth,
            initial_threshold: config.initial_threshold,
            apply_b_dec_to_input: apply(true),
            buffers: Default::default(),
        }),
    })
}

/// The end of each nested prefix of a Matryoshka dictionary, from the configured group sizes,
/// which must be positive and add up to d_sae.
fn matryoshka_level_ends(groups: Option<&[usize]>, d_sae: usize) -> Result<Vec<usize>> {
    const FIELD: &str = "matryoshka_groups";
    let groups = groups.ok_or_else(|| {
        Error::config(
            FIELD,
            format!(
                "architecture matryoshka needs the sizes of its latent groups, adding up to d_sae = {d_sae} \
                 (e.g. [{}, {}])",
                d_sae / 4,
                d_sae - d_sae / 4
            ),
        )
    })?;
    if groups.is_empty() || groups.contains(&0) {
        return Err(Error::config(
            FIELD,
            format!("is {groups:?}; every group needs at least one latent"),
        ));
    }
    let total: usize = groups.iter().sum();
    if total != d_sae {
        return Err(Error::config(
            FIELD,
            format!(
                "is {groups:?}, which adds up to {total} latents, but d_sae is {d_sae}: \
                 change the groups (or d_sae, or expansion) so that they agree"
            ),
        ));
    }
    Ok(groups
        .iter()
        .scan(0, |end, &size| {
            *end += size;
            Some(*end)
        })
        .collect())
}
