//! Patch experiments: take an activation from a source prompt, amplify it in each of the ways
//! DESIGN.md defines ([`amplify`]), and patch every variant into the same target prompt.

pub mod amplify;
mod error;

pub use amplify::Amplifier;
pub use error::{Error, Result};
