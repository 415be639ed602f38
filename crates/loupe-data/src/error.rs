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

    /// A file that is missing, unreadable or malformed (the file named, and the fix).
    #[error(transparent)]
    File(#[from] loupe_util::FileProblem),

    /// A setting that cannot work (the field named, and the fix).
    #[error(transparent)]
    Config(#[from] loupe_util::SettingProblem),

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
