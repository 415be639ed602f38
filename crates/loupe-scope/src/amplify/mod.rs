//! Amplifiers: each turns the source activation `h` (one position of one hook) into the `h'` that
//! is patched into the target prompt, exactly as docs/design.md's "Amplification, exactly" defines:
//!
//! | amplifier | `h'` |
//! | --- | --- |
//! | [`none::Plain`] | `h` (Patchscopes) |
//! | [`scale::Scale`] α | `α·h` (Superscopes' published code) |
//! | [`cfg::Cfg`] s | `h + s·(h − h_null)`, `h_null` the null prompt's activation (Superscopes as described) |
//! | [`sae::SaeFeature`] i, α | `h + (α·f_i − f_i)·d_i`, or `f_i` clamped to `c·max_i`; the SAE's error term is kept |
//! | [`probe::ProbeDirection`] ŵ, α | `h + (α−1)(h·ŵ)ŵ`, or `h + α·σ·ŵ` |

pub mod cfg;
pub mod none;
pub mod probe;
pub mod sae;
pub mod scale;

use crate::Result;

/// Turns a source activation `h` into the `h'` patched into the target prompt; one per variant.
pub trait Amplifier: Send + Sync {
    /// How the variant reads in reports: `none`, `scale 3`, `cfg 2`, `sae NAME ×4`,
    /// `probe NAME +8σ`.
    fn label(&self) -> String;

    /// `h'` for the activation `h`, given the null prompt's activation at the same hook and
    /// aligned position (the runner passes it to every variant that has a null prompt: `cfg`).
    fn amplify(&self, h: &[f32], null: Option<&[f32]>) -> Result<Vec<f32>>;
}

pub(crate) use loupe_util::vector::dot;

/// `h + t·d`.
pub(crate) fn add_scaled(h: &[f32], t: f32, d: &[f32]) -> Vec<f32> {
    h.iter().zip(d).map(|(h, d)| h + t * d).collect()
}
