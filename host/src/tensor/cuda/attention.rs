//! Scaled dot-product attention on the GPU: scores by cuBLAS, the masked
//! softmax by a kernel, the weighted sum by cuBLAS, per batch and head.
//! Scores and probabilities stay f32 (as on the CPU: f16/bf16 round once,
//! at the end).

use super::backend::CudaBackend;
use super::blas::Gemm;
use super::launch::*;
use crate::tensor::dtype::DType;
use crate::tensor::error::TResult;
use crate::tensor::layout::broadcast_strides;
use crate::tensor::types::{Data, Tensor};
use cudarc::driver::PushKernelArg;

/// The operands' sizes: q [b, hq, sq, d], k [b, hk, sk, d], v [b, hk, sk, dv];
/// each key/value head serves `group` query heads, `rows` query rows.
#[derive(Clone, Copy)]
struct Dims {
    b: usize,
    hq: usize,
    hk: usize,
    sq: usize,
    sk: usize,
    d: usize,
    dv: usize,
    group: usize,
    rows: usize,
}

impl CudaBackend {
    /// Scaled dot-product attention (`Backend::attention`).
    pub(super) fn attend(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Tensor>,
        scale: f32,
        causal: bool,
    ) -> TResult<Data> {
        self.bind()?;
        let (qs, ks, vs) = (q.shape(), k.shape(), v.shape());
        let (hq, hk, sq) = (qs[1], ks[1], qs[2]);
        let n = Dims {
            b: qs[0],
            hq,
            hk,
            sq,
            sk: ks[2],
            d: qs[3],
            dv: vs[3],
            group: hq / hk,
            rows: hq / hk * sq,
        };
        let out = self.alloc(n.b * hq * sq * n.dv, q.dtype())?;
        if out.buf.len() <= 1 && n.b * hq * sq * n.dv == 0 {
            return Ok(Data::Cuda(out));
        }
        let scores = self.alloc(n.b * hk * n.rows * n.sk, DType::F32)?;
        let probs = self.alloc(n.b * hk * n.rows * n.sk, DType::F32)?;
        let (ps, pp, po) = (
            self.raw(&scores.buf),
            self.raw(&probs.buf),
            self.raw(&out.buf),
        );
        if n.sk > 0 {
            self.scores(&n, q, k, ps)?;
            self.softmax_scores(&n, mask, scale, causal, ps, pp)?;
        }
        if n.dv > 0 && n.sk > 0 {
            self.weighted_sum(&n, v, pp, po, q.dtype())?;
        } else {
            // SAFETY: po spans the output.
            unsafe { self.zero(po, n.b * hq * sq * n.dv * q.dtype().size())? };
        }
        // The workspaces are freed in stream order after the kernels that use them.
        drop((scores, probs));
        Ok(Data::Cuda(out))
    }

    /// q·kᵀ per batch and key/value head into `ps` (f32).
    fn scores(&self, n: &Dims, q: &Tensor, k: &Tensor, ps: u64) -> TResult<()> {
        if n.d == 0 {
            // SAFETY: ps spans the f32 score matrices.
            return unsafe { self.zero(ps, n.b * n.hk * n.rows * n.sk * 4) };
        }
        self.matmul_into(&Gemm {
            m: n.rows,
            n: n.sk,
            k: n.d,
            a: self.ptr(q)?,
            ta: false,
            b: self.ptr(k)?,
            tb: true,
            c: ps,
            batch: n.b * n.hk,
            strides: (n.rows * n.d, n.sk * n.d, n.rows * n.sk),
            in_type: q.dtype(),
            out_type: DType::F32,
        })
    }

    /// softmax(scores · scale + mask), causal if asked, into `pp`.
    fn softmax_scores(
        &self,
        n: &Dims,
        mask: Option<&Tensor>,
        scale: f32,
        causal: bool,
        ps: u64,
        pp: u64,
    ) -> TResult<()> {
        let m32 = mask.map(|m| self.as_f32(m)).transpose()?;
        let (pm, ms) = match &m32 {
            Some(m) => {
                let s = broadcast_strides(m.shape(), &[n.b, n.hq, n.sq, n.sk]);
                (
                    self.ptr(m)?,
                    [s[0] as i64, s[1] as i64, s[2] as i64, s[3] as i64],
                )
            }
            None => (0, [0; 4]),
        };
        let (hk_, g_, sq_, sk_) = (n.hk as i64, n.group as i64, n.sq as i64, n.sk as i64);
        let (all, causal) = ((n.b * n.hk * n.rows) as i64, causal as i32);
        launch!(
            self,
            "attn_softmax_f32",
            rows_grid(all as usize),
            [
                &pp, &ps, &hk_, &g_, &sq_, &sk_, &scale, &pm, &ms[0], &ms[1], &ms[2], &ms[3],
                &causal, &all
            ]
        )
    }

    /// probs (f32) · v in f32 into `po`, rounded once to `dt`.
    fn weighted_sum(&self, n: &Dims, v: &Tensor, pp: u64, po: u64, dt: DType) -> TResult<()> {
        let v32 = self.as_f32(v)?;
        let out32 = if dt == DType::F32 {
            None
        } else {
            Some(self.alloc(n.b * n.hq * n.sq * n.dv, DType::F32)?)
        };
        let target = out32.as_ref().map_or(po, |o| self.raw(&o.buf));
        self.matmul_into(&Gemm {
            m: n.rows,
            n: n.dv,
            k: n.sk,
            a: pp,
            ta: false,
            b: self.ptr(&v32)?,
            tb: false,
            c: target,
            batch: n.b * n.hk,
            strides: (n.rows * n.sk, n.sk * n.dv, n.rows * n.dv),
            in_type: DType::F32,
            out_type: DType::F32,
        })?;
        if let Some(o32) = &out32 {
            let (src, len) = (self.raw(&o32.buf), (n.b * n.hq * n.sq * n.dv) as i64);
            launch!(
                self,
                &format!("to_{}_f32", suffix(dt)),
                grid(len as usize),
                [&po, &src, &len]
            )?;
        }
        Ok(())
    }
}
