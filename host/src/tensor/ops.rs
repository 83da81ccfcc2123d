//! The validated op layer: checks shapes and dtypes, computes the output
//! shape, charges the tenant's quota, then asks the backend to compute. Every
//! backend gets the same checks, so errors are the same on CPU and GPU.

use super::backend::{Backend, BinaryOp, MatmulPlan, NormKind, RopeLayout, UnaryOp};
use super::cpu::CpuBackend;
use super::device::DeviceHandle;
use super::dtype::DType;
use super::error::{TResult, arg_err, dtype_err, shape_err};
use super::quota::Quota;
use super::storage::CpuData;
use super::types::{Data, Tensor};
use std::sync::Arc;

/// Largest element count of one tensor (2^40).
pub const MAX_ELEMENTS: u64 = 1 << 40;

/// Tensor operations for one tenant on one backend.
#[derive(Clone)]
pub struct Tensors {
    device: DeviceHandle,
    quota: Arc<Quota>,
}

/// Converts WIT dimensions, checking the element count.
pub fn dims(shape: &[u32]) -> TResult<Vec<usize>> {
    let mut n: u64 = 1;
    for &d in shape {
        n = n.saturating_mul(d as u64);
    }
    if n > MAX_ELEMENTS {
        return Err(shape_err(
            format!("more than {MAX_ELEMENTS} elements"),
            &[&shape.iter().map(|&d| d as usize).collect::<Vec<_>>()],
        ));
    }
    Ok(shape.iter().map(|&d| d as usize).collect())
}

/// Resolves a signed axis against `rank`.
pub fn axis(axis: i32, shape: &[usize]) -> TResult<usize> {
    let rank = shape.len() as i64;
    let a = axis as i64;
    let resolved = if a < 0 { a + rank } else { a };
    if resolved < 0 || resolved >= rank {
        return Err(arg_err(format!(
            "axis {axis} is out of range for a tensor of rank {rank} (shape {shape:?})"
        )));
    }
    Ok(resolved as usize)
}

/// NumPy broadcasting of two shapes.
pub fn broadcast(a: &[usize], b: &[usize]) -> TResult<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for i in 0..rank {
        let da = if i + a.len() >= rank {
            a[i + a.len() - rank]
        } else {
            1
        };
        let db = if i + b.len() >= rank {
            b[i + b.len() - rank]
        } else {
            1
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return Err(shape_err("shapes do not broadcast", &[a, b])),
        };
    }
    Ok(out)
}

pub(super) fn same_dtype(op: &str, a: &Tensor, b: &Tensor) -> TResult<()> {
    if a.dtype() != b.dtype() {
        return Err(dtype_err(
            format!("{op} needs operands of one dtype (cast first)"),
            &[a.dtype(), b.dtype()],
        ));
    }
    Ok(())
}

pub(super) fn float(op: &str, x: &Tensor) -> TResult<()> {
    if !x.dtype().is_float() {
        return Err(dtype_err(
            format!("{op} needs f32, f16 or bf16"),
            &[x.dtype()],
        ));
    }
    Ok(())
}

fn min_rank(op: &str, x: &Tensor, rank: usize) -> TResult<()> {
    if x.shape().len() < rank {
        return Err(shape_err(
            format!("{op} needs a tensor of rank ≥ {rank}"),
            &[x.shape()],
        ));
    }
    Ok(())
}

impl Tensors {
    /// Operations on `device`, charged to `quota`.
    pub fn new(device: DeviceHandle, quota: Arc<Quota>) -> Self {
        Self { device, quota }
    }

    /// The same operations issued on the backend one instance uses.
    pub fn for_instance(&self) -> Self {
        Self {
            device: self.device.for_instance(),
            quota: self.quota.clone(),
        }
    }

    /// The tenant's quota.
    pub fn quota(&self) -> &Arc<Quota> {
        &self.quota
    }

    /// The backend.
    pub fn backend(&self) -> &dyn Backend {
        self.device.backend()
    }

    /// The CUDA backend these operations issue on, `None` on the CPU.
    pub fn cuda(&self) -> Option<&super::cuda::CudaBackend> {
        self.device.cuda()
    }

    /// Charges the output, then computes it.
    fn make(
        &self,
        shape: Vec<usize>,
        dtype: DType,
        f: impl FnOnce() -> TResult<Data>,
    ) -> TResult<Tensor> {
        // Results of broadcasting or concatenating can be larger than any
        // input: check the count (no overflow, at most 2^40) and that every
        // dimension fits the WIT's u32 before anything is allocated.
        let elements = shape
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(d as u64))
            .filter(|&n| n <= MAX_ELEMENTS);
        let Some(elements) = elements.filter(|_| shape.iter().all(|&d| d <= u32::MAX as usize))
        else {
            return Err(shape_err(
                format!(
                    "the result would exceed {MAX_ELEMENTS} elements or a dimension of 2^32 - 1"
                ),
                &[&shape],
            ));
        };
        let charge = self.quota.charge(elements * dtype.size() as u64)?;
        Ok(Tensor::new(shape, dtype, f()?, Some(charge)))
    }

    /// A tensor from little-endian bytes.
    pub fn from_bytes(&self, bytes: &[u8], shape: &[u32], dtype: DType) -> TResult<Tensor> {
        let shape = dims(shape)?;
        let want = shape.iter().product::<usize>() as u64 * dtype.size() as u64;
        if bytes.len() as u64 != want {
            return Err(arg_err(format!(
                "{} bytes given; shape {shape:?} of {dtype} needs {want}",
                bytes.len()
            )));
        }
        self.make(shape, dtype, || self.backend().upload_bytes(bytes, dtype))
    }

    /// A tensor from host elements of matching count.
    pub fn from_data(&self, data: CpuData, shape: &[u32]) -> TResult<Tensor> {
        let shape = dims(shape)?;
        let want: usize = shape.iter().product();
        if data.len() != want {
            return Err(arg_err(format!(
                "{} values given; shape {shape:?} needs {want}",
                data.len()
            )));
        }
        let dtype = data.dtype();
        self.make(shape, dtype, || self.backend().upload(data))
    }

    /// A tensor filled with `value`.
    pub fn full(&self, shape: &[u32], dtype: DType, value: f64) -> TResult<Tensor> {
        let shape = dims(shape)?;
        let n = shape.iter().product();
        self.make(shape, dtype, || {
            self.backend().upload(CpuData::full(n, dtype, value))
        })
    }

    /// Reads a tensor back.
    pub fn read(&self, x: &Tensor) -> TResult<CpuData> {
        self.backend().download(x)
    }

    /// Batched matrix product.
    pub fn matmul(&self, a: &Tensor, b: &Tensor, ta: bool, tb: bool) -> TResult<Tensor> {
        float("matmul", a)?;
        same_dtype("matmul", a, b)?;
        let (sa, sb) = (a.shape(), b.shape());
        if sa.len() < 2 || sb.len() < 2 {
            return Err(shape_err("matmul needs operands of rank ≥ 2", &[sa, sb]));
        }
        let (ar, br) = (sa.len(), sb.len());
        let (m, ka) = if ta {
            (sa[ar - 1], sa[ar - 2])
        } else {
            (sa[ar - 2], sa[ar - 1])
        };
        let (kb, n) = if tb {
            (sb[br - 1], sb[br - 2])
        } else {
            (sb[br - 2], sb[br - 1])
        };
        if ka != kb {
            return Err(shape_err(
                format!("matmul inner dimensions differ ({ka} vs {kb})"),
                &[sa, sb],
            ));
        }
        let batch = broadcast(&sa[..ar - 2], &sb[..br - 2])
            .map_err(|_| shape_err("matmul batch dimensions do not broadcast", &[sa, sb]))?;
        let plan = MatmulPlan {
            batch: batch.clone(),
            m,
            n,
            k: ka,
            transpose_a: ta,
            transpose_b: tb,
        };
        let mut shape = batch;
        shape.extend([m, n]);
        self.make(shape, a.dtype(), || self.backend().matmul(a, b, &plan))
    }

    /// Broadcasting elementwise op.
    pub fn binary(&self, op: BinaryOp, a: &Tensor, b: &Tensor) -> TResult<Tensor> {
        let name = op.name();
        same_dtype(name, a, b)?;
        if op == BinaryOp::Swiglu {
            float(name, a)?;
            if a.shape() != b.shape() {
                return Err(shape_err(
                    "swiglu needs gate and up of one shape",
                    &[a.shape(), b.shape()],
                ));
            }
        }
        let shape = broadcast(a.shape(), b.shape())?;
        let out = shape.clone();
        if out.len() > self.backend().max_broadcast_rank() {
            return self.make(shape, a.dtype(), || {
                self.on_host(&[a, b], |cpu, h| cpu.binary(op, &h[0], &h[1], &out))
            });
        }
        self.make(shape, a.dtype(), || self.backend().binary(op, a, b, &out))
    }

    /// Computes `f` on the CPU backend over host copies of `inputs`, and
    /// moves the result to this backend (for what a device backend lacks).
    fn on_host(
        &self,
        inputs: &[&Tensor],
        f: impl FnOnce(&CpuBackend, &[Tensor]) -> TResult<Data>,
    ) -> TResult<Data> {
        let host = inputs
            .iter()
            .map(|t| {
                let data = Data::Cpu(self.backend().download(t)?);
                Ok(Tensor::new(t.shape().to_vec(), t.dtype(), data, None))
            })
            .collect::<TResult<Vec<_>>>()?;
        match f(&CpuBackend, &host)? {
            Data::Cpu(d) => self.backend().upload(d),
            done => Ok(done),
        }
    }

    /// Elementwise float op.
    pub fn unary(&self, op: UnaryOp, x: &Tensor) -> TResult<Tensor> {
        float(op.name(), x)?;
        self.make(x.shape().to_vec(), x.dtype(), || {
            self.backend().unary(op, x)
        })
    }

    /// Softmax.
    pub fn softmax(&self, x: &Tensor, ax: i32, causal: bool) -> TResult<Tensor> {
        float("softmax", x)?;
        let ax = axis(ax, x.shape())?;
        if causal {
            let s = x.shape();
            if s.len() < 2 || ax != s.len() - 1 {
                return Err(shape_err(
                    "causal softmax works over the last axis of a [..., q, k] tensor",
                    &[s],
                ));
            }
            if s[s.len() - 1] < s[s.len() - 2] {
                return Err(shape_err("causal softmax needs k ≥ q", &[s]));
            }
        }
        self.make(x.shape().to_vec(), x.dtype(), || {
            self.backend().softmax(x, ax, causal)
        })
    }

    /// Layer or RMS normalization over the last axis.
    pub fn norm(
        &self,
        kind: NormKind,
        x: &Tensor,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f32,
    ) -> TResult<Tensor> {
        let name = match kind {
            NormKind::Layer => "layer-norm",
            NormKind::Rms => "rms-norm",
        };
        float(name, x)?;
        min_rank(name, x, 1)?;
        let dim = *x.shape().last().unwrap_or(&1);
        for p in [weight, bias].into_iter().flatten() {
            float(name, p)?;
            if p.shape() != [dim] {
                return Err(shape_err(
                    format!("{name} weight and bias must have shape [{dim}]"),
                    &[x.shape(), p.shape()],
                ));
            }
        }
        if eps.is_nan() || eps < 0.0 {
            return Err(arg_err(format!("{name} eps must be ≥ 0, got {eps}")));
        }
        self.make(x.shape().to_vec(), x.dtype(), || {
            self.backend().norm(kind, x, weight, bias, eps)
        })
    }

    /// Scaled dot-product attention.
    pub fn attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Tensor>,
        scale: f32,
        causal: bool,
    ) -> TResult<Tensor> {
        float("attention", q)?;
        same_dtype("attention", q, k)?;
        same_dtype("attention", q, v)?;
        let (qs, ks, vs) = (q.shape(), k.shape(), v.shape());
        let bad = |m: &str| shape_err(format!("attention: {m}"), &[qs, ks, vs]);
        if qs.len() != 4 || ks.len() != 4 || vs.len() != 4 {
            return Err(bad("q, k and v must be rank 4 [batch, heads, seq, dim]"));
        }
        if ks[0] != qs[0] || vs[0] != qs[0] {
            return Err(bad("batch sizes differ"));
        }
        if ks[1] == 0 || qs[1] % ks[1] != 0 || vs[1] != ks[1] {
            return Err(bad(
                "query heads must be a multiple of key heads, and v must have k's heads",
            ));
        }
        if ks[3] != qs[3] || vs[2] != ks[2] {
            return Err(bad("q and k widths, or k and v lengths, differ"));
        }
        if causal && ks[2] < qs[2] {
            return Err(bad("causal attention needs key length ≥ query length"));
        }
        if let Some(m) = mask {
            float("attention mask", m)?;
            let full = [qs[0], qs[1], qs[2], ks[2]];
            if m.shape().len() > 4 || broadcast(m.shape(), &full).ok().as_deref() != Some(&full[..])
            {
                return Err(shape_err(
                    "attention mask must broadcast to [batch, q-heads, q-len, k-len]",
                    &[m.shape(), &full],
                ));
            }
        }
        if !scale.is_finite() {
            return Err(arg_err("attention scale must be finite"));
        }
        // The score matrices (q-len × k-len per head being computed) can
        // dwarf inputs and output: charge them while the op runs, so a guest
        // cannot exhaust host memory with small tensors.
        let heads_at_once = (qs[0] * qs[1]).min(rayon::current_num_threads()) as u64;
        let workspace = heads_at_once
            .saturating_mul(qs[2] as u64)
            .saturating_mul(ks[2] as u64)
            .saturating_mul(8);
        let _workspace = self.quota.charge(workspace)?;
        let shape = vec![qs[0], qs[1], qs[2], vs[3]];
        self.make(shape, q.dtype(), || {
            self.backend().attention(q, k, v, mask, scale, causal)
        })
    }

    /// Embedding lookup.
    pub fn embedding(&self, table: &Tensor, ids: &Tensor) -> TResult<Tensor> {
        if table.shape().len() != 2 {
            return Err(shape_err(
                "embedding table must be [rows, dim]",
                &[table.shape()],
            ));
        }
        if !matches!(ids.dtype(), DType::I32 | DType::I64) {
            return Err(dtype_err(
                "embedding ids must be i32 or i64",
                &[ids.dtype()],
            ));
        }
        let mut shape = ids.shape().to_vec();
        shape.push(table.shape()[1]);
        self.make(shape, table.dtype(), || {
            self.backend().embedding(table, ids)
        })
    }

    /// Same storage, new shape (no copy, no charge).
    pub fn reshape(&self, x: &Tensor, shape: &[u32]) -> TResult<Tensor> {
        let shape = dims(shape)?;
        if shape.iter().product::<usize>() != x.len() {
            return Err(shape_err(
                "reshape must keep the element count",
                &[x.shape(), &shape],
            ));
        }
        Ok(x.with_shape(shape))
    }

    /// Axis reordering.
    pub fn permute(&self, x: &Tensor, order: &[u32]) -> TResult<Tensor> {
        let rank = x.shape().len();
        let mut seen = vec![false; rank];
        let ok = order.len() == rank
            && order
                .iter()
                .all(|&d| (d as usize) < rank && !std::mem::replace(&mut seen[d as usize], true));
        if !ok {
            return Err(arg_err(format!(
                "permute order {order:?} is not a permutation of 0..{rank}"
            )));
        }
        let order: Vec<usize> = order.iter().map(|&d| d as usize).collect();
        if order.iter().enumerate().all(|(i, &d)| i == d) {
            return Ok(x.clone());
        }
        let shape: Vec<usize> = order.iter().map(|&d| x.shape()[d]).collect();
        self.make(shape, x.dtype(), || self.backend().permute(x, &order))
    }

    /// Swaps two axes.
    pub fn transpose(&self, x: &Tensor, a0: i32, a1: i32) -> TResult<Tensor> {
        let (a0, a1) = (axis(a0, x.shape())?, axis(a1, x.shape())?);
        let mut order: Vec<u32> = (0..x.shape().len() as u32).collect();
        order.swap(a0, a1);
        self.permute(x, &order)
    }

    /// A slice along one axis.
    pub fn narrow(&self, x: &Tensor, ax: i32, start: u32, len: u32) -> TResult<Tensor> {
        let ax = axis(ax, x.shape())?;
        let dim = x.shape()[ax];
        let (start, len) = (start as usize, len as usize);
        if start.checked_add(len).is_none_or(|end| end > dim) {
            return Err(arg_err(format!(
                "narrow {start}..{} is outside axis {ax} of size {dim}",
                start as u64 + len as u64
            )));
        }
        let mut shape = x.shape().to_vec();
        shape[ax] = len;
        self.make(shape, x.dtype(), || {
            self.backend().narrow(x, ax, start, len)
        })
    }

    /// Joins along one axis.
    pub fn concat(&self, xs: &[&Tensor], ax: i32) -> TResult<Tensor> {
        let Some(first) = xs.first() else {
            return Err(arg_err("concat needs at least one tensor"));
        };
        let ax = axis(ax, first.shape())?;
        let mut total = 0usize;
        for t in xs {
            same_dtype("concat", first, t)?;
            let same_rank = t.shape().len() == first.shape().len();
            let others_match = same_rank
                && t.shape()
                    .iter()
                    .zip(first.shape())
                    .enumerate()
                    .all(|(i, (a, b))| i == ax || a == b);
            if !others_match {
                let shapes: Vec<&[usize]> = xs.iter().map(|t| t.shape()).collect();
                return Err(shape_err(
                    "concat: all dimensions but the axis must match",
                    &shapes,
                ));
            }
            total += t.shape()[ax];
        }
        let mut shape = first.shape().to_vec();
        shape[ax] = total;
        self.make(shape, first.dtype(), || self.backend().concat(xs, ax))
    }

    /// Rotary embedding.
    pub fn rope(&self, x: &Tensor, offset: u32, theta: f32, layout: RopeLayout) -> TResult<Tensor> {
        float("rope", x)?;
        min_rank("rope", x, 2)?;
        if !x.shape()[x.shape().len() - 1].is_multiple_of(2) {
            return Err(shape_err("rope needs an even last dimension", &[x.shape()]));
        }
        if !(theta > 0.0 && theta.is_finite()) {
            return Err(arg_err(format!(
                "rope theta must be positive and finite, got {theta}"
            )));
        }
        self.make(x.shape().to_vec(), x.dtype(), || {
            self.backend().rope(x, offset as usize, theta, layout)
        })
    }

    /// Index of the maximum along an axis.
    pub fn argmax(&self, x: &Tensor, ax: i32) -> TResult<Tensor> {
        let ax = axis(ax, x.shape())?;
        if x.shape()[ax] == 0 {
            return Err(shape_err("argmax over an empty axis", &[x.shape()]));
        }
        let mut shape = x.shape().to_vec();
        shape.remove(ax);
        self.make(shape, DType::I64, || self.backend().argmax(x, ax))
    }

    /// The k largest along the last axis.
    pub fn top_k(&self, x: &Tensor, k: u32) -> TResult<(Tensor, Tensor)> {
        min_rank("top-k", x, 1)?;
        let last = x.shape()[x.shape().len() - 1];
        let k = k as usize;
        if k > last {
            return Err(arg_err(format!(
                "top-k: k = {k} exceeds the last dimension {last}"
            )));
        }
        let mut shape = x.shape().to_vec();
        *shape.last_mut().expect("rank ≥ 1") = k;
        let n: usize = shape.iter().product();
        let values = self.quota.charge(n as u64 * x.dtype().size() as u64)?;
        let indices = self.quota.charge(n as u64 * 8)?;
        let (v, i) = self.backend().top_k(x, k)?;
        Ok((
            Tensor::new(shape.clone(), x.dtype(), v, Some(values)),
            Tensor::new(shape, DType::I64, i, Some(indices)),
        ))
    }

    /// (Masked) mean along an axis.
    pub fn mean(&self, x: &Tensor, ax: i32, mask: Option<&Tensor>) -> TResult<Tensor> {
        float("mean", x)?;
        let ax = axis(ax, x.shape())?;
        if let Some(m) = mask
            && m.shape() != &x.shape()[..=ax]
        {
            return Err(shape_err(
                "mean mask must have the shape of x up to and including the axis",
                &[x.shape(), m.shape()],
            ));
        }
        let mut shape = x.shape().to_vec();
        shape.remove(ax);
        self.make(shape, x.dtype(), || self.backend().mean(x, ax, mask))
    }

    /// L2 normalization along an axis.
    pub fn l2_normalize(&self, x: &Tensor, ax: i32, eps: f32) -> TResult<Tensor> {
        float("l2-normalize", x)?;
        let ax = axis(ax, x.shape())?;
        if eps.is_nan() || eps < 0.0 {
            return Err(arg_err(format!("l2-normalize eps must be ≥ 0, got {eps}")));
        }
        self.make(x.shape().to_vec(), x.dtype(), || {
            self.backend().l2_normalize(x, ax, eps)
        })
    }

    /// Element type conversion.
    pub fn cast(&self, x: &Tensor, dtype: DType) -> TResult<Tensor> {
        if dtype == x.dtype() {
            return Ok(x.clone());
        }
        self.make(x.shape().to_vec(), dtype, || self.backend().cast(x, dtype))
    }
}
