//! Patch experiments: take an activation from a source prompt, amplify it in each of the ways
//! docs/design.md defines ([`amplify`]), possibly along a named feature's direction ([`features`]),
//! patch every variant into the same target prompt ([`target`]), let the model generate
//! ([`runner`]), judge the generations ([`judge`]) and write the comparison ([`report`]). The
//! steering task ([`steer`]) pushes the same named features into the model's answers to neutral
//! instructions, beside a prompting baseline.
//!
//! The amplifiers are plain functions of the activation (and the null prompt's, for `cfg`):
//!
//! ```
//! use loupe_scope::amplify::{cfg::Cfg, scale::Scale};
//! use loupe_scope::Amplifier;
//! let h = [1.0, 2.0];
//! assert_eq!(Scale { alpha: 3.0 }.amplify(&h, None).unwrap(), vec![3.0, 6.0]);
//! // h + s·(h − h_null)
//! let cfg = Cfg { s: 2.0, null_name: String::new() };
//! assert_eq!(cfg.amplify(&h, Some(&[0.5, 0.0])).unwrap(), vec![2.0, 6.0]);
//! ```

#![warn(missing_docs)]

pub mod amplify;
pub mod config;
mod error;
pub mod features;
pub mod judge;
pub mod output_score;
pub mod patch;
pub mod plan;
pub mod report;
pub mod results;
pub mod runner;
pub mod stats;
pub mod steer;
pub mod target;
mod variants;

pub use amplify::Amplifier;
pub use config::ScopeConfig;
pub use error::{Error, Result};
pub use features::{load_book, Feature};
pub use plan::ScopePlan;
pub use results::ScopeRecord;
pub use runner::RunSummary;
