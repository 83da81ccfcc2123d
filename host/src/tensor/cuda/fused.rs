//! The fused ops on the GPU. `decode-attention`: per launch of up to
//! [`DECODE_ROWS`] rows (their positions passed by value, so nothing is
//! uploaded), one kernel copies the caches with each row's rotated key and
//! its value written (`decode_write`), or, for caches given over and written
//! in place, writes just those (`decode_put`); then one block per (row,
//! query head) attends over the row's positions (`decode_attend`, which
//! scores a thread per position; all in kernels/tensor.cu). The new rows
//! are read with row strides, so packed operands (`decode-attention-qkv`)
//! are read in place. Also `add-rms-norm` in one kernel (`add_norm`).

use super::backend::CudaBackend;
use super::launch::*;
use crate::tensor::backend::{DecodeAttention, RopeLayout};
use crate::tensor::dtype::DType;
use crate::tensor::error::{TResult, TensorError};
use crate::tensor::types::{Data, Tensor};
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
    pub(super) fn decode(&self, a: &DecodeAttention<'_>) -> TResult<(Data, Option<(Data, Data)>)> {
        // The kernel keeps the query and each warp's partial sums,
        // (1 + BLOCK / 32) · dim floats, in shared memory: within 48 KiB for
        // the widest head `fused::MAX_HEAD_DIM` lets through.
        self.bind()?;
        let dt = a.q.tensor.dtype();
        let (hq, hk, cap, d) = (a.heads, a.kv_heads, a.capacity, a.dim);
        let out = self.alloc(a.rows * hq * d, dt)?;
        // The caches written: copies, or the given ones where they are.
        let copies = match a.in_place {
            true => None,
            false => Some((
                self.alloc(a.args.keys.len(), dt)?,
                self.alloc(a.args.values.len(), dt)?,
            )),
        };
        let (kw, vw) = match &copies {
            Some((k, v)) => (self.raw(&k.buf), self.raw(&v.buf)),
            None => (self.ptr(a.args.keys)?, self.ptr(a.args.values)?),
        };
        let rows_max = a.rows.min(DECODE_ROWS);
        let scores = self.alloc(rows_max * hq * cap, DType::F32)?;
        let size = dt.size() as u64;
        let layout = matches!(a.args.layout, RopeLayout::HalfSplit) as i32;
        let (hq_, hk_, cap_, d_) = (hq as i64, hk as i64, cap as i64, d as i64);
        // Row strides of the new queries and of the new keys and values
        // (both hk · d, or the packed width).
        let (qs, kvs) = (a.q.stride() as i64, a.k.stride() as i64);
        let (q0, k0, v0) = (
            self.ptr(a.q.tensor)? + (a.q.at as u64) * size,
            self.ptr(a.k.tensor)? + (a.k.at as u64) * size,
            self.ptr(a.v.tensor)? + (a.v.at as u64) * size,
        );
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
            let new = at as u64 * kvs as u64 * size;
            let (ko, vo) = (kw + cache, vw + cache);
            let (pk, pv) = (k0 + new, v0 + new);
            // In place: only the new rows (`ki`/`vi` are the caches
            // themselves, unread); otherwise the whole caches copied.
            let (kernel, work, ki, vi) = match a.in_place {
                true => ("decode_put", chunk.len() * hk * d, ko, vo),
                false => (
                    "decode_write",
                    chunk.len() * hk * cap * d,
                    self.ptr(a.args.keys)? + cache,
                    self.ptr(a.args.values)? + cache,
                ),
            };
            launch!(
                self,
                &format!("{kernel}_{}", suffix(dt)),
                grid(work),
                [
                    &ko,
                    &vo,
                    &ki,
                    &vi,
                    &pk,
                    &pv,
                    &kvs,
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
            let (o, pq) = (
                self.raw(&out.buf) + query,
                q0 + at as u64 * qs as u64 * size,
            );
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
                .arg(&qs)
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
        let caches = copies.map(|(k, v)| (Data::Cuda(k), Data::Cuda(v)));
        Ok((Data::Cuda(out), caches))
    }

    /// `Backend::add_rms_norm`: the sum and its RMS norm in one launch.
    pub(super) fn add_norm(
        &self,
        x: &Tensor,
        y: &Tensor,
        weight: Option<&Tensor>,
        eps: f32,
    ) -> TResult<(Data, Data)> {
        self.bind()?;
        let sum = self.alloc(x.len(), x.dtype())?;
        let out = self.alloc(x.len(), x.dtype())?;
        let dim = x.shape().last().copied().unwrap_or(1);
        if dim > 0 && !x.is_empty() {
            let rows = (x.len() / dim) as i64;
            // The weight in f32, as `norm` takes it.
            let w32 = weight.map(|w| self.as_f32(w)).transpose()?;
            let pw = w32.as_ref().map(|w| self.ptr(w)).transpose()?.unwrap_or(0);
            let (ps, po) = (self.raw(&sum.buf), self.raw(&out.buf));
            let (px, py, dim) = (self.ptr(x)?, self.ptr(y)?, dim as i64);
            launch!(
                self,
                &format!("add_norm_{}", suffix(x.dtype())),
                rows_grid(rows as usize),
                [&ps, &po, &px, &py, &pw, &rows, &dim, &eps]
            )?;
        }
        Ok((Data::Cuda(sum), Data::Cuda(out)))
    }
}
