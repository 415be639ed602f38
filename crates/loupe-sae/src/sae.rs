//! A trained SAE as it is saved and used: SAELens's tensors and orientation (`W_enc [d_in, d_sae]`,
//! `W_dec [d_sae, d_in]`), in the model's own activation units (any training normalisation is
//! folded into the weights). A transcoder is the same struct: it reads one hook and writes
//! another (`metadata.hook_name_out`), with an optional linear skip term (`w_skip`).

use candle_core::{Device, Tensor};
use loupe_model::with_f32;
use loupe_util::Problems as _;

use crate::params::to_vec;
use crate::sparse::{top_k_per_row, SparseCode};
use crate::{Error, Params, Result};

/// What an SAE computes from its pre-activations `pre = (x − b_dec?) W_enc + b_enc`.
#[derive(Clone, Debug, PartialEq)]
pub enum Activation {
    /// `ReLU(pre)` (SAELens "standard").
    Relu,
    /// The k largest of `pre`, then ReLU (SAELens "topk").
    TopK {
        /// Active latents per token.
        k: usize,
    },
    /// `ReLU(pre) · (pre > threshold)` per latent (SAELens "jumprelu"; also what BatchTopK saves).
    JumpRelu {
        /// Per latent, `[d_sae]`, in the model's activation units.
        threshold: Vec<f32>,
    },
}

impl Activation {
    /// SAELens's name for it.
    pub fn saelens_name(&self) -> &'static str {
        match self {
            Activation::Relu => "standard",
            Activation::TopK { .. } => "topk",
            Activation::JumpRelu { .. } => "jumprelu",
        }
    }
}

/// Where an SAE belongs: SAELens's `metadata` block.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SaeMetadata {
    /// The model the SAE was trained on, as loupe or SAELens names it.
    pub model_name: String,
    /// The hook point, as a string (`blocks.15.hook_resid_post`): what the SAE reads.
    pub hook_name: String,
    /// A transcoder's output hook (`blocks.3.hook_mlp_out`): what it reconstructs, in place of
    /// which it is spliced. `None` for an SAE, which reconstructs `hook_name`.
    pub hook_name_out: Option<String>,
    /// sha256 of the model file the training activations came from (loupe's check that an SAE
    /// is used with the model it was trained on).
    pub model_sha256: Option<String>,
    /// Tokens per context of the training activations.
    pub context_size: Option<usize>,
    /// The activation store (or dataset) it was trained on.
    pub dataset_path: Option<String>,
    /// The architecture it was trained as (`batchtopk` saves as a JumpReLU).
    pub trained_architecture: Option<String>,
    /// Activations with a larger norm were left out of training; evaluation leaves them out too
    /// and splicing passes them through unchanged.
    pub norm_cutoff: Option<f32>,
}

/// A trained sparse autoencoder, ready to encode and decode activations in the model's units.
#[derive(Clone, Debug)]
pub struct Sae {
    /// What it computes from the pre-activations.
    pub activation: Activation,
    /// Input width: the hook's width.
    pub d_in: usize,
    /// Number of latents.
    pub d_sae: usize,
    /// `[d_in, d_sae]`
    pub w_enc: Tensor,
    /// `[d_sae]`
    pub b_enc: Tensor,
    /// `[d_sae, d_in]`
    pub w_dec: Tensor,
    /// `[d_in]`
    pub b_dec: Tensor,
    /// `[d_out, d_in]` (here d_out = d_in), skip transcoders only: the linear skip term, added to
    /// the reconstruction as `x · W_skipᵀ` (SAELens's and sparsify's orientation).
    pub w_skip: Option<Tensor>,
    /// Whether b_dec is subtracted from the input before encoding.
    pub apply_b_dec_to_input: bool,
    /// Where it belongs (model, hook) and how it was trained.
    pub metadata: SaeMetadata,
}

impl Sae {
    /// The SAE that training parameters define for raw activations, when training saw them
    /// multiplied by `scale`: with x' = scale·x, `(x' − b) E = (x − b/scale)(scale·E)` and
    /// `(f D + b)/scale = f (D/scale) + b/scale`, so the latents are unchanged.
    pub fn from_params(
        params: &Params,
        activation: Activation,
        apply_b_dec_to_input: bool,
        scale: f32,
        metadata: SaeMetadata,
    ) -> Result<Self> {
        Self::from_scaled_params(params, activation, apply_b_dec_to_input, scale, scale, metadata)
    }

    /// [`Sae::from_params`] for parameters trained on inputs multiplied by `scale` and targets
    /// multiplied by `target_scale` (a transcoder's; an SAE's two scales are one): the decoder
    /// and b_dec are divided by `target_scale`, and a skip term `(scale·x)·Sᵀ/target_scale` is
    /// `x · (Sᵀ·scale/target_scale)`.
    pub fn from_scaled_params(
        params: &Params,
        activation: Activation,
        apply_b_dec_to_input: bool,
        scale: f32,
        target_scale: f32,
        metadata: SaeMetadata,
    ) -> Result<Self> {
        let dev = &Device::Cpu;
        let (d_in, d_sae) = (params.d_in, params.d_sae);
        let out_scale = target_scale as f64;
        let w_enc = (Tensor::from_slice(&params.enc, (d_sae, d_in), dev)?
            .t()?
            .contiguous()?
            * scale as f64)?;
        let w_dec = (Tensor::from_slice(&params.dec, (d_sae, d_in), dev)? / out_scale)?;
        let b_dec = (Tensor::from_slice(&params.b_dec, d_in, dev)? / out_scale)?;
        let w_skip = match &params.skip {
            Some(skip) => Some((Tensor::from_slice(skip, (d_in, d_in), dev)? * (scale as f64 / out_scale))?),
            None => None,
        };
        Ok(Sae {
            activation,
            d_in,
            d_sae,
            w_enc,
            b_enc: Tensor::from_slice(&params.b_enc, d_sae, dev)?,
            w_dec,
            b_dec,
            w_skip,
            apply_b_dec_to_input,
            metadata,
        })
    }

    /// Whether it reconstructs another hook than it reads.
    pub fn is_transcoder(&self) -> bool {
        self.metadata.hook_name_out.is_some()
    }

    /// The hook it reconstructs (and is spliced in place of): `hook_name_out` for a transcoder,
    /// else `hook_name`.
    pub fn output_hook_name(&self) -> &str {
        self.metadata
            .hook_name_out
            .as_deref()
            .unwrap_or(&self.metadata.hook_name)
    }

    /// Checks shapes against `d_in`/`d_sae`; `origin` names the file in errors.
    pub fn check_shapes(&self, origin: &str) -> Result<()> {
        let expect = |name: &str, t: &Tensor, shape: &[usize]| {
            if t.dims() == shape {
                Ok(())
            } else {
                Err(Error::file(
                    origin,
                    format!(
                        "{name} has shape {:?}, expected {shape:?} for d_in {} and d_sae {}",
                        t.dims(),
                        self.d_in,
                        self.d_sae
                    ),
                ))
            }
        };
        expect("W_enc", &self.w_enc, &[self.d_in, self.d_sae])?;
        expect("W_dec", &self.w_dec, &[self.d_sae, self.d_in])?;
        expect("b_enc", &self.b_enc, &[self.d_sae])?;
        expect("b_dec", &self.b_dec, &[self.d_in])?;
        if let Some(w_skip) = &self.w_skip {
            expect("W_skip", w_skip, &[self.d_in, self.d_in])?;
        }
        if let Activation::JumpRelu { threshold } = &self.activation {
            if threshold.len() != self.d_sae {
                return Err(Error::file(
                    origin,
                    format!(
                        "threshold has {} entries, expected d_sae = {}",
                        threshold.len(),
                        self.d_sae
                    ),
                ));
            }
        }
        if let Activation::TopK { k } = self.activation {
            if k == 0 || k > self.d_sae {
                return Err(Error::file(
                    origin,
                    format!("k = {k} must be between 1 and d_sae = {}", self.d_sae),
                ));
            }
        }
        Ok(())
    }

    /// Pre-activations `[n, d_sae]` of activations `x` (`[n, d_in]`, any float dtype).
    pub fn pre_activations(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.to_dtype(candle_core::DType::F32)?;
        let x_in = if self.apply_b_dec_to_input {
            x.broadcast_sub(&self.b_dec)?
        } else {
            x
        };
        Ok(x_in.matmul(&self.w_enc)?.broadcast_add(&self.b_enc)?)
    }

    /// Latent activations, `[n, d_sae]`.
    pub fn encode(&self, x: &Tensor) -> Result<Tensor> {
        let pre = self.pre_activations(x)?;
        Ok(match &self.activation {
            Activation::Relu => pre.relu()?,
            Activation::TopK { k } => {
                let n = pre.dim(0)?;
                let dense = with_f32(&pre, |p| top_k_per_row(p, self.d_sae, *k, None).to_dense())?;
                Tensor::from_vec(dense, (n, self.d_sae), &Device::Cpu)?
            }
            Activation::JumpRelu { threshold } => {
                let threshold = Tensor::from_slice(threshold, self.d_sae, &Device::Cpu)?;
                let open = pre.broadcast_gt(&threshold)?.to_dtype(candle_core::DType::F32)?;
                (pre.relu()? * open)?
            }
        })
    }

    /// The active latents of each row, sparse.
    pub fn encode_sparse(&self, x: &Tensor) -> Result<SparseCode> {
        let pre = self.pre_activations(x)?;
        if let Activation::TopK { k } = self.activation {
            return Ok(with_f32(&pre, |p| top_k_per_row(p, self.d_sae, k, None))?);
        }
        let dense = to_vec(&self.encode(x)?)?;
        let rows: Vec<Vec<(u32, f32)>> = dense
            .chunks(self.d_sae)
            .map(|row| {
                row.iter()
                    .enumerate()
                    .filter(|(_, &v)| v != 0.0)
                    .map(|(i, &v)| (i as u32, v))
                    .collect()
            })
            .collect();
        Ok(SparseCode::from_rows(self.d_sae, rows))
    }

    /// Reconstruction from latent activations `[n, d_sae]`.
    pub fn decode(&self, f: &Tensor) -> Result<Tensor> {
        Ok(f.matmul(&self.w_dec)?.broadcast_add(&self.b_dec)?)
    }

    /// Reconstruction from a sparse code, touching only the active decoder rows.
    pub fn decode_sparse(&self, code: &SparseCode) -> Result<Tensor> {
        let w_dec = to_vec(&self.w_dec)?;
        let out = code.weighted_rows(&code.values, &w_dec, self.d_in);
        let out = Tensor::from_vec(out, (code.rows(), self.d_in), &Device::Cpu)?;
        Ok(out.broadcast_add(&self.b_dec)?)
    }

    /// The skip term `x · W_skipᵀ` of a skip transcoder (`x` f32 on the CPU), added to
    /// `decoded`; an SAE's `decoded` is returned as it is.
    pub fn add_skip(&self, x: &Tensor, decoded: Tensor) -> Result<Tensor> {
        match &self.w_skip {
            Some(w_skip) => Ok((decoded + x.matmul(&w_skip.t()?)?)?),
            None => Ok(decoded),
        }
    }

    /// `decode(encode(x))` plus a skip transcoder's skip term, in x's dtype and on x's device.
    /// The SAE's weights and sparse kernels live on the CPU, so a model on another device is
    /// spliced through a copy.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let on_cpu = x.to_device(&Device::Cpu)?.to_dtype(candle_core::DType::F32)?;
        let decoded = self.decode(&self.encode(&on_cpu)?)?;
        let out = self.add_skip(&on_cpu, decoded)?.to_dtype(x.dtype())?;
        Ok(out.to_device(x.device())?)
    }

    /// Whether each row of `x` is one the SAE is meant for (its norm within the cutoff).
    pub fn in_range(&self, x: &Tensor) -> Result<Vec<bool>> {
        let Some(cutoff) = self.metadata.norm_cutoff else {
            return Ok(vec![true; x.dim(0)?]);
        };
        let norms = x
            .to_dtype(candle_core::DType::F32)?
            .sqr()?
            .sum(1)?
            .sqrt()?
            .to_vec1::<f32>()?;
        Ok(norms.iter().map(|&n| n <= cutoff).collect())
    }

    /// What splicing the SAE in puts in place of `x`: the reconstruction, except for rows beyond
    /// the norm cutoff, which pass through unchanged.
    pub fn splice(&self, x: &Tensor) -> Result<Tensor> {
        let keep = self.in_range(x)?;
        let recon = self.forward(x)?;
        if keep.iter().all(|&k| k) {
            return Ok(recon);
        }
        let mask: Vec<u8> = keep.iter().map(|&k| k as u8).collect();
        let mask = Tensor::from_vec(mask, (keep.len(), 1), x.device())?.broadcast_as(x.shape())?;
        Ok(mask.where_cond(&recon, x)?)
    }
}
