//! Corpora, labelled token datasets and the activation store.
//!
//! Text flows one way: [`corpus`] reads documents (text files, directories, JSONL with labels),
//! [`packing`] tokenizes them and packs them into fixed-length contexts with their labels,
//! [`capture`] runs the hooked model over those contexts and writes the activations into a
//! [`store`] (sharded safetensors and a manifest), which [`reader`] reads back as shuffled batches.

#![warn(missing_docs)]

pub mod capture;
pub mod corpus;
mod error;
pub mod packing;
pub mod reader;
pub mod store;

pub use error::{Error, Result};
