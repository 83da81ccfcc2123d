//! Host types behind the `wasi:cuda` resources. They exist only on a host
//! with a CUDA device; each lives in one tenant's context.

use super::signature::{Kind, Signature};
use crate::tensor::quota::Charge;
use cudarc::driver::{CudaEvent, CudaFunction, CudaModule, CudaSlice, CudaStream, DriverError};
use std::sync::Arc;

/// Device memory a guest allocated (or took over from a tensor), charged to
/// its tenant's tensor-memory quota.
pub struct Buffer {
    /// The bytes; `None` once moved into a tensor.
    pub(super) bytes: Option<CudaSlice<u8>>,
    /// Its size in bytes.
    pub(super) size: u64,
    /// The quota charge, released with the bytes.
    pub(super) charge: Option<Charge>,
    /// Streams other than the one that frees it which used it; the free
    /// waits for them.
    pub(super) used_on: Vec<Arc<CudaStream>>,
}

impl Buffer {
    /// Notes that `stream` is about to work on this buffer: the first time,
    /// `stream` is ordered after the work already queued on the buffer's
    /// own stream (its zeroing, the tensor op that made it).
    pub(super) fn touch(&mut self, stream: &Arc<CudaStream>) -> Result<(), DriverError> {
        let Some(owner) = self.bytes.as_ref().map(|b| b.stream()) else {
            return Ok(());
        };
        if Arc::ptr_eq(owner, stream) || self.used_on.iter().any(|s| Arc::ptr_eq(s, stream)) {
            return Ok(());
        }
        stream.join(owner)?;
        self.used_on.push(stream.clone());
        Ok(())
    }

    /// Orders the stream that owns the bytes after every other stream that
    /// used them (before a free, or a hand-over to tensor ops).
    pub(super) fn settle(&mut self) {
        if let Some(bytes) = &self.bytes {
            for s in self.used_on.drain(..) {
                let owner = bytes.stream();
                // Best effort: a failed join leaves a context error the next call reports.
                let _ = owner.join(&s);
            }
        }
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        self.settle();
    }
}

impl std::fmt::Debug for Buffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Buffer({} bytes)", self.size)
    }
}

/// A stream the guest created.
#[derive(Debug)]
pub struct Stream {
    pub(super) stream: Arc<CudaStream>,
}

/// An event recorded on a stream.
pub struct Event {
    pub(super) event: Arc<CudaEvent>,
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Event")
    }
}

/// A loaded module: vetted (with declared signatures) or the guest's own.
pub struct Module {
    pub(super) module: Arc<CudaModule>,
    /// The vetted module's declared kernels; `None` for guest source.
    pub(super) declared: Option<Vec<Signature>>,
    /// The module's name in messages.
    pub(super) name: String,
}

impl std::fmt::Debug for Module {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Module({})", self.name)
    }
}

/// A kernel with the signature the guest declared.
pub struct Kernel {
    /// The function's name in its module.
    pub(super) name: String,
    pub(super) function: CudaFunction,
    pub(super) kinds: Vec<Kind>,
    /// The vetted declaration, whose extents every launch is checked against.
    pub(super) signature: Option<Signature>,
    /// Most threads per block this function can be launched with.
    pub(super) max_threads: u32,
    /// Shared memory the function declares statically.
    pub(super) static_shared: u32,
}

impl std::fmt::Debug for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Kernel({:?})", self.kinds)
    }
}
