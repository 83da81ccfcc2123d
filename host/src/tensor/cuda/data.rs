//! Device memory of one tensor, and where it goes when the tensor is
//! dropped: back to the cache of the lane it was allocated on
//! ([`super::tenant::Lane`]), or freed.

use super::tenant::Lane;
use cudarc::driver::CudaSlice;
use std::mem::ManuallyDrop;
use std::sync::{Arc, Weak};

/// Device bytes of one tensor (at least one byte is allocated).
pub struct CudaData {
    pub(super) buf: ManuallyDrop<CudaSlice<u8>>,
    /// The lane whose cache takes the bytes back (`None`: freed on drop).
    home: Option<Weak<Lane>>,
}

impl CudaData {
    /// Wraps device bytes (freed when dropped).
    pub fn from_slice(buf: CudaSlice<u8>) -> Self {
        Self {
            buf: ManuallyDrop::new(buf),
            home: None,
        }
    }

    /// Bytes allocated on `lane`'s stream, returned to its cache on drop.
    pub(super) fn on_lane(buf: CudaSlice<u8>, lane: Weak<Lane>) -> Self {
        Self {
            buf: ManuallyDrop::new(buf),
            home: Some(lane),
        }
    }

    /// Whether the bytes were allocated on `lane` (and go back to it).
    pub(super) fn is_on(&self, lane: &Arc<Lane>) -> bool {
        self.home
            .as_ref()
            .is_some_and(|home| std::ptr::eq(home.as_ptr(), Arc::as_ptr(lane)))
    }

    /// The device bytes.
    pub fn slice(&self) -> &CudaSlice<u8> {
        &self.buf
    }

    /// Takes the device bytes out (they leave the lane's cache for good).
    pub fn into_slice(mut self) -> CudaSlice<u8> {
        self.home = None;
        // SAFETY: `buf` is taken once; `self` is forgotten right after, and
        // its only other field (`home`) is `None`, so nothing leaks.
        let buf = unsafe { ManuallyDrop::take(&mut self.buf) };
        std::mem::forget(self);
        buf
    }
}

impl Drop for CudaData {
    fn drop(&mut self) {
        // SAFETY: taken once, here, and never used after.
        let buf = unsafe { ManuallyDrop::take(&mut self.buf) };
        match self.home.take().and_then(|l| l.upgrade()) {
            Some(lane) => lane.keep(buf),
            None => drop(buf),
        }
    }
}

impl std::fmt::Debug for CudaData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CudaData({} bytes)", self.buf.len())
    }
}
