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

    /// A path or file limopack will not trust: one that leads outside the root, a link where
    /// a file must be, the wrong owner or mode, not a regular file, or bigger than such a
    /// file may be. Moving it away or fixing its owner mends it; rerunning does not.
    #[error("{}: {message}", path.display())]
    Untrusted { path: PathBuf, message: String },
    /// A file that is there but is not what it must be: an index that does not decode, a
    /// module that is not one, a package without its data, text that is not UTF-8.
    #[error("{}: {message}", path.display())]
    Damaged { path: PathBuf, message: String },
    /// Something the run needs that is not there: a module tree, an archive copy, a file in
    /// a package.
    #[error("{}: {message}", path.display())]
    Missing { path: PathBuf, message: String },
    /// What was asked cannot be done as asked: the command line or the config must say
    /// something else (which kernel, which entry, which package).
    #[error("{}: {message}", path.display())]
    Request { path: PathBuf, message: String },
    /// A file restored from a copy that is not what dpkg recorded: it is not put in place.
    #[error("{}: {message}", path.display())]
    Mismatch { path: PathBuf, message: String },
    /// A run that changes the system, started by a user other than root.
    #[error("{}: {message}", path.display())]
    NeedsRoot { path: PathBuf, message: String },
    /// Another run held the lock for longer than this one waits.
    #[error("{}: {message}", path.display())]
    Locked { path: PathBuf, message: String },
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

    pub(crate) fn untrusted(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Untrusted { path: path.into(), message: message.into() }
    }

    pub(crate) fn damaged(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Damaged { path: path.into(), message: message.into() }
    }

    pub(crate) fn missing(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Missing { path: path.into(), message: message.into() }
    }

    pub(crate) fn request(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Request { path: path.into(), message: message.into() }
    }

    pub(crate) fn mismatch(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Mismatch { path: path.into(), message: message.into() }
    }

    pub(crate) fn needs_root(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::NeedsRoot { path: path.into(), message: message.into() }
    }

    pub(crate) fn locked(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Locked { path: path.into(), message: message.into() }
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
