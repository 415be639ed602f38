//! Patch experiments: take an activation from a source prompt, amplify it in each of the ways
//! docs/design.md defines ([`amplify`]), possibly along a named feature's direction ([`features`]),
//! patch every variant into the same target prompt ([`target`]), let the model generate
//! ([`runner`]), judge the generations ([`judge`]) and write the comparison ([`report`]).

#![warn(missing_docs)]

pub mod amplify;
pub mod config;
mod error;
pub mod features;
pub mod judge;
pub mod patch;
pub mod plan;
pub mod report;
pub mod results;
pub mod runner;
pub mod target;
mod variants;

pub use amplify::Amplifier;
pub use config::ScopeConfig;
pub use error::{Error, Result};
pub use features::{load_book, Feature};
pub use plan::ScopePlan;
pub use results::ScopeRecord;
pub use runner::RunSummary;
