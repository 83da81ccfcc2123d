//! Why a tensor operation failed: one reason for every backend (the op
//! layer validates once). Guests see it as `wasi:tensor/types.error`
//! (mapped in `types_impl.rs`, the top of the module) or, through
//! `wasi:cuda`, as that interface's error (`crate::cuda::error`).

use super::dtype::DType;
use std::fmt;

/// Why a tensor operation failed (mirrors `wasi:tensor/types.error`).
#[derive(Debug, Clone, PartialEq)]
pub enum TensorError {
    /// Incompatible or invalid shapes.
    InvalidShape {
        /// What did not fit.
        message: String,
        /// The shapes involved.
        shapes: Vec<Vec<usize>>,
    },
    /// Incompatible or unsupported element types.
    DtypeMismatch {
        /// What did not fit.
        message: String,
        /// The element types involved.
        dtypes: Vec<DType>,
    },
    /// Any other bad argument.
    InvalidArgument(String),
    /// The tenant's tensor-memory cap would be exceeded.
    QuotaExceeded {
        /// Bytes needed.
        requested: u64,
        /// Bytes held.
        in_use: u64,
        /// The cap.
        limit: u64,
    },
    /// Not granted to this deployment.
    NotGranted(String),
    /// No such named thing.
    NotFound(String),
    /// The backend failed.
    Backend(String),
}

impl fmt::Display for TensorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TensorError::InvalidShape { message, shapes } => {
                write!(f, "invalid shape: {message} (shapes {shapes:?})")
            }
            TensorError::DtypeMismatch { message, dtypes } => {
                let names: Vec<_> = dtypes.iter().map(|d| d.name()).collect();
                write!(f, "dtype mismatch: {message} ({})", names.join(", "))
            }
            TensorError::InvalidArgument(m) => write!(f, "invalid argument: {m}"),
            TensorError::QuotaExceeded {
                requested,
                in_use,
                limit,
            } => write!(
                f,
                "tensor memory quota exceeded: {requested} bytes requested, {in_use} of {limit} in use"
            ),
            TensorError::NotGranted(m) => write!(f, "not granted: {m}"),
            TensorError::NotFound(m) => write!(f, "not found: {m}"),
            TensorError::Backend(m) => write!(f, "backend error: {m}"),
        }
    }
}

impl std::error::Error for TensorError {}

/// Result of a tensor operation.
pub type TResult<T> = Result<T, TensorError>;

/// Shorthand for an `InvalidShape` error.
pub fn shape_err(message: impl Into<String>, shapes: &[&[usize]]) -> TensorError {
    TensorError::InvalidShape {
        message: message.into(),
        shapes: shapes.iter().map(|s| s.to_vec()).collect(),
    }
}

/// Shorthand for a `DtypeMismatch` error.
pub fn dtype_err(message: impl Into<String>, dtypes: &[DType]) -> TensorError {
    TensorError::DtypeMismatch {
        message: message.into(),
        dtypes: dtypes.to_vec(),
    }
}

/// Shorthand for an `InvalidArgument` error.
pub fn arg_err(message: impl Into<String>) -> TensorError {
    TensorError::InvalidArgument(message.into())
}
