//! k-sparse probes (Gurnee et al., "Finding Neurons in a Haystack"): which few neurons of a hook
//! encode a binary feature of the text.
//!
//! The flow, one module each: [`dataset`] turns an activation store's labels (or properties of its
//! tokens) into labelled examples split by document; [`rank`] orders the neurons by how well each
//! alone separates the classes; [`sweep`] keeps the top k for each k and fits a class-balanced L2
//! logistic regression ([`logreg`]) on them, and searches small sets exhaustively; [`metrics`]
//! scores each probe on the held-out documents; [`probe`] saves it; [`train`](mod@train) runs all of it over
//! stores, hooks and features from one [`config`], and [`summary`] tabulates the results.
//!
//! On a small store where neuron 3 (of 24) carries the label `lang = "a"`, the k = 1 probe of
//! every ranking finds it:
//!
//! ```
//! use loupe_probe::testing::{planted, write_store};
//! use loupe_probe::{train, NoObserver, ProbeConfig};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let rows = planted(24, 20, 50, 3, 0);
//! write_store(&dir.path().join("store"), "blocks.1.mlp.hook_post".parse()?, &rows, "tiny")?;
//! loupe_model::testing::write_tiny_hf_dir(&dir.path().join("model"), 0)?; // token features need a tokenizer
//! let tokenizer = loupe_model::Tokenizer::from_file(&dir.path().join("model/tokenizer.json"), None, None)?;
//! let config = ProbeConfig::from_toml(
//!     &format!(
//!         "stores = [{:?}]\noutput = {:?}\nks = [1]\n[exact]\nmax_k = 0\n\
//!          [[feature]]\nkind = \"label\"\nfield = \"lang\"\nvalue = \"a\"\n",
//!         dir.path().join("store"),
//!         dir.path().join("probes"),
//!     ),
//!     "example",
//!     &[],
//! )?;
//! let outcome = train(&config, &tokenizer, &mut NoObserver)?;
//! assert!(outcome.rows.iter().all(|row| row.neurons == [3]));
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod absorption;
pub mod config;
pub mod dataset;
mod error;
pub mod features;
pub mod logreg;
pub mod matrix;
pub mod metrics;
pub mod probe;
pub mod rank;
pub mod sae_probing;
pub mod summary;
pub mod sweep;
#[cfg(feature = "testing")]
pub mod testing;
pub mod top;
pub mod train;

pub use config::ProbeConfig;
pub use error::{Error, Result};
pub use metrics::Metrics;
pub use probe::{Probe, ProbeInfo};
pub use rank::Ranking;
pub use train::{train, NoObserver, ProbeObserver, TrainOutcome};
