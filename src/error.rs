//! Errors of the library. Each one names the file, and where it can the line and column, so
//! that an admin can go straight to what is wrong.

use std::io;
use std::path::PathBuf;

/// What can stop a run. Every variant stops it before anything is deleted.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A declaration, the config, a module index or a kernel interface file that does not parse.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },

    /// A file that limopack refuses to trust or use as a whole (ownership, mode, encoding).
    #[error("{}: {message}", path.display())]
    Refused { path: PathBuf, message: String },

    /// A file or folder that could not be read or written. The I/O error is part of the
    /// message, not a `source()`, so that a chain printer does not say it twice.
    #[error("{}: {}", path.display(), plain(error))]
    Io { path: PathBuf, error: io::Error },

    /// A helper program (dpkg-query, depmod) that is missing or failed.
    #[error("{program}: {message}")]
    Command { program: String, message: String },

    /// A module tree whose index is stale while limopack may not refresh it.
    #[error("{}: {message}", path.display())]
    StaleIndex { path: PathBuf, message: String },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            path: path.into(),
            error: source,
        }
    }

    pub(crate) fn syntax(
        path: impl Into<PathBuf>,
        line: usize,
        column: usize,
        message: impl Into<String>,
    ) -> Self {
        Error::Syntax {
            path: path.into(),
            line,
            column,
            message: message.into(),
        }
    }

    pub(crate) fn refused(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Refused {
            path: path.into(),
            message: message.into(),
        }
    }

    pub(crate) fn command(program: &str, message: impl Into<String>) -> Self {
        Error::Command {
            program: program.to_string(),
            message: message.into(),
        }
    }
}

/// An I/O error as the C library says it (`No such file or directory`), without the
/// `(os error 2)` Rust adds.
pub fn plain(error: &io::Error) -> String {
    let text = error.to_string();
    match (error.raw_os_error(), text.rfind(" (os error ")) {
        (Some(_), Some(at)) => text[..at].to_string(),
        _ => text,
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
