//! The two kinds of problem every loupe crate reports to a user: a file that is missing, unreadable
//! or malformed, and a setting that cannot work. Each crate's error enum holds them as variants
//! (`#[from]`), and [`Problems`] gives every such enum the same two constructors, `Error::file`
//! and `Error::config`.

use std::fmt::Display;
use std::path::PathBuf;

/// A file that is missing, unreadable or malformed.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct FileProblem {
    /// The file at fault.
    pub path: PathBuf,
    /// What is wrong with it, and the fix.
    pub message: String,
}

/// A setting that cannot work.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SettingProblem {
    /// The setting at fault, as the config writes it (e.g. `batch_size`, `amplifier[2].feature`).
    pub field: String,
    /// Why its value cannot work, and the fix.
    pub message: String,
}

/// `Error::file(path, message)` and `Error::config(field, message)` for any error enum that holds
/// both kinds of problem.
pub trait Problems: From<FileProblem> + From<SettingProblem> {
    /// A problem with the file at `path`.
    fn file(path: impl Into<PathBuf>, message: impl Display) -> Self {
        FileProblem {
            path: path.into(),
            message: message.to_string(),
        }
        .into()
    }

    /// A problem with the setting `field`.
    fn config(field: &str, message: impl Display) -> Self {
        SettingProblem {
            field: field.to_string(),
            message: message.to_string(),
        }
        .into()
    }
}

impl<E: From<FileProblem> + From<SettingProblem>> Problems for E {}
