//! Host-side tensor values: element types, errors, and the immutable
//! `Tensor` a guest handle points to.

use super::cpu::CpuData;
use super::quota::Charge;
use std::fmt;
use std::sync::Arc;

/// Element types (mirrors `wasi:tensor/types.dtype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// binary32.
    F32,
    /// binary16.
    F16,
    /// bfloat16.
    BF16,
    /// 32-bit signed.
    I32,
    /// 64-bit signed.
    I64,
    /// 8-bit unsigned.
    U8,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::I64 => 8,
            DType::U8 => 1,
        }
    }

    /// Whether this is a floating-point type.
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::BF16)
    }

    /// The WIT name.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::U8 => "u8",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

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

/// Where a tensor's elements live.
#[derive(Debug)]
pub enum Data {
    /// Host memory.
    Cpu(CpuData),
    /// Memory of a CUDA device, in the owning tenant's context.
    Gpu(super::gpu::GpuData),
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
