use std::path::PathBuf;

/// What can go wrong with a file; every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read or written (the OS error is the source).
    #[error("{}: {action}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done, e.g. "cannot write".
        action: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// The file is there but is not what it was when it was written.
    #[error("{}: damaged: {message}", path.display())]
    Damaged {
        /// The damaged file.
        path: PathBuf,
        /// What differs, and what to do about it.
        message: String,
    },

    /// A config that cannot be read into its struct; the message quotes the line at fault.
    #[error("{origin}: {message}")]
    Config {
        /// The config file (and the overrides, when they are at fault).
        origin: String,
        /// toml's message, which quotes the line.
        message: String,
    },

    /// Another process holds the directory's write lock.
    #[error(
        "{} is being written by another loupe process ({holder}); wait for it to finish, or write to another directory",
        path.display()
    )]
    Locked {
        /// The locked directory.
        path: PathBuf,
        /// Who holds the lock, as its lock file says (`pid 1234, loupe capture`).
        holder: String,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, action: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            action: action.into(),
            source,
        }
    }

    /// A damaged file, with what differs.
    pub fn damaged(path: impl Into<PathBuf>, message: impl std::fmt::Display) -> Self {
        Error::Damaged {
            path: path.into(),
            message: message.to_string(),
        }
    }
}
