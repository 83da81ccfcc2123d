//! Scaled dot-product attention on the GPU: scores by cuBLAS, the masked
//! softmax by a kernel, the weighted sum by cuBLAS, per batch and head.

use super::backend::CudaBackend;
use super::blas::Gemm;
use super::launch::*;
use crate::tensor::dtype::DType;
use crate::tensor::error::TResult;
use crate::tensor::layout::broadcast_strides;
use crate::tensor::types::{Data, Tensor};
use cudarc::driver::PushKernelArg;

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
        let (b, hq, hk, sq, sk, d, dv) = (qs[0], qs[1], ks[1], qs[2], ks[2], qs[3], vs[3]);
        let dt = q.dtype();
        let out = self.alloc(b * hq * sq * dv, dt)?;
        if out.buf.len() <= 1 && b * hq * sq * dv == 0 {
            return Ok(Data::Gpu(out));
        }
        let group = hq / hk;
        let rows = group * sq;
        let scores = self.alloc(b * hk * rows * sk, DType::F32)?;
        // Probabilities stay f32 (as on the CPU: f16/bf16 round once, at the end).
        let probs = self.alloc(b * hk * rows * sk, DType::F32)?;
        let (pq, pk) = (self.ptr(q)?, self.ptr(k)?);
        let (ps, pp, po) = (
            self.raw(&scores.buf),
            self.raw(&probs.buf),
            self.raw(&out.buf),
        );
        if sk > 0 {
            if d > 0 {
                self.matmul_into(&Gemm {
                    m: rows,
                    n: sk,
                    k: d,
                    a: pq,
                    ta: false,
                    b: pk,
                    tb: true,
                    c: ps,
                    batch: b * hk,
                    strides: (rows * d, sk * d, rows * sk),
                    in_type: dt,
                    out_type: DType::F32,
                })?;
            } else {
                // SAFETY: ps spans the score matrix.
                unsafe {
                    cudarc::driver::result::memset_d8_async(
                        ps,
                        0,
                        b * hk * rows * sk * 4,
                        self.stream().cu_stream(),
                    )
                }
                .map_err(cuda_err("zeroing"))?;
            }
            let m32 = mask.map(|m| self.as_f32(m)).transpose()?;
            let (pm, ms) = match &m32 {
                Some(m) => {
                    let s = broadcast_strides(m.shape(), &[b, hq, sq, sk]);
                    (
                        self.ptr(m)?,
                        [s[0] as i64, s[1] as i64, s[2] as i64, s[3] as i64],
                    )
                }
                None => (0, [0; 4]),
            };
            let (hk_, g_, sq_, sk_) = (hk as i64, group as i64, sq as i64, sk as i64);
            let (all, causal) = ((b * hk * rows) as i64, causal as i32);
            launch!(
                self,
                "attn_softmax_f32",
                rows_grid(all as usize),
                [
                    &pp, &ps, &hk_, &g_, &sq_, &sk_, &scale, &pm, &ms[0], &ms[1], &ms[2], &ms[3],
                    &causal, &all
                ]
            )?;
        }
        if dv > 0 && sk > 0 {
            // probs (f32) · v in f32, then rounded once to the output dtype.
            let v32 = self.as_f32(v)?;
            let out32 = if dt == DType::F32 {
                None
            } else {
                Some(self.alloc(b * hq * sq * dv, DType::F32)?)
            };
            let target = out32.as_ref().map_or(po, |o| self.raw(&o.buf));
            self.matmul_into(&Gemm {
                m: rows,
                n: dv,
                k: sk,
                a: pp,
                ta: false,
                b: self.ptr(&v32)?,
                tb: false,
                c: target,
                batch: b * hk,
                strides: (rows * sk, sk * dv, rows * dv),
                in_type: DType::F32,
                out_type: DType::F32,
            })?;
            if let Some(o32) = &out32 {
                let (src, n) = (self.raw(&o32.buf), (b * hq * sq * dv) as i64);
                launch!(
                    self,
                    &format!("to_{}_f32", suffix(dt)),
                    grid(n as usize),
                    [&po, &src, &n]
                )?;
            }
        } else {
            // SAFETY: po spans the output.
            unsafe {
                cudarc::driver::result::memset_d8_async(
                    po,
                    0,
                    b * hq * sq * dv * dt.size(),
                    self.stream().cu_stream(),
                )
            }
            .map_err(cuda_err("zeroing"))?;
        }
        // The workspaces are freed in stream order after the kernels that use them.
        drop((scores, probs));
        Ok(Data::Gpu(out))
    }
}
