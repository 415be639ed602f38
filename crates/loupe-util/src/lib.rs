//! What every loupe crate shares. Above all, files that survive a crash and say when they are
//! damaged:
//!
//! - [`atomic`]: a file is replaced through a temp file and a rename, so a reader (or a resumed
//!   run) sees the old version or the new one, never half of one.
//! - [`lock`]: one writer per directory. A command that writes a store or a run directory holds
//!   an exclusive advisory lock on it for its lifetime; the OS releases it when the process dies,
//!   so a killed run never leaves a stale lock behind.
//! - [`config`]: every command's TOML config read one way, with `--set` overrides, errors
//!   quoting the user's own line.
//! - [`digest`]: xxh3-64 checksums of files and of safetensors contents, recorded when a file is
//!   written and verified before it is used.
//!
//! And the small pieces the crates would otherwise each write again: how long-running work
//! reports [`progress`] and learns it should stop (Ctrl-C), [`vector`] dot products and norms,
//! [`memory`] for large buffers, [`html`] escaping and [`svg`] charts for reports.
//!
//! ```
//! use loupe_util::DirLock;
//! # fn main() -> loupe_util::Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! let run = dir.path().join("run");
//! let _lock = DirLock::acquire(&run, "loupe example")?; // held until dropped
//! assert!(DirLock::acquire(&run, "a second writer").is_err());
//! loupe_util::write_atomically(&run.join("cfg.json"), b"{}")?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod atomic;
pub mod config;
pub mod digest;
mod error;
pub mod html;
pub mod lock;
pub mod memory;
mod problem;
pub mod progress;
mod safetensors_file;
pub mod svg;
pub mod vector;

pub use atomic::{tmp_path, write_atomically};
pub use digest::{Digest, CONTENT_DIGEST_KEY};
pub use error::{Error, Result};
pub use lock::{DirLock, LOCK_FILE};
pub use problem::{FileProblem, Problems, SettingProblem};
pub use progress::{NoProgress, Progress};
pub use safetensors_file::SafetensorsFile;
