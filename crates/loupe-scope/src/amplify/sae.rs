//! `sae`: amplify one SAE latent, as Scaling Monosemanticity steers: encode h, change the latent's
//! activation f_i, and add the change along its decoder row d_i, `h' = h + (f_i' − f_i)·d_i`. The
//! rest of h (every other latent and the SAE's reconstruction error) is left as it was.
//! `scale` α sets f_i' = α·f_i (α = 1 is plain patching); `clamp` c sets f_i' = c·max_i, max_i the
//! latent's largest activation seen over a corpus (`loupe sae top` reports it).

use std::sync::Arc;

use candle_core::{Device, Tensor};
use loupe_sae::Sae;

use super::{add_scaled, Amplifier};
use crate::{Error, Result};

/// How a [`SaeFeature`] changes its latent's activation f_i.
pub enum SaeMode {
    /// f_i' = α·f_i.
    Scale {
        /// The factor α; 1 is plain patching.
        alpha: f32,
    },
    /// f_i' = c·max_i.
    Clamp {
        /// The multiple c of the latent's largest activation.
        c: f32,
        /// max_i, the latent's largest activation seen over a corpus.
        max_activation: f32,
    },
}

/// The `sae` amplifier: changes one SAE latent's activation and adds the change along its decoder row.
pub struct SaeFeature {
    /// The feature's name, as reports show it.
    pub name: String,
    sae: Arc<Sae>,
    latent: usize,
    decoder_row: Vec<f32>,
    /// Scale the latent's activation, or clamp it to a multiple of its maximum.
    pub mode: SaeMode,
}

impl SaeFeature {
    /// Amplifies latent `latent` of `sae`; an error when the SAE has no such latent.
    pub fn new(name: &str, sae: Arc<Sae>, latent: usize, mode: SaeMode) -> Result<Self> {
        if latent >= sae.d_sae {
            return Err(Error::mismatch(format!(
                "feature '{name}': latent {latent} is outside the SAE's {} latents",
                sae.d_sae
            )));
        }
        let decoder_row = sae.w_dec.get(latent)?.to_vec1::<f32>()?;
        Ok(SaeFeature {
            name: name.to_string(),
            sae,
            latent,
            decoder_row,
            mode,
        })
    }

    /// The latent's activation for `h`.
    pub fn activation(&self, h: &[f32]) -> Result<f32> {
        let x = Tensor::from_slice(h, (1, h.len()), &Device::Cpu)?;
        Ok(self
            .sae
            .encode(&x)?
            .get(0)?
            .get(self.latent)?
            .to_scalar::<f32>()?)
    }
}

impl Amplifier for SaeFeature {
    fn label(&self) -> String {
        match self.mode {
            SaeMode::Scale { alpha } => format!("sae {} ×{alpha}", self.name),
            SaeMode::Clamp { c, .. } => format!("sae {} clamp {c}×max", self.name),
        }
    }

    fn amplify(&self, h: &[f32], _: Option<&[f32]>) -> Result<Vec<f32>> {
        if h.len() != self.sae.d_in {
            return Err(Error::mismatch(format!(
                "feature '{}': the SAE reads {} dimensions, the activation has {}",
                self.name,
                self.sae.d_in,
                h.len()
            )));
        }
        let f = self.activation(h)?;
        let target = match self.mode {
            SaeMode::Scale { alpha } => alpha * f,
            SaeMode::Clamp { c, max_activation } => c * max_activation,
        };
        Ok(add_scaled(h, target - f, &self.decoder_row))
    }
}
