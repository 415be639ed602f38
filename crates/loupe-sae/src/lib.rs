//! Sparse autoencoders: five architectures ([`arch`]), the trainer ([`train()`]), evaluation
//! spliced into the model ([`eval`]), top-activating contexts ([`top`]), and SAELens-format
//! files ([`saelens`]), a synthetic ground-truth benchmark ([`synth`]), and sweeps of several SAEs
//! trained in one pass over a store and compared in a Pareto report ([`sweep`]).
//!
//! Training works on the activation store of `loupe-data`, or on activations streamed from the
//! model as training goes ([`source`]). The trained SAE is saved as SAELens
//! saves one, in the model's own activation units, and is used through [`Sae`].
//!
//! A TopK SAE trained on a small synthetic store (sparse combinations of 32 directions in 16
//! dimensions) and loaded back from its SAELens files:
//!
//! ```
//! use loupe_sae::testing::{synthetic, write_store};
//! use loupe_sae::{saelens, train, NoObserver, TrainConfig};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let data = synthetic(16, 32, 4000, 3.0, 0);
//! write_store(&dir.path().join("store"), "blocks.2.hook_resid_post".parse()?, 16, &data.rows, 50, "synthetic")?;
//! let config = TrainConfig::from_toml(
//!     &format!(
//!         "store = {:?}\nhook = \"blocks.2.hook_resid_post\"\noutput = {:?}\narchitecture = \"topk\"\n\
//!          k = 3\nexpansion = 2\ntrain_tokens = 5120\nbatch_size = 256\n",
//!         dir.path().join("store"),
//!         dir.path().join("sae"),
//!     ),
//!     "example",
//!     &[],
//! )?;
//! let outcome = train(&config, &mut NoObserver)?;
//! let sae = saelens::load(&dir.path().join("sae"))?;
//! assert_eq!((sae.d_in, sae.d_sae), (16, 32));
//! assert!(outcome.metrics.unwrap().explained_variance > 0.0);
//! # Ok(()) }
//! ```

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
pub mod source;
pub mod sparse;
pub mod sparsify;
pub mod sweep;
mod sweep_report;
pub mod synth;
#[cfg(feature = "testing")]
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
pub use source::SourceKind;
pub use train::{
    evaluate_rows, geometric_median, train, NoObserver, TrainObserver, TrainOutcome, SHARED_FIELDS,
};
