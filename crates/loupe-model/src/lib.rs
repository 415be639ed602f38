//! Hooked transformer language models for loupe.
//!
//! A model is loaded by name ([`Model::load`]: a registered short name such as `smollm2` or
//! `gemma3`, a GGUF file, a Hugging Face model directory, or a hub id already in the local hf-hub
//! cache), whatever its family (llama, Qwen2, Gemma 3, GPT-2, GPT-NeoX: one file each, behind one
//! interface). Its forward pass ([`Model::forward`]) takes a [`Batch`] of token ids and a
//! [`Hooks`] value that says which activations to capture and which to change, named by
//! [`HookPoint`] exactly as TransformerLens names them. [`generate()`] runs the same hooked
//! forward with a KV cache.
//!
//! On a tiny random-weight model (`Model::load("smollm2", ...)` loads the real default model the
//! same way):
//!
//! ```
//! use loupe_model::{Hooks, HookPoint, Logits, Model};
//! # fn main() -> loupe_model::Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! loupe_model::testing::write_tiny_hf_dir(dir.path(), 0)?;
//! let model = Model::load(dir.path().to_str().unwrap(), &candle_core::Device::Cpu)?;
//! let hook: HookPoint = "blocks.1.hook_resid_post".parse()?;
//! let batch = model.batch(&["the cat sat"])?;
//! let mut hooks = Hooks::new().capture(hook);
//! model.capture(&batch, &mut hooks)?; // stops after layer 1
//! let resid = hooks.captured(hook).expect("captured"); // [batch, tokens, d_model]
//! assert_eq!(resid.dims()[2], model.spec().d_model);
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod batch;
mod error;
mod gemma3;
mod generate;
mod gguf;
mod gguf_check;
mod gpt2;
mod hook_point;
mod hooks;
mod layers;
mod llama;
mod model;
mod neox;
mod network;
mod qwen2;
mod sha_cache;
mod source;
#[cfg(feature = "testing")]
pub mod testing;
mod tokenizer;

pub use batch::Batch;
pub use error::{Error, Result};
pub use generate::{generate, generate_from, GenerateConfig, Generation, Sampling, StopReason};
pub use hook_point::{HookLayout, HookPoint};
pub use hooks::{Edit, Hooks, Intervention, Positions};
pub use layers::KvCache;
pub use llama::LlamaConfig;
pub use model::{with_f32, Logits, Model};
pub use network::{ModelSpec, SUPPORTED_FAMILIES};
pub use source::{models_dir, ModelSource, REGISTERED_MODELS};
pub use tokenizer::{TextPiece, Tokenizer};
