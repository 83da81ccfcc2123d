//! Host-memory tensor elements, one typed vector per dtype: what guests
//! upload and read back, weights load into, and the CPU backend computes on.

use crate::tensor::dtype::DType;
use half::{bf16, f16};
use std::borrow::Cow;

/// Elements in host memory.
#[derive(Debug, Clone, PartialEq)]
pub enum CpuData {
    /// f32 elements.
    F32(Vec<f32>),
    /// f16 elements.
    F16(Vec<f16>),
    /// bf16 elements.
    BF16(Vec<bf16>),
    /// i32 elements.
    I32(Vec<i32>),
    /// i64 elements.
    I64(Vec<i64>),
    /// u8 elements.
    U8(Vec<u8>),
}

/// Applies a generic expression to the vector inside, keeping the dtype:
/// `map_same!(data, v => expr)` where `expr` yields a `Vec` of the same element type.
macro_rules! map_same {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            CpuData::F32($v) => CpuData::F32($body),
            CpuData::F16($v) => CpuData::F16($body),
            CpuData::BF16($v) => CpuData::BF16($body),
            CpuData::I32($v) => CpuData::I32($body),
            CpuData::I64($v) => CpuData::I64($body),
            CpuData::U8($v) => CpuData::U8($body),
        }
    };
}
pub(crate) use map_same;

macro_rules! le_decode {
    ($bytes:expr, $t:ty, $n:expr) => {
        $bytes
            .chunks_exact($n)
            .map(|c| <$t>::from_le_bytes(c.try_into().expect("chunk size")))
            .collect()
    };
}

impl CpuData {
    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            CpuData::F32(_) => DType::F32,
            CpuData::F16(_) => DType::F16,
            CpuData::BF16(_) => DType::BF16,
            CpuData::I32(_) => DType::I32,
            CpuData::I64(_) => DType::I64,
            CpuData::U8(_) => DType::U8,
        }
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        match self {
            CpuData::F32(v) => v.len(),
            CpuData::F16(v) => v.len(),
            CpuData::BF16(v) => v.len(),
            CpuData::I32(v) => v.len(),
            CpuData::I64(v) => v.len(),
            CpuData::U8(v) => v.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Decodes little-endian bytes (whose length is a multiple of the dtype size).
    pub fn from_le_bytes(bytes: &[u8], dtype: DType) -> Self {
        match dtype {
            DType::F32 => CpuData::F32(le_decode!(bytes, f32, 4)),
            DType::F16 => CpuData::F16(le_decode!(bytes, f16, 2)),
            DType::BF16 => CpuData::BF16(le_decode!(bytes, bf16, 2)),
            DType::I32 => CpuData::I32(le_decode!(bytes, i32, 4)),
            DType::I64 => CpuData::I64(le_decode!(bytes, i64, 8)),
            DType::U8 => CpuData::U8(bytes.to_vec()),
        }
    }

    /// The elements as little-endian bytes, borrowed on little-endian hosts.
    pub fn as_le_bytes(&self) -> Cow<'_, [u8]> {
        fn view<T: Copy>(v: &[T]) -> &[u8] {
            // SAFETY: the element types here are plain numbers (f16/bf16 are
            // `repr(transparent)` u16) without padding; any byte is a valid u8.
            unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v)) }
        }
        if cfg!(target_endian = "big") {
            return Cow::Owned(self.to_le_bytes());
        }
        Cow::Borrowed(match self {
            CpuData::F32(v) => view(v),
            CpuData::F16(v) => view(v),
            CpuData::BF16(v) => view(v),
            CpuData::I32(v) => view(v),
            CpuData::I64(v) => view(v),
            CpuData::U8(v) => v,
        })
    }

    /// Encodes the elements as little-endian bytes.
    pub fn to_le_bytes(&self) -> Vec<u8> {
        fn enc<T: Copy, const N: usize>(v: &[T], f: fn(T) -> [u8; N]) -> Vec<u8> {
            let mut out = Vec::with_capacity(v.len() * N);
            for &x in v {
                out.extend_from_slice(&f(x));
            }
            out
        }
        match self {
            CpuData::F32(v) => enc(v, f32::to_le_bytes),
            CpuData::F16(v) => enc(v, f16::to_le_bytes),
            CpuData::BF16(v) => enc(v, bf16::to_le_bytes),
            CpuData::I32(v) => enc(v, i32::to_le_bytes),
            CpuData::I64(v) => enc(v, i64::to_le_bytes),
            CpuData::U8(v) => v.clone(),
        }
    }

    /// `n` elements equal to `value` converted to `dtype`.
    pub fn full(n: usize, dtype: DType, value: f64) -> Self {
        match dtype {
            DType::F32 => CpuData::F32(vec![value as f32; n]),
            DType::F16 => CpuData::F16(vec![f16::from_f64(value); n]),
            DType::BF16 => CpuData::BF16(vec![bf16::from_f64(value); n]),
            DType::I32 => CpuData::I32(vec![value as i32; n]),
            DType::I64 => CpuData::I64(vec![value as i64; n]),
            DType::U8 => CpuData::U8(vec![value as u8; n]),
        }
    }

    /// The elements as f32, borrowing when already f32.
    pub fn as_f32(&self) -> Cow<'_, [f32]> {
        match self {
            CpuData::F32(v) => Cow::Borrowed(v),
            CpuData::F16(v) => Cow::Owned(v.iter().map(|x| x.to_f32()).collect()),
            CpuData::BF16(v) => Cow::Owned(v.iter().map(|x| x.to_f32()).collect()),
            CpuData::I32(v) => Cow::Owned(v.iter().map(|&x| x as f32).collect()),
            CpuData::I64(v) => Cow::Owned(v.iter().map(|&x| x as f32).collect()),
            CpuData::U8(v) => Cow::Owned(v.iter().map(|&x| x as f32).collect()),
        }
    }

    /// The elements as i64 (integers exactly, floats truncated and saturated).
    pub fn as_i64(&self) -> Cow<'_, [i64]> {
        match self {
            CpuData::I64(v) => Cow::Borrowed(v),
            CpuData::I32(v) => Cow::Owned(v.iter().map(|&x| x as i64).collect()),
            CpuData::U8(v) => Cow::Owned(v.iter().map(|&x| x as i64).collect()),
            other => Cow::Owned(other.as_f32().iter().map(|&x| x as i64).collect()),
        }
    }

    /// f32 results stored as the float `dtype` (rounding to nearest even).
    pub fn from_f32(v: Vec<f32>, dtype: DType) -> Self {
        match dtype {
            DType::F16 => CpuData::F16(v.iter().map(|&x| f16::from_f32(x)).collect()),
            DType::BF16 => CpuData::BF16(v.iter().map(|&x| bf16::from_f32(x)).collect()),
            DType::I32 => CpuData::I32(v.iter().map(|&x| x as i32).collect()),
            DType::I64 => CpuData::I64(v.iter().map(|&x| x as i64).collect()),
            DType::U8 => CpuData::U8(v.iter().map(|&x| x as u8).collect()),
            DType::F32 => CpuData::F32(v),
        }
    }

    /// Converts to `dtype` (see `wasi:tensor/ops.cast`).
    pub fn cast(&self, dtype: DType) -> Self {
        if self.dtype() == dtype {
            return self.clone();
        }
        if dtype.is_float() || self.dtype().is_float() {
            // Float target, or float source to integer (saturating `as`).
            return match (self, dtype) {
                (CpuData::F32(v), _) => Self::from_f32(v.clone(), dtype),
                (CpuData::I64(v), DType::F32) => {
                    CpuData::F32(v.iter().map(|&x| x as f32).collect())
                }
                _ => Self::from_f32(self.as_f32().into_owned(), dtype),
            };
        }
        let v = self.as_i64();
        match dtype {
            DType::I32 => CpuData::I32(v.iter().map(|&x| x as i32).collect()),
            DType::I64 => CpuData::I64(v.into_owned()),
            DType::U8 => CpuData::U8(v.iter().map(|&x| x as u8).collect()),
            _ => unreachable!("float targets handled above"),
        }
    }
}
