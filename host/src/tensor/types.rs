//! Host-side tensor values: the immutable `Tensor` a guest handle points
//! to, and where its elements live.

use super::dtype::DType;
use super::quota::Charge;
use super::storage::CpuData;
use std::sync::Arc;

/// Where a tensor's elements live.
#[derive(Debug)]
pub enum Data {
    /// Host memory.
    Cpu(CpuData),
    /// Memory of a CUDA device, in the owning tenant's context.
    Cuda(super::cuda::CudaData),
}

/// Elements plus the quota charge they hold (released on drop).
#[derive(Debug)]
pub struct Stored {
    /// The elements.
    pub data: Data,
    /// The tenant charge, `None` for shared weights.
    pub charge: Option<Charge>,
}

/// An immutable tensor: a shape over shared, immutable storage. Cloning is cheap.
#[derive(Debug, Clone)]
pub struct Tensor {
    shape: Vec<usize>,
    dtype: DType,
    stored: Arc<Stored>,
}

impl Tensor {
    /// Wraps `data` (whose element count must match `shape`).
    pub fn new(shape: Vec<usize>, dtype: DType, data: Data, charge: Option<Charge>) -> Self {
        Self {
            shape,
            dtype,
            stored: Arc::new(Stored { data, charge }),
        }
    }

    /// Whether its memory is charged to a tenant (not shared weights).
    pub fn charged(&self) -> bool {
        self.stored.charge.is_some()
    }

    /// The dimensions.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Size of the elements in bytes.
    pub fn byte_size(&self) -> u64 {
        self.len() as u64 * self.dtype.size() as u64
    }

    /// The storage and its charge when this is the only reference to them;
    /// otherwise the tensor back.
    pub fn into_parts(self) -> Result<(Data, Option<Charge>), Self> {
        let Self {
            shape,
            dtype,
            stored,
        } = self;
        Arc::try_unwrap(stored)
            .map(|s| (s.data, s.charge))
            .map_err(|stored| Self {
                shape,
                dtype,
                stored,
            })
    }

    /// Whether no other tensor shares this one's storage (no clone, no
    /// view of another shape): what `decode-attention-update` may write into.
    pub fn unshared(&self) -> bool {
        Arc::strong_count(&self.stored) == 1
    }

    /// The storage.
    pub fn data(&self) -> &Data {
        &self.stored.data
    }

    /// The same storage under another shape of equal element count.
    pub fn with_shape(&self, shape: Vec<usize>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), self.len());
        Self {
            shape,
            dtype: self.dtype,
            stored: self.stored.clone(),
        }
    }
}
