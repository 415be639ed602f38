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
    /// Mean over tokens of the cosine similarity of x and x̂ (SAEBench's core metric).
    #[serde(default)]
    pub cosine_similarity: f64,
    /// Mean over tokens of ‖x̂‖ / ‖x‖ (SAEBench's `l2_ratio`): below 1, the SAE shrinks.
    #[serde(default)]
    pub l2_ratio: f64,
    /// Relative reconstruction bias γ = Σ‖x̂‖² / Σ⟨x̂, x⟩, the γ for which x̂ / γ is closest to x
    /// (Rajamanoharan et al. 2024): 1 is unbiased, below 1 is shrinkage.
    #[serde(default)]
    pub relative_reconstruction_bias: f64,
    /// The feature-density histogram: latents per bin of log10(fraction of tokens fired on),
    /// bins of width 0.5 from −10 (never fired; SAELens's floor) up to 0.
    #[serde(default)]
    pub density_histogram: Vec<DensityBin>,
}

/// One bin of the feature-density histogram.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct DensityBin {
    /// The bin's lower edge, log10 of a density.
    pub log10_from: f64,
    /// Latents whose log10 density falls in `[log10_from, log10_from + 0.5)` (the last bin
    /// includes 0: latents firing on every token).
    pub latents: u64,
}

/// Sums that the metrics are made of, so that any number of batches can be added up.
pub struct Tally {
    d_in: usize,
    tokens: u64,
    squared_error: f64,
    sum_x: Vec<f64>,
    sum_squared_norm: f64,
    sum_cosine: f64,
    sum_norm_ratio: f64,
    sum_recon_squared_norm: f64,
    sum_recon_dot_x: f64,
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
            sum_cosine: 0.0,
            sum_norm_ratio: 0.0,
            sum_recon_squared_norm: 0.0,
            sum_recon_dot_x: 0.0,
            fired: vec![0; d_sae],
        }
    }

    /// Encodes and reconstructs `x` (`[n, d_in]`) and adds it up.
    pub fn add_batch(&mut self, sae: &Sae, x: &Tensor) -> Result<()> {
        self.add_pair(sae, x, x)
    }

    /// Encodes `input` and compares what the SAE makes of it with `target` (both `[n, d_in]`): a
    /// transcoder's output hook, or the input itself for an SAE. The metrics then measure
    /// `target`'s variance explained.
    pub fn add_pair(&mut self, sae: &Sae, input: &Tensor, target: &Tensor) -> Result<()> {
        let input = input.to_dtype(candle_core::DType::F32)?;
        let code = sae.encode_sparse(&input)?;
        let recon = to_vec(&sae.add_skip(&input, sae.decode_sparse(&code)?)?)?;
        let x = to_vec(&target.to_dtype(candle_core::DType::F32)?)?;
        for (row, recon_row) in x.chunks(self.d_in).zip(recon.chunks(self.d_in)) {
            let (mut x_sq, mut r_sq, mut r_dot_x) = (0f64, 0f64, 0f64);
            for ((&xi, &ri), s) in row.iter().zip(recon_row).zip(self.sum_x.iter_mut()) {
                let (xi, ri) = (xi as f64, ri as f64);
                self.squared_error += (ri - xi) * (ri - xi);
                x_sq += xi * xi;
                r_sq += ri * ri;
                r_dot_x += ri * xi;
                *s += xi;
            }
            self.sum_squared_norm += x_sq;
            self.sum_recon_squared_norm += r_sq;
            self.sum_recon_dot_x += r_dot_x;
            // A zero input (or reconstruction) has no direction: it counts as cosine 0.
            let norms = (x_sq * r_sq).sqrt();
            self.sum_cosine += if norms > 0.0 { r_dot_x / norms } else { 0.0 };
            self.sum_norm_ratio += if x_sq > 0.0 { (r_sq / x_sq).sqrt() } else { 0.0 };
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
            cosine_similarity: self.sum_cosine / n,
            l2_ratio: self.sum_norm_ratio / n,
            relative_reconstruction_bias: self.sum_recon_squared_norm / self.sum_recon_dot_x,
            density_histogram: density.histogram(),
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

    /// The log10 densities counted in bins of width 0.5 from −10 to 0 (see
    /// [`ReconstructionMetrics::density_histogram`]).
    pub fn histogram(&self) -> Vec<DensityBin> {
        let mut bins: Vec<DensityBin> = (0..20)
            .map(|i| DensityBin {
                log10_from: -10.0 + 0.5 * i as f64,
                latents: 0,
            })
            .collect();
        for value in self.log10() {
            let bin = (((value + 10.0) / 0.5).floor().max(0.0) as usize).min(bins.len() - 1);
            bins[bin].latents += 1;
        }
        bins
    }
}

/// Mean and sample standard deviation (0 for a single value).
pub fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len().max(1) as f64;
    let mean = values.iter().sum::<f64>() / n;
    if values.len() < 2 {
        return (mean, 0.0);
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Activation, Params, SaeMetadata};
    use candle_core::Device;

    /// An SAE that halves its input: x̂ = 0.5 · ReLU(x), with two latents, one per dimension.
    fn halving_sae() -> Sae {
        let mut p = Params::zeros(2, 2, false);
        p.enc = vec![1.0, 0.0, 0.0, 1.0];
        p.dec = vec![0.5, 0.0, 0.0, 0.5];
        Sae::from_params(&p, Activation::Relu, false, 1.0, SaeMetadata::default()).unwrap()
    }

    #[test]
    fn core_metrics_measure_shrinkage_by_hand() {
        let mut tally = Tally::new(2, 2);
        let x = Tensor::from_vec(vec![1f32, 0.0, 0.0, 2.0], (2, 2), &Device::Cpu).unwrap();
        tally.add_batch(&halving_sae(), &x).unwrap();
        let m = tally.metrics(0.9);
        assert!((m.cosine_similarity - 1.0).abs() < 1e-9, "{m:?}");
        assert!((m.l2_ratio - 0.5).abs() < 1e-9, "{m:?}");
        // Σ‖x̂‖² / Σ⟨x̂, x⟩ = (0.25 + 1) / (0.5 + 2).
        assert!((m.relative_reconstruction_bias - 0.5).abs() < 1e-9, "{m:?}");
        // Both latents fire on 1 token of 2: log10 0.5 ≈ −0.3, the last bin.
        assert_eq!(m.density_histogram.len(), 20);
        assert_eq!(m.density_histogram[19].latents, 2);
        assert_eq!(m.density_histogram.iter().map(|b| b.latents).sum::<u64>(), 2);

        // A token the SAE cannot reconstruct at all (x̂ = 0) has cosine 0, and a dead latent
        // lands in the first bin.
        let mut tally = Tally::new(2, 2);
        let x = Tensor::from_vec(vec![-1f32, 0.0, 3.0, 0.0], (2, 2), &Device::Cpu).unwrap();
        tally.add_batch(&halving_sae(), &x).unwrap();
        let m = tally.metrics(0.9);
        assert!((m.cosine_similarity - 0.5).abs() < 1e-9, "{m:?}");
        assert_eq!(m.density_histogram[0].latents, 1);
    }
}
