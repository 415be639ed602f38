//! Corpora, labelled token datasets and the activation store.
//!
//! Text flows one way: [`corpus`] reads documents (text files, directories, JSONL with labels),
//! [`packing`] tokenizes them and packs them into fixed-length contexts with their labels,
//! [`capture`] runs the hooked model over those contexts and writes the activations into a
//! [`store`] (sharded safetensors and a manifest), which [`reader`] reads back as shuffled batches.
//! [`import`] makes a store from activations computed elsewhere. [`stream`] computes the same
//! activations on the fly as shuffled batches, with no store, for training on corpora larger than
//! the disk.
//!
//! A capture of a small corpus through a tiny random-weight model, read back:
//!
//! ```
//! use loupe_data::capture::{capture, CaptureConfig};
//! use loupe_data::reader::Store;
//! use loupe_model::{HookPoint, Model};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! loupe_model::testing::write_tiny_hf_dir(&dir.path().join("model"), 0)?;
//! let model = Model::load(dir.path().join("model").to_str().unwrap(), &candle_core::Device::Cpu)?;
//! std::fs::write(dir.path().join("corpus.txt"), "the cat sat on the mat\n")?;
//! let text = format!(
//!     "hooks = [\"blocks.1.hook_resid_post\"]\noutput = {:?}\ncontext_length = 8\n[[corpus]]\npath = {:?}\n",
//!     dir.path().join("store"),
//!     dir.path().join("corpus.txt"),
//! );
//! let config: CaptureConfig = loupe_util::config::parse(&text, "example", &[])?;
//! let manifest = capture(&model, &config, &mut loupe_util::NoProgress)?;
//! let store = Store::open(&dir.path().join("store"))?;
//! let shard = store.read_shard(0, HookPoint::ResidPost(1))?; // checksum and shapes verified
//! assert_eq!(shard.activations.dims()[0] as u64, manifest.tokens);
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod capture;
pub mod corpus;
mod error;
pub mod import;
pub mod packing;
pub mod reader;
pub mod store;
pub mod stream;

pub use error::{Error, Result};
