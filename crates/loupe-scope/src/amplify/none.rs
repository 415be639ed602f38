//! `none`: the activation as it is (plain Patchscopes patching, the baseline).

use super::Amplifier;
use crate::Result;

/// The `none` amplifier: patches `h` unchanged.
pub struct Plain;

impl Amplifier for Plain {
    fn label(&self) -> String {
        "none".into()
    }

    fn amplify(&self, h: &[f32], _: Option<&[f32]>) -> Result<Vec<f32>> {
        Ok(h.to_vec())
    }
}
