//! Patch experiments: take an activation from a source prompt, amplify it in each of the ways
//! DESIGN.md defines ([`amplify`]), possibly along a named feature's direction ([`features`]),
//! and patch every variant into the same target prompt.

pub mod amplify;
mod error;
pub mod features;

pub use amplify::Amplifier;
pub use error::{Error, Result};
pub use features::{load_book, Feature};
