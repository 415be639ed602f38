use std::path::PathBuf;

/// Everything that can go wrong in loupe-model. Each message says what was wrong and, where there
/// is one, what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// A model, tokenizer or config file that is missing, unreadable or malformed.
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },

    #[error("model '{name}' not found: {hint}")]
    ModelNotFound { name: String, hint: String },

    #[error("unknown hook point '{name}'. Valid hook points are {valid}")]
    UnknownHook { name: String, valid: String },

    #[error("hook point {hook} is past the model's depth: it has {n_layers} layers, numbered 0 to {}", n_layers - 1)]
    LayerOutOfRange { hook: String, n_layers: usize },

    #[error("{what} is {len} tokens long, more than the model's context of {context} tokens; shorten it")]
    TooLong {
        what: String,
        len: usize,
        context: usize,
    },

    #[error("tokenizer: {0}")]
    Tokenizer(String),

    /// A request that cannot be carried out as asked (wrong shapes, empty inputs, ...).
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn file(path: impl Into<PathBuf>, message: impl std::fmt::Display) -> Self {
        Error::File {
            path: path.into(),
            message: message.to_string(),
        }
    }
}
