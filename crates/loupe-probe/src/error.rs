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

    /// A file that is missing, unreadable or malformed (the file named, and the fix).
    #[error(transparent)]
    File(#[from] loupe_util::FileProblem),

    /// A setting that cannot work (the field named, and the fix).
    #[error(transparent)]
    Config(#[from] loupe_util::SettingProblem),

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
    pub(crate) fn dataset(message: impl std::fmt::Display) -> Self {
        Error::Dataset {
            message: message.to_string(),
        }
    }
}
