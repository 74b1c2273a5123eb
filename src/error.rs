//! One error type for the whole crate.
//!
//! Every variant names the operation (or file) that failed and carries what is needed to fix the
//! call: the shapes involved, the key, the path. Library code returns [`Result`]; panics are kept
//! for broken internal invariants, never for user input.

use std::fmt;

/// The crate's result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `consolidator`.
#[derive(Debug)]
pub enum Error {
    /// Two shapes that must agree do not.
    ShapeMismatch {
        /// The operation.
        op: &'static str,
        /// The shape it needed.
        expected: Vec<usize>,
        /// The shape it got.
        got: Vec<usize>,
    },
    /// A shape (or a dimension) that is invalid for the operation on its own.
    BadShape {
        /// The operation.
        op: &'static str,
        /// The offending shape.
        shape: Vec<usize>,
        /// What the shape should be.
        msg: String,
    },
    /// An argument outside its domain (a rate not in [0, 1), a group count that does not divide).
    InvalidArgument {
        /// The operation.
        op: &'static str,
        /// What is wrong and what to do.
        msg: String,
    },
    /// A malformed, truncated or hostile file or byte buffer.
    Format {
        /// The file or buffer.
        what: String,
        /// What is wrong with it.
        msg: String,
    },
    /// Checkpoint loading: a key the model needs is absent.
    MissingKey {
        /// The key.
        key: String,
    },
    /// Checkpoint loading: a key the model does not have.
    UnexpectedKey {
        /// The key.
        key: String,
    },
    /// Checkpoint loading: a key whose tensor has the wrong shape.
    KeyShape {
        /// The key.
        key: String,
        /// The model's shape.
        expected: Vec<usize>,
        /// The file's shape.
        got: Vec<usize>,
    },
    /// A NaN or infinity where finite values are required (loss, merged weights, inputs).
    NonFinite {
        /// Where the value appeared.
        what: String,
    },
    /// A dataset that does not fit the model or is inconsistent.
    Data {
        /// What is wrong.
        msg: String,
    },
    /// An input/output error, with the path it concerned.
    Io {
        /// The path.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl Error {
    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(op: &'static str, msg: impl Into<String>) -> Self {
        Error::InvalidArgument { op, msg: msg.into() }
    }
    /// Shorthand for [`Error::ShapeMismatch`].
    pub fn shape(op: &'static str, expected: &[usize], got: &[usize]) -> Self {
        Error::ShapeMismatch { op, expected: expected.to_vec(), got: got.to_vec() }
    }
    /// Shorthand for [`Error::BadShape`].
    pub fn bad_shape(op: &'static str, shape: &[usize], msg: impl Into<String>) -> Self {
        Error::BadShape { op, shape: shape.to_vec(), msg: msg.into() }
    }
    /// Shorthand for [`Error::Format`].
    pub fn format(what: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Format { what: what.into(), msg: msg.into() }
    }
    /// Shorthand for [`Error::Data`].
    pub fn data(msg: impl Into<String>) -> Self {
        Error::Data { msg: msg.into() }
    }
    /// Wraps an I/O error with the path it concerned.
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        Error::Io { path: path.as_ref().display().to_string(), source }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::ShapeMismatch { op, expected, got } => {
                write!(f, "{op}: shape mismatch: expected {expected:?}, got {got:?}")
            }
            Error::BadShape { op, shape, msg } => write!(f, "{op}: bad shape {shape:?}: {msg}"),
            Error::InvalidArgument { op, msg } => write!(f, "{op}: {msg}"),
            Error::Format { what, msg } => write!(f, "malformed {what}: {msg}"),
            Error::MissingKey { key } => {
                write!(f, "checkpoint is missing key `{key}` (use non-strict loading to skip it)")
            }
            Error::UnexpectedKey { key } => write!(
                f,
                "checkpoint has unexpected key `{key}` (wrong architecture? use non-strict loading to ignore it)"
            ),
            Error::KeyShape { key, expected, got } => {
                write!(f, "checkpoint key `{key}`: the model expects shape {expected:?}, the file has {got:?}")
            }
            Error::NonFinite { what } => write!(f, "non-finite value (NaN or infinity) in {what}"),
            Error::Data { msg } => write!(f, "data: {msg}"),
            Error::Io { path, source } => write!(f, "{path}: {source}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
