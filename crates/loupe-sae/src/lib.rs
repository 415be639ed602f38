//! Sparse autoencoders: four architectures ([`arch`]), the trainer ([`train()`]), evaluation
//! spliced into the model ([`eval`]), top-activating contexts ([`top`]), and SAELens-format
//! files ([`saelens`]).
//!
//! Training works on the activation store of `loupe-data`. The trained SAE is saved as SAELens
//! saves one, in the model's own activation units, and is used through [`Sae`].

#![warn(missing_docs)]

mod adam;
pub mod arch;
mod checkpoint;
mod config;
mod error;
pub mod eval;
pub mod metrics;
mod params;
pub mod report;
mod sae;
pub mod saelens;
pub mod sparse;
pub mod testing;
pub mod top;
mod train;

pub use adam::Adam;
pub use arch::ArchitectureName;
pub use checkpoint::{Checkpoint, CheckpointInfo, CHECKPOINT_FILE};
pub use config::{BDecInit, TrainConfig};
pub use error::{Error, Result};
pub use params::Params;
pub use sae::{Activation, Sae, SaeMetadata};
pub use train::{evaluate_rows, geometric_median, train, NoObserver, TrainObserver, TrainOutcome};
