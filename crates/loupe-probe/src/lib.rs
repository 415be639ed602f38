//! k-sparse probes (Gurnee et al., "Finding Neurons in a Haystack"): which few neurons of a hook
//! encode a binary feature of the text.
//!
//! The flow, one module each: [`dataset`] turns an activation store's labels (or properties of its
//! tokens) into labelled examples split by document; [`rank`] orders the neurons by how well each
//! alone separates the classes; [`sweep`] keeps the top k for each k and fits a class-balanced L2
//! logistic regression ([`logreg`]) on them, and searches small sets exhaustively; [`metrics`]
//! scores each probe on the held-out documents; [`probe`] saves it; [`train`](mod@train) runs all of it over
//! stores, hooks and features from one [`config`], and [`summary`] tabulates the results.

#![warn(missing_docs)]

pub mod config;
pub mod dataset;
mod error;
pub mod features;
pub mod logreg;
pub mod matrix;
pub mod metrics;
pub mod probe;
pub mod rank;
pub mod summary;
pub mod sweep;
pub mod testing;
pub mod top;
pub mod train;

pub use config::ProbeConfig;
pub use error::{Error, Result};
pub use metrics::Metrics;
pub use probe::{Probe, ProbeInfo};
pub use rank::Ranking;
pub use train::{train, NoObserver, ProbeObserver, TrainOutcome};
