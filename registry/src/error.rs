//! What can go wrong in the registry; every message names the artifact.

/// A registry error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A name, digest or key that does not parse.
    #[error("{0}")]
    Invalid(String),
    /// Nothing under that name or digest.
    #[error("{0}")]
    NotFound(String),
    /// A stored blob whose bytes no longer match its digest (or cannot be
    /// decompressed, or expand past the cap): never served.
    #[error("{0}")]
    Corrupt(String),
    /// A signature or trust decision that refuses the artifact.
    #[error("{0}")]
    Refused(String),
    /// The file system.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// A registry result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Wraps an I/O error with what was being done.
pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}
