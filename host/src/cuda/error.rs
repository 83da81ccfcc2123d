//! `wasi:cuda` errors: the tensor layer's and the driver's reasons mapped
//! to the WIT `wasi:cuda/types.error`, each in one place.

use super::bindings::wasi::cuda::types;
use super::library;
use crate::tensor::TensorError;
use cudarc::driver::DriverError;

/// A tensor-layer error as a `wasi:cuda` one.
pub fn tensor_err(e: TensorError) -> types::Error {
    match e {
        TensorError::QuotaExceeded {
            requested,
            in_use,
            limit,
        } => types::Error::QuotaExceeded(types::QuotaError {
            requested,
            in_use,
            limit,
        }),
        TensorError::Backend(m) => types::Error::Backend(m),
        other => types::Error::InvalidArgument(other.to_string()),
    }
}

/// A driver error during `what`.
pub fn driver(what: &str) -> impl Fn(DriverError) -> types::Error + '_ {
    move |e| {
        crate::tensor::cuda::fault::note(&e);
        let text = format!("{e:?}");
        if text.contains("OUT_OF_MEMORY") {
            types::Error::Backend(format!("{what}: GPU out of memory"))
        } else {
            types::Error::Backend(format!("{what}: {text}"))
        }
    }
}

/// Why the kernel library refused a module.
pub fn library(e: library::Error) -> types::Error {
    match e {
        library::Error::NotFound(m) => types::Error::NotFound(m),
        library::Error::NotPermitted(m) => types::Error::NotPermitted(m),
        library::Error::InvalidArgument(m) => types::Error::InvalidArgument(m),
        library::Error::Corrupt(m) => types::Error::Backend(m),
    }
}
