/// Everything that can go wrong in loupe-sae; each message names the file or field and the fix.
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

    /// An SAE and a store (or model) that do not belong together.
    #[error("{message}")]
    Mismatch {
        /// What does not match.
        message: String,
    },

    /// The user asked to stop (Ctrl-C) before the work was done.
    #[error("stopped on request: {what}")]
    Stopped {
        /// What was left undone, as a clause for the message.
        what: String,
    },

    /// Training diverged; the last good checkpoint is left as it was.
    #[error("{message}")]
    Diverged {
        /// The step at which it diverged: the number of optimizer steps already taken.
        step: u64,
        /// What went non-finite or out of bounds.
        message: String,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
