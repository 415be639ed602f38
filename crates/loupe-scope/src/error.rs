/// Everything that can go wrong in loupe-scope; each message names what is wrong and the fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error from loading or running the model (see `loupe_model::Error`).
    #[error(transparent)]
    Model(#[from] loupe_model::Error),

    /// An error from loading or using an SAE (see `loupe_sae::Error`).
    #[error(transparent)]
    Sae(#[from] loupe_sae::Error),

    /// An error from loading or using a probe (see `loupe_probe::Error`).
    #[error(transparent)]
    Probe(#[from] loupe_probe::Error),

    /// What a config field names (a probe, an SAE, a hook) could not be used; the cause is kept.
    #[error("{field}: {source}")]
    Field {
        /// The config field, e.g. `feature[0] 'honesty'.probe`.
        field: String,
        /// Why what it names could not be used.
        #[source]
        source: Box<Error>,
    },

    /// A file that cannot be written, is damaged, or is locked by another writer.
    #[error(transparent)]
    Disk(#[from] loupe_util::Error),

    /// A tensor operation failed in candle (shape, dtype or device error).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// A setting that cannot work (the field named, and the fix).
    #[error(transparent)]
    Config(#[from] loupe_util::SettingProblem),

    /// A file that is missing, unreadable or malformed (the file named, and the fix).
    #[error(transparent)]
    File(#[from] loupe_util::FileProblem),

    /// A feature, SAE or probe that does not fit the site it is used at.
    #[error("{message}")]
    Mismatch {
        /// What does not fit, and where.
        message: String,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// `source`, as the cause of a problem with config field `field`.
    pub(crate) fn field(field: &str, source: impl Into<Error>) -> Self {
        Error::Field {
            field: field.to_string(),
            source: Box::new(source.into()),
        }
    }

    pub(crate) fn mismatch(message: impl std::fmt::Display) -> Self {
        Error::Mismatch {
            message: message.to_string(),
        }
    }
}
