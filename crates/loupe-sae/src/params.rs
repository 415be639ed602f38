//! The trainable parameters of an SAE, and gradients of the same shape.
//!
//! Training keeps the weights as flat `Vec<f32>` so that the optimiser, gradient clipping, the
//! sparse kernels and finite-difference checks can walk them directly; dense matrix products go
//! through candle tensors made from them. Both matrices are stored one latent per row,
//! `[d_sae, d_in]`: the decoder as SAELens stores it, the encoder as the transpose of SAELens's
//! `W_enc [d_in, d_sae]` (the conversion happens at the file boundary, in `saelens.rs`). With both
//! laid out by latent, "decoder initialised as the encoder's transpose" is a copy, and the
//! gradient of one latent's encoder or decoder row is one contiguous slice.

use candle_core::Tensor;

use crate::Result;

/// An SAE's trainable parameters as flat f32 vectors (also used for gradients and Adam's moments).
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    /// Input width.
    pub d_in: usize,
    /// Number of latents.
    pub d_sae: usize,
    /// `[d_sae, d_in]`: row i is the direction latent i reads.
    pub enc: Vec<f32>,
    /// `[d_sae]`
    pub b_enc: Vec<f32>,
    /// `[d_sae, d_in]`: row i is the direction latent i writes.
    pub dec: Vec<f32>,
    /// `[d_in]`
    pub b_dec: Vec<f32>,
    /// `[d_sae]`, JumpReLU only: log of each latent's threshold (learned in log space so that it
    /// stays positive).
    pub log_threshold: Option<Vec<f32>>,
    /// `[d_in, d_in]`, skip transcoders only: the linear skip term added to the reconstruction,
    /// `x̂ += x · skipᵀ` (row o: how output dimension o reads the input; sparsify's `W_skip`).
    pub skip: Option<Vec<f32>>,
}

impl Params {
    /// All-zero parameters, with a `log_threshold` when `with_threshold` (JumpReLU).
    pub fn zeros(d_in: usize, d_sae: usize, with_threshold: bool) -> Self {
        Params {
            d_in,
            d_sae,
            enc: vec![0.0; d_sae * d_in],
            b_enc: vec![0.0; d_sae],
            dec: vec![0.0; d_sae * d_in],
            b_dec: vec![0.0; d_in],
            log_threshold: with_threshold.then(|| vec![0.0; d_sae]),
            skip: None,
        }
    }

    /// These parameters with an all-zero skip matrix (a skip transcoder's, at the start).
    pub fn with_zero_skip(mut self) -> Self {
        self.skip = Some(vec![0.0; self.d_in * self.d_in]);
        self
    }

    /// Zeros shaped like `self` (a gradient buffer).
    pub fn zeros_like(&self) -> Self {
        let zeros = Params::zeros(self.d_in, self.d_sae, self.log_threshold.is_some());
        match self.skip {
            Some(_) => zeros.with_zero_skip(),
            None => zeros,
        }
    }

    /// Every tensor with its name, in a fixed order.
    pub fn fields(&self) -> Vec<(&'static str, &Vec<f32>)> {
        let mut fields = vec![
            ("enc", &self.enc),
            ("b_enc", &self.b_enc),
            ("dec", &self.dec),
            ("b_dec", &self.b_dec),
        ];
        if let Some(t) = &self.log_threshold {
            fields.push(("log_threshold", t));
        }
        if let Some(s) = &self.skip {
            fields.push(("skip", s));
        }
        fields
    }

    /// Every tensor with its name, mutably, in the order of [`Params::fields`].
    pub fn fields_mut(&mut self) -> Vec<(&'static str, &mut Vec<f32>)> {
        let mut fields = vec![
            ("enc", &mut self.enc),
            ("b_enc", &mut self.b_enc),
            ("dec", &mut self.dec),
            ("b_dec", &mut self.b_dec),
        ];
        if let Some(t) = &mut self.log_threshold {
            fields.push(("log_threshold", t));
        }
        if let Some(s) = &mut self.skip {
            fields.push(("skip", s));
        }
        fields
    }

    /// Sum of squares over every tensor (the squared global norm).
    pub fn norm_sq(&self) -> f64 {
        self.fields()
            .iter()
            .map(|(_, v)| v.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>())
            .sum()
    }

    /// Multiplies every value by `factor` (gradient clipping).
    pub fn scale(&mut self, factor: f32) {
        for (_, v) in self.fields_mut() {
            v.iter_mut().for_each(|x| *x *= factor);
        }
    }

    /// Whether every value is finite (no NaN or infinity).
    pub fn all_finite(&self) -> bool {
        self.fields().iter().all(|(_, v)| v.iter().all(|x| x.is_finite()))
    }

    /// Each latent's threshold, `exp(log_threshold)`.
    pub fn thresholds(&self) -> Option<Vec<f32>> {
        self.log_threshold
            .as_ref()
            .map(|t| t.iter().map(|x| x.exp()).collect())
    }

    /// Euclidean norm of each decoder row.
    pub fn decoder_norms(&self) -> Vec<f32> {
        self.dec.chunks(self.d_in).map(norm).collect()
    }
}

pub(crate) use loupe_util::vector::norm;

/// The f32 data of a tensor as a flat vector.
pub(crate) fn to_vec(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_vec1::<f32>()?)
}
