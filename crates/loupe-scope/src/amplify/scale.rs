//! `scale` α: `h' = α·h`, as Superscopes' published code amplifies (α in 1, 3, 6, 9, 12, 15).

use super::Amplifier;
use crate::Result;

/// The `scale` amplifier: `h' = α·h`.
pub struct Scale {
    /// The factor α; 1 is plain patching.
    pub alpha: f32,
}

impl Amplifier for Scale {
    fn label(&self) -> String {
        format!("scale {}", self.alpha)
    }

    fn amplify(&self, h: &[f32], _: Option<&[f32]>) -> Result<Vec<f32>> {
        Ok(h.iter().map(|v| self.alpha * v).collect())
    }
}
