//! Row-major batched products through cuBLAS (`cublasGemmStridedBatchedEx`),
//! f32 accumulation for every dtype; f32 inputs use full-precision FP32
//! unless TF32 is enabled for the device.

use crate::tensor::dtype::DType;
use cudarc::cublas::result::gemm_strided_batched_ex;
use cudarc::cublas::sys::{
    cublasComputeType_t, cublasGemmAlgo_t, cublasHandle_t, cublasOperation_t, cudaDataType,
};
use std::ffi::c_void;

/// One (batched) row-major product C[m×n] = op(A)·op(B), device pointers.
pub struct Gemm {
    /// Output rows.
    pub m: usize,
    /// Output columns.
    pub n: usize,
    /// Inner dimension.
    pub k: usize,
    /// A, stored [k, m] when `ta` else [m, k].
    pub a: u64,
    /// Whether A is stored transposed.
    pub ta: bool,
    /// B, stored [n, k] when `tb` else [k, n].
    pub b: u64,
    /// Whether B is stored transposed.
    pub tb: bool,
    /// C, [m, n].
    pub c: u64,
    /// Products in the batch.
    pub batch: usize,
    /// Element distance between consecutive A / B / C matrices.
    pub strides: (usize, usize, usize),
    /// Element type of A and B.
    pub in_type: DType,
    /// Element type of C.
    pub out_type: DType,
}

fn data_type(d: DType) -> Result<cudaDataType, String> {
    Ok(match d {
        DType::F32 => cudaDataType::CUDA_R_32F,
        DType::F16 => cudaDataType::CUDA_R_16F,
        DType::BF16 => cudaDataType::CUDA_R_16BF,
        other => return Err(format!("cuBLAS products take floats, not {other}")),
    })
}

fn int(v: usize, what: &str) -> Result<i32, String> {
    i32::try_from(v).map_err(|_| format!("{what} {v} is past cuBLAS's 32-bit limit"))
}

/// Enqueues `g` on the handle's stream.
///
/// # Safety
/// The pointers must address device buffers of the extents `g` describes, in
/// the handle's context, alive until the stream reaches this product.
pub unsafe fn gemm(handle: cublasHandle_t, g: &Gemm, tf32: bool) -> Result<(), String> {
    // Row-major C = A·B is column-major Cᵀ = Bᵀ·Aᵀ: swap the operands.
    let op = |t: bool| {
        if t {
            cublasOperation_t::CUBLAS_OP_T
        } else {
            cublasOperation_t::CUBLAS_OP_N
        }
    };
    let ldb = if g.tb { g.k } else { g.n };
    let lda = if g.ta { g.m } else { g.k };
    let compute = if g.in_type == DType::F32 && tf32 {
        cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32
    } else {
        cublasComputeType_t::CUBLAS_COMPUTE_32F
    };
    let (alpha, beta) = (1.0f32, 0.0f32);
    let (ti, to) = (data_type(g.in_type)?, data_type(g.out_type)?);
    // SAFETY: the caller guarantees the buffers; scalars are host f32 as
    // COMPUTE_32F expects.
    unsafe {
        gemm_strided_batched_ex(
            handle,
            op(g.tb),
            op(g.ta),
            int(g.n, "columns")?,
            int(g.m, "rows")?,
            int(g.k, "inner dimension")?,
            (&alpha) as *const f32 as *const c_void,
            g.b as *const c_void,
            ti,
            int(ldb.max(1), "leading dimension")?,
            g.strides.1 as i64,
            g.a as *const c_void,
            ti,
            int(lda.max(1), "leading dimension")?,
            g.strides.0 as i64,
            (&beta) as *const f32 as *const c_void,
            g.c as *mut c_void,
            to,
            int(g.n.max(1), "leading dimension")?,
            g.strides.2 as i64,
            int(g.batch, "batch")?,
            compute,
            cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
        )
    }
    .map_err(|e| format!("cuBLAS product failed: {e:?}"))
}
