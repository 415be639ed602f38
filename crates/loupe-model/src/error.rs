/// Everything that can go wrong in loupe-model. Each message says what was wrong and, where there
/// is one, what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor operation failed in candle (shape, dtype or device error).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// A file that is missing, unreadable or malformed (the file named, and the fix).
    #[error(transparent)]
    File(#[from] loupe_util::FileProblem),

    /// A setting that cannot work (the field named, and the fix).
    #[error(transparent)]
    Config(#[from] loupe_util::SettingProblem),

    /// A model name or path that resolves to nothing.
    #[error("model '{name}' not found: {hint}")]
    ModelNotFound {
        /// The model as the user named it.
        name: String,
        /// Where it was looked for, and how to make it available.
        hint: String,
    },

    /// A hook point name that does not parse.
    #[error("unknown hook point '{name}'. Valid hook points are {valid}")]
    UnknownHook {
        /// The name as given.
        name: String,
        /// The accepted forms, listed for the message.
        valid: String,
    },

    /// A hook point whose layer index is not below the model's layer count.
    #[error("hook point {hook} is past the model's depth: it has {n_layers} layers, numbered 0 to {}", n_layers - 1)]
    LayerOutOfRange {
        /// The hook point, as written.
        hook: String,
        /// The number of layers the model has.
        n_layers: usize,
    },

    /// A token sequence longer than the model's context window.
    #[error("{what} is {len} tokens long, more than the model's context of {context} tokens; shorten it")]
    TooLong {
        /// What was too long, e.g. "the prompt".
        what: String,
        /// Its length in tokens.
        len: usize,
        /// The model's context length in tokens (`max_position_embeddings`).
        context: usize,
    },

    /// The tokenizer failed to load, encode or decode; the message is the tokenizers crate's.
    #[error("tokenizer: {0}")]
    Tokenizer(String),

    /// A request that cannot be carried out as asked (wrong shapes, empty inputs, ...).
    #[error("{0}")]
    Invalid(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
