//! The one error type of the library: every bad input is an `Err`, never a panic.

use std::fmt;

/// Errors reported by thermoflow.
#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// Invalid user input: a wrong dimension, a non-finite value, a bad parameter.
    Input(String),
    /// A graph that the engine cannot compile or run (unsupported op, shape mismatch).
    Engine(String),
    /// Reading or writing a file failed, or its content is corrupt.
    Io(String),
    /// The user stopped the work (Ctrl-C, `thermoflow::observe::interrupted`) before it had
    /// anything to give.
    Interrupted(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Input(m) => write!(f, "invalid input: {m}"),
            Error::Engine(m) => write!(f, "engine error: {m}"),
            Error::Io(m) => write!(f, "file error: {m}"),
            Error::Interrupted(m) => write!(f, "interrupted: {m}"),
        }
    }
}

impl std::error::Error for Error {}

impl Error {
    /// The same error with `context` (where it happened) in front of its message.
    pub fn context(self, context: impl fmt::Display) -> Error {
        match self {
            Error::Input(m) => Error::Input(format!("{context}: {m}")),
            Error::Engine(m) => Error::Engine(format!("{context}: {m}")),
            Error::Io(m) => Error::Io(format!("{context}: {m}")),
            Error::Interrupted(m) => Error::Interrupted(format!("{context}: {m}")),
        }
    }
}

/// Result alias used throughout the crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Work that Ctrl-C may stop: `Ok(Some(value))`, `Ok(None)` where it was stopped
/// ([`Error::Interrupted`]: its callers go on as if it had not run), any other error as it is.
pub fn unless_interrupted<T>(r: Result<T>) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(Error::Interrupted(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Shorthand for an [`Error::Input`].
pub fn input_err<T>(msg: impl Into<String>) -> Result<T> {
    Err(Error::Input(msg.into()))
}
