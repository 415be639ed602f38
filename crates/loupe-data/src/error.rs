use std::path::PathBuf;

/// Everything that can go wrong in loupe-data; each message names the file or field and the fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error from loading or running the model (see `loupe_model::Error`).
    #[error(transparent)]
    Model(#[from] loupe_model::Error),

    /// A file that cannot be written, is damaged, or is locked by another writer.
    #[error(transparent)]
    Disk(#[from] loupe_util::Error),

    /// A tensor operation failed in candle (shape, dtype or device error).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// A corpus, store or manifest file that is missing, unreadable or malformed.
    #[error("{}: {message}", path.display())]
    File {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },

    /// A setting that cannot work, named.
    #[error("{field}: {message}")]
    Config {
        /// The setting at fault, e.g. `batch_size`.
        field: String,
        /// Why its value cannot work.
        message: String,
    },

    /// A store that belongs to another model, hook or corpus than its user expects.
    #[error("store {}: {message}", path.display())]
    Mismatch {
        /// The store directory.
        path: PathBuf,
        /// What differs from what was expected.
        message: String,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn file(path: impl Into<PathBuf>, message: impl std::fmt::Display) -> Self {
        Error::File {
            path: path.into(),
            message: message.to_string(),
        }
    }

    pub(crate) fn config(field: &str, message: impl std::fmt::Display) -> Self {
        Error::Config {
            field: field.to_string(),
            message: message.to_string(),
        }
    }
}
