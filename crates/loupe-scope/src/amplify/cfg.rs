//! `cfg` s: classifier-free guidance against a null prompt, as Superscopes describes it:
//! `h' = h + s·(h − h_null)`, `h_null` the same hook's activation for the null prompt (by default
//! the BOS token alone) at the aligned position. s = 0 is plain patching.

use loupe_util::Problems as _;

use super::Amplifier;
use crate::{Error, Result};

/// The `cfg` amplifier: classifier-free guidance against a null prompt (see the module docs).
pub struct Cfg {
    /// The guidance strength s; 0 is plain patching.
    pub s: f32,
    /// Names the null prompt in labels (several can be compared).
    pub null_name: String,
}

impl Amplifier for Cfg {
    fn label(&self) -> String {
        if self.null_name.is_empty() {
            format!("cfg {}", self.s)
        } else {
            format!("cfg {} (null: {})", self.s, self.null_name)
        }
    }

    fn amplify(&self, h: &[f32], null: Option<&[f32]>) -> Result<Vec<f32>> {
        let null = null.ok_or_else(|| Error::config("cfg", "needs the null prompt's activation"))?;
        if null.len() != h.len() {
            return Err(Error::mismatch(format!(
                "the null prompt's activation is {} wide, the source's {}",
                null.len(),
                h.len()
            )));
        }
        Ok(h.iter().zip(null).map(|(h, n)| h + self.s * (h - n)).collect())
    }
}
