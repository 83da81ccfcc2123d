//! `decode-attention` on the GPU: per launch of up to [`DECODE_ROWS`] rows
//! (their positions passed by value, so nothing is uploaded), one kernel
//! copies the caches with each row's rotated key and its value written,
//! then one block per (row, query head) attends over the row's positions
//! (kernels/tensor.cu, `decode_write` and `decode_attend`).

use super::backend::CudaBackend;
use super::launch::*;
use crate::tensor::backend::{DecodeAttention, RopeLayout};
use crate::tensor::dtype::DType;
use crate::tensor::error::{TResult, TensorError};
use crate::tensor::types::Data;
use cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};

/// Rows of one launch at most (`DECODE_ROWS` in kernels/tensor.cu).
const DECODE_ROWS: usize = 256;

/// Kernel-side `Positions`: each row's position, by value.
#[repr(C)]
#[derive(Clone, Copy)]
struct Positions {
    p: [i32; DECODE_ROWS],
}

// SAFETY: plain-old-data with the C layout the kernels declare.
unsafe impl DeviceRepr for Positions {}

impl CudaBackend {
    /// `Backend::decode_attention`.
    pub(super) fn decode(&self, a: &DecodeAttention<'_>) -> TResult<(Data, Data, Data)> {
        // The kernel keeps the query and each warp's partial sums,
        // (1 + BLOCK / 32) · dim floats, in shared memory: within 48 KiB for
        // the widest head `fused::MAX_HEAD_DIM` lets through.
        self.bind()?;
        let dt = a.args.q.dtype();
        let out = self.alloc(a.args.q.len(), dt)?;
        let keys = self.alloc(a.args.keys.len(), dt)?;
        let values = self.alloc(a.args.values.len(), dt)?;
        let (hq, hk, cap, d) = (a.heads, a.kv_heads, a.capacity, a.dim);
        let rows_max = a.rows.min(DECODE_ROWS);
        let scores = self.alloc(rows_max * hq * cap, DType::F32)?;
        let size = dt.size() as u64;
        let layout = matches!(a.args.layout, RopeLayout::HalfSplit) as i32;
        let (hq_, hk_, cap_, d_) = (hq as i64, hk as i64, cap as i64, d as i64);
        for (chunk, at) in a
            .args
            .positions
            .chunks(DECODE_ROWS)
            .zip((0..).step_by(DECODE_ROWS))
        {
            let mut pos = Positions {
                p: [0; DECODE_ROWS],
            };
            for (slot, &p) in pos.p.iter_mut().zip(chunk) {
                *slot = p as i32;
            }
            let rows = chunk.len() as i64;
            let cache = (at * hk * cap * d) as u64 * size;
            let new = (at * hk * d) as u64 * size;
            let (ko, vo) = (self.raw(&keys.buf) + cache, self.raw(&values.buf) + cache);
            let (ki, vi) = (
                self.ptr(a.args.keys)? + cache,
                self.ptr(a.args.values)? + cache,
            );
            let (pk, pv) = (self.ptr(a.args.k)? + new, self.ptr(a.args.v)? + new);
            launch!(
                self,
                &format!("decode_write_{}", suffix(dt)),
                grid(chunk.len() * hk * cap * d),
                [
                    &ko,
                    &vo,
                    &ki,
                    &vi,
                    &pk,
                    &pv,
                    &pos,
                    &rows,
                    &hk_,
                    &cap_,
                    &d_,
                    &a.args.theta,
                    &layout
                ]
            )?;
            let query = (at * hq * d) as u64 * size;
            let (o, pq) = (self.raw(&out.buf) + query, self.ptr(a.args.q)? + query);
            let sc = self.raw(&scores.buf);
            let name = format!("decode_attend_{}", suffix(dt));
            let f = self
                .tenant
                .kernels
                .get(&name)
                .map_err(TensorError::Backend)?;
            let mut l = self.stream().launch_builder(&f);
            l.arg(&o)
                .arg(&pq)
                .arg(&ko)
                .arg(&vo)
                .arg(&sc)
                .arg(&pos)
                .arg(&rows);
            l.arg(&hq_)
                .arg(&hk_)
                .arg(&cap_)
                .arg(&d_)
                .arg(&a.args.theta)
                .arg(&layout);
            l.arg(&a.args.scale);
            let cfg = LaunchConfig {
                grid_dim: (rows_grid(chunk.len() * hq), 1, 1),
                block_dim: (BLOCK, 1, 1),
                shared_mem_bytes: (d * (1 + BLOCK as usize / 32) * 4) as u32,
            };
            // SAFETY: the arguments are the kernel's parameter list; the
            // buffers span the extents it walks (checked by the op layer).
            unsafe { l.launch(cfg) }.map_err(cuda_err(&name))?;
        }
        // The workspace is freed in stream order after the kernels.
        drop(scores);
        Ok((Data::Cuda(out), Data::Cuda(keys), Data::Cuda(values)))
    }
}
