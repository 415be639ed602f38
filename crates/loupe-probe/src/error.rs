use std::path::PathBuf;

/// Everything that can go wrong in loupe-probe; each message names the file or field and the fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error from reading an activation store (see `loupe_data::Error`).
    #[error(transparent)]
    Data(#[from] loupe_data::Error),

    /// An error from loading or running the model (see `loupe_model::Error`).
    #[error(transparent)]
    Model(#[from] loupe_model::Error),

    /// A file that cannot be written, is damaged, or is locked by another writer.
    #[error(transparent)]
    Disk(#[from] loupe_util::Error),

    /// A tensor operation failed in candle (shape, dtype or device error).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// A probe or config file that is missing, unreadable or malformed.
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
        /// The config field at fault, e.g. `stores`.
        field: String,
        /// Why its value cannot work.
        message: String,
    },

    /// A dataset that cannot train a probe (one class only, no such label).
    #[error("{message}")]
    Dataset {
        /// What is wrong with the dataset.
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

    pub(crate) fn dataset(message: impl std::fmt::Display) -> Self {
        Error::Dataset {
            message: message.to_string(),
        }
    }
}
