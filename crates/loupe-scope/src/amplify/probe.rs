//! `probe`: amplify along a k-sparse probe's direction ŵ (its weights lifted into the hook's
//! space, unit length). `scale` α scales the component of h along ŵ: `h + (α−1)(h·ŵ)ŵ` (α = 1 is
//! plain patching); `add` α moves h along ŵ by α typical norms: `h + α·σ·ŵ`.

use super::{add_scaled, dot, Amplifier};
use crate::{Error, Result};

/// How a [`ProbeDirection`] changes `h`.
pub enum ProbeMode {
    /// Scale the component of `h` along the direction: `h + (α−1)(h·ŵ)ŵ`.
    Scale {
        /// The factor α on the component; 1 is plain patching.
        alpha: f32,
    },
    /// Add `α·σ·ŵ` to `h`.
    Add {
        /// How many σ to move.
        alpha: f32,
        /// The typical norm of h at this hook.
        sigma: f32,
    },
}

/// The `probe` amplifier: moves `h` along a feature's direction (see the module docs).
pub struct ProbeDirection {
    /// The feature's name, as reports show it.
    pub name: String,
    /// Unit length.
    direction: Vec<f32>,
    /// Scale the component along the direction, or add along it.
    pub mode: ProbeMode,
}

impl ProbeDirection {
    /// `direction` need not be unit length; a zero vector is refused.
    pub fn new(name: &str, direction: Vec<f32>, mode: ProbeMode) -> Result<Self> {
        let norm = dot(&direction, &direction).sqrt();
        if !(norm > 0.0 && norm.is_finite()) {
            return Err(Error::mismatch(format!(
                "the direction of feature '{name}' has norm {norm}"
            )));
        }
        Ok(ProbeDirection {
            name: name.to_string(),
            direction: direction.iter().map(|v| v / norm).collect(),
            mode,
        })
    }

    /// The unit-length direction ŵ, the hook's width.
    pub fn direction(&self) -> &[f32] {
        &self.direction
    }
}

impl Amplifier for ProbeDirection {
    fn label(&self) -> String {
        match self.mode {
            ProbeMode::Scale { alpha } => format!("probe {} ×{alpha}", self.name),
            ProbeMode::Add { alpha, .. } => format!("probe {} +{alpha}σ", self.name),
        }
    }

    fn amplify(&self, h: &[f32], _: Option<&[f32]>) -> Result<Vec<f32>> {
        if h.len() != self.direction.len() {
            return Err(Error::mismatch(format!(
                "feature '{}' is {} wide, the activation {}",
                self.name,
                self.direction.len(),
                h.len()
            )));
        }
        let w = &self.direction;
        Ok(match self.mode {
            ProbeMode::Scale { alpha } => add_scaled(h, (alpha - 1.0) * dot(h, w), w),
            ProbeMode::Add { alpha, sigma } => add_scaled(h, alpha * sigma, w),
        })
    }
}
