//! Reconstruction and sparsity metrics, accumulated over batches.

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::params::to_vec;
use crate::{Result, Sae};

/// How well an SAE reconstructs a set of activations, in the model's units.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ReconstructionMetrics {
    /// Tokens the metrics are over.
    pub tokens: u64,
    /// Mean squared error per element.
    pub mse: f64,
    /// Fraction of variance unexplained: Σ||x̂ − x||² / Σ||x − mean(x)||².
    pub fvu: f64,
    /// 1 − FVU.
    pub explained_variance: f64,
    /// Mean active latents per token.
    pub l0: f64,
    /// Fraction of latents that never fired on these tokens.
    pub dead_fraction: f64,
    /// Fraction of latents firing on more than the dense threshold of these tokens.
    pub dense_fraction: f64,
}

/// Sums that the metrics are made of, so that any number of batches can be added up.
pub struct Tally {
    d_in: usize,
    tokens: u64,
    squared_error: f64,
    sum_x: Vec<f64>,
    sum_squared_norm: f64,
    /// Tokens each latent fired on.
    pub fired: Vec<u64>,
}

impl Tally {
    /// An empty tally for inputs `d_in` wide and `d_sae` latents.
    pub fn new(d_in: usize, d_sae: usize) -> Self {
        Tally {
            d_in,
            tokens: 0,
            squared_error: 0.0,
            sum_x: vec![0.0; d_in],
            sum_squared_norm: 0.0,
            fired: vec![0; d_sae],
        }
    }

    /// Encodes and reconstructs `x` (`[n, d_in]`) and adds it up.
    pub fn add_batch(&mut self, sae: &Sae, x: &Tensor) -> Result<()> {
        let code = sae.encode_sparse(x)?;
        let recon = to_vec(&sae.decode_sparse(&code)?)?;
        let x = to_vec(&x.to_dtype(candle_core::DType::F32)?)?;
        for (row, recon_row) in x.chunks(self.d_in).zip(recon.chunks(self.d_in)) {
            for ((&xi, &ri), s) in row.iter().zip(recon_row).zip(self.sum_x.iter_mut()) {
                let e = (ri - xi) as f64;
                self.squared_error += e * e;
                self.sum_squared_norm += (xi as f64) * (xi as f64);
                *s += xi as f64;
            }
            self.tokens += 1;
        }
        for (c, f) in code.fire_counts().iter().zip(self.fired.iter_mut()) {
            *f += *c as u64;
        }
        Ok(())
    }

    /// The metrics of everything added so far; a latent is dense when it fired on more than
    /// `dense_threshold` (a fraction of tokens) of them.
    pub fn metrics(&self, dense_threshold: f64) -> ReconstructionMetrics {
        let n = self.tokens.max(1) as f64;
        let mean_norm_sq: f64 = self.sum_x.iter().map(|s| (s / n) * (s / n)).sum();
        let variance = self.sum_squared_norm - n * mean_norm_sq;
        let fvu = self.squared_error / variance.max(f64::MIN_POSITIVE);
        let density = Density::new(&self.fired, self.tokens);
        ReconstructionMetrics {
            tokens: self.tokens,
            mse: self.squared_error / (n * self.d_in as f64),
            fvu,
            explained_variance: 1.0 - fvu,
            l0: self.fired.iter().sum::<u64>() as f64 / n,
            dead_fraction: density.fraction(|d| d == 0.0),
            dense_fraction: density.fraction(|d| d > dense_threshold),
        }
    }
}

/// Each latent's firing frequency over a window of tokens.
pub struct Density(pub Vec<f64>);

impl Density {
    /// Densities from per-latent fire counts over `tokens` tokens.
    pub fn new(fired: &[u64], tokens: u64) -> Self {
        Density(fired.iter().map(|&c| c as f64 / tokens.max(1) as f64).collect())
    }

    /// The fraction of latents whose density passes `test`, in [0, 1].
    pub fn fraction(&self, test: impl Fn(f64) -> bool) -> f64 {
        self.0.iter().filter(|&&d| test(d)).count() as f64 / self.0.len().max(1) as f64
    }

    /// log10 of each density, with never-firing latents at −10 (TensorBoard's histogram of
    /// feature density, as SAELens logs it).
    pub fn log10(&self) -> Vec<f64> {
        self.0.iter().map(|&d| (d + 1e-10).log10()).collect()
    }
}
