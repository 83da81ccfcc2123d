//! Device memory of one tensor.

use cudarc::driver::CudaSlice;

/// Device bytes of one tensor (at least one byte is allocated).
pub struct CudaData {
    pub(super) buf: CudaSlice<u8>,
}

impl CudaData {
    /// Wraps device bytes.
    pub fn from_slice(buf: CudaSlice<u8>) -> Self {
        Self { buf }
    }

    /// The device bytes.
    pub fn slice(&self) -> &CudaSlice<u8> {
        &self.buf
    }

    /// Takes the device bytes out.
    pub fn into_slice(self) -> CudaSlice<u8> {
        self.buf
    }
}

impl std::fmt::Debug for CudaData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CudaData({} bytes)", self.buf.len())
    }
}
