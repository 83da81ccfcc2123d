//! [`CudaBackend`]: the `Backend` trait on one tenant's CUDA context,
//! issuing on one lane (attention in `attention.rs`).

use super::CudaDevice;
use super::blas::{self, Gemm};
use super::data::CudaData;
use super::kernels::Kernels;
use super::launch::*;
use super::tenant::{CudaTenant, IDLE_LANES, Lane, keep_pool_memory};
use crate::tensor::backend::{
    Backend, BinaryOp, DecodeAttention, MatmulPlan, NormKind, RopeLayout, UnaryOp,
};
use crate::tensor::dtype::DType;
use crate::tensor::error::{TResult, TensorError, arg_err};
use crate::tensor::layout::{broadcast_strides, strides};
use crate::tensor::storage::CpuData;
use crate::tensor::types::{Data, Tensor};
use cudarc::driver::{CudaContext, CudaSlice, CudaStream, DevicePtr, PushKernelArg};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The [`Backend`] on one tenant's context, issuing work on one lane: the
/// tenant's own (weights, start-up) or one leased from the tenant's pool
/// for the life of an instance.
pub struct CudaBackend {
    pub(super) tenant: Arc<CudaTenant>,
    lane: Arc<Lane>,
    leased: bool,
}

impl Drop for CudaBackend {
    fn drop(&mut self) {
        if self.leased {
            self.abandon();
            // A lane whose recorded step could not run is not handed on.
            if self.lane.recorder.lost() {
                return;
            }
            let mut idle = self.tenant.idle.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() < IDLE_LANES {
                idle.push(self.lane.clone());
            }
        }
    }
}

impl CudaBackend {
    /// A new context on `device` with one lane.
    pub fn new(device: Arc<CudaDevice>) -> anyhow::Result<Self> {
        let e = |e| anyhow::anyhow!("CUDA device {}: {e:?}", device.ordinal);
        let ctx = CudaContext::new_non_primary(device.ordinal, 0).map_err(e)?;
        // Buffers never move between lanes while in use: an instance's
        // tensors stay on its lane, weights are complete before any lane
        // reads them, and the stream-ordered pool orders reuse across
        // streams itself. So no per-buffer events.
        // SAFETY: as above.
        unsafe { ctx.disable_event_tracking() };
        keep_pool_memory(&ctx);
        let lane = Lane::new(&ctx)
            .map_err(|err| anyhow::anyhow!("CUDA device {}: {err:#}", device.ordinal))?;
        let kernels = Kernels::load(&ctx, &device.ptx)?;
        Ok(Self {
            tenant: Arc::new(CudaTenant {
                id: {
                    static NEXT: std::sync::atomic::AtomicU64 =
                        std::sync::atomic::AtomicU64::new(1);
                    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                },
                poison: std::env::var_os("TENSOR_WASM_GPU_POISON").is_some(),
                graphs: std::env::var_os("TENSOR_WASM_NO_GRAPHS").is_none(),
                device,
                ctx,
                kernels,
                idle: Mutex::new(Vec::new()),
                modules: Mutex::new(HashMap::new()),
            }),
            lane: Arc::new(lane),
            leased: false,
        })
    }

    /// A backend on the same context issuing on a lane of its own (from the
    /// tenant's pool, or new); the tenant's own lane if none can be made.
    pub fn lease(&self) -> Self {
        let pooled = self
            .tenant
            .idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop();
        let lane = match pooled {
            Some(l) => Some(l),
            None => self
                .bind()
                .ok()
                .and_then(|_| match Lane::new(&self.tenant.ctx) {
                    Ok(l) => Some(Arc::new(l)),
                    Err(e) => {
                        tracing::warn!("sharing the tenant's stream: {e:#}");
                        None
                    }
                }),
        };
        Self {
            tenant: self.tenant.clone(),
            leased: lane.is_some(),
            lane: lane.unwrap_or_else(|| self.lane.clone()),
        }
    }

    /// The tenant's context, kernels and lanes.
    pub fn tenant(&self) -> &Arc<CudaTenant> {
        &self.tenant
    }

    /// The stream this backend issues on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.lane.stream
    }

    /// Launches what this lane recorded so far ([`super::graph`]), before
    /// work that waits for the device or cannot be recorded; a no-op when
    /// not recording. Fails when a recorded step could not run.
    pub fn settle(&self) -> TResult<()> {
        self.bind()?;
        self.lane
            .recorder
            .settle(self.stream())
            .map_err(TensorError::Backend)
    }

    /// Device bytes made on this backend's stream (a `wasi:cuda` buffer)
    /// as a tensor's: back to the lane's cache when dropped, in its order
    /// (so never freed inside a recorded step); freed on drop when made on
    /// another stream.
    pub fn adopt(&self, buf: CudaSlice<u8>) -> CudaData {
        match Arc::ptr_eq(buf.stream(), self.stream()) {
            true => CudaData::on_lane(buf, Arc::downgrade(&self.lane)),
            false => CudaData::from_slice(buf),
        }
    }

    /// Drops a step being recorded without launching it (its instance is
    /// ending: the results have no reader).
    pub fn abandon(&self) {
        if self.leased && self.bind().is_ok() {
            self.lane.recorder.abandon(self.stream());
        }
    }

    /// Whether a recorded step of this lane could not run (every later
    /// read-back fails).
    pub fn lost(&self) -> bool {
        self.lane.recorder.lost()
    }

    /// What this lane's recorded steps did so far.
    pub fn recorded(&self) -> super::RecordedSteps {
        self.lane.recorder.counts()
    }

    /// Makes the tenant's context current on this thread.
    pub fn bind(&self) -> TResult<()> {
        self.tenant
            .ctx
            .bind_to_thread()
            .map_err(cuda_err("binding the context"))
    }

    /// Uninitialized device memory for `n` elements of `dtype` (NaN-poisoned
    /// when TENSOR_WASM_GPU_POISON is set, to catch unwritten elements).
    pub(super) fn alloc(&self, n: usize, dtype: DType) -> TResult<CudaData> {
        // Every op allocates before it launches: where a recorded step
        // captures again (after a read-back) or starts its next part.
        self.lane
            .recorder
            .op(self.stream())
            .map_err(TensorError::Backend)?;
        self.alloc_uncaptured(n, dtype)
    }

    /// [`Self::alloc`] for work that is never captured (an upload).
    fn alloc_uncaptured(&self, n: usize, dtype: DType) -> TResult<CudaData> {
        let bytes = (n * dtype.size()).max(1);
        let buf = match self.lane.take(bytes) {
            Some(buf) => buf,
            None => self.lane.alloc(bytes).map_err(cuda_err("allocating"))?,
        };
        if self.tenant.poison {
            let (p, _g) = buf.device_ptr(self.stream());
            // SAFETY: p spans `bytes` bytes on this stream.
            unsafe {
                cudarc::driver::result::memset_d8_async(p, 0xFF, bytes, self.stream().cu_stream())
            }
            .map_err(cuda_err("poisoning"))?;
        }
        Ok(CudaData::on_lane(buf, Arc::downgrade(&self.lane)))
    }

    pub(super) fn ptr(&self, x: &Tensor) -> TResult<u64> {
        match x.data() {
            Data::Cuda(g) => Ok(self.raw(&g.buf)),
            Data::Cpu(_) => Err(TensorError::Backend(
                "a host tensor reached the GPU backend".into(),
            )),
        }
    }

    pub(super) fn raw(&self, buf: &CudaSlice<u8>) -> u64 {
        let (p, _g) = buf.device_ptr(self.stream());
        p
    }

    /// A copy of `x` as f32 (itself when already f32).
    pub(super) fn as_f32(&self, x: &Tensor) -> TResult<Tensor> {
        if x.dtype() == DType::F32 {
            return Ok(x.clone());
        }
        let data = self.cast(x, DType::F32)?;
        Ok(Tensor::new(x.shape().to_vec(), DType::F32, data, None))
    }

    /// dst[dst_off + walk(dst_strides)] = src[src_off + walk(src_strides)] over `shape`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn copy(
        &self,
        dtype: DType,
        dst: u64,
        src: u64,
        shape: &[usize],
        src_strides: &[usize],
        dst_strides: &[usize],
        offsets: (usize, usize),
    ) -> TResult<()> {
        let n: usize = shape.iter().product();
        if n == 0 {
            return Ok(());
        }
        let dims = Dims::new(shape, src_strides, dst_strides)
            .ok_or_else(|| arg_err("GPU layout ops take at most 8 axes"))?;
        let (n, so, dof) = (n as i64, offsets.0 as i64, offsets.1 as i64);
        launch!(
            self,
            &format!("copy_{}", elem(dtype)),
            grid(n as usize),
            [&dst, &src, &n, &dims, &so, &dof]
        )
    }

    /// Launches `{kernel}[_rows]_{x's dtype}(out, x, outer, len, inner[, eps])`
    /// over [outer, len, inner] around `axis`, spread as [`spread`] says;
    /// the output is x's shape in `out_dtype`, or without the axis for
    /// `argmax` (an i64 output).
    pub(super) fn along_axis(
        &self,
        x: &Tensor,
        axis: usize,
        kernel: &str,
        out_dtype: DType,
        eps: Option<f32>,
    ) -> TResult<Data> {
        self.bind()?;
        let (outer, len, inner) = split(x.shape(), axis);
        let reduces = out_dtype == DType::I64 && kernel == "argmax";
        let out = self.alloc(if reduces { outer * inner } else { x.len() }, out_dtype)?;
        if outer * inner > 0 && len > 0 {
            let how = spread(outer, len, inner);
            let rows = if how == Spread::Thread { "" } else { "_rows" };
            let name = if reduces {
                format!("{kernel}{rows}_{}", x.dtype().name())
            } else {
                format!("{kernel}{rows}_{}", suffix(x.dtype()))
            };
            let f = self
                .tenant
                .kernels
                .get(&name)
                .map_err(TensorError::Backend)?;
            let (o, px) = (self.raw(&out.buf), self.ptr(x)?);
            let (outer_, len_, inner_) = (outer as i64, len as i64, inner as i64);
            let mut l = self.stream().launch_builder(&f);
            l.arg(&o).arg(&px).arg(&outer_).arg(&len_).arg(&inner_);
            if let Some(eps) = &eps {
                l.arg(eps);
            }
            // SAFETY: the kernel walks [outer, len, inner] of x and writes
            // the output allocated above for that shape.
            unsafe { l.launch(how.config(outer * inner)) }
                .map(|_| ())
                .map_err(cuda_err(kernel))?;
        }
        Ok(Data::Cuda(out))
    }

    /// Batched products of `a` and `b` (device addresses `pa`, `pb`)
    /// broadcast over `plan.batch` into `c`: one strided-batched cuBLAS call
    /// when the operands step evenly through the batch, else one per element.
    fn broadcast_products(
        &self,
        a: &Tensor,
        b: &Tensor,
        plan: &MatmulPlan,
        (pa, pb, c): (u64, u64, u64),
    ) -> TResult<()> {
        let MatmulPlan { m, n, k, .. } = *plan;
        let batch: usize = plan.batch.iter().product();
        let size = a.dtype().size();
        let (ar, br) = (a.shape().len(), b.shape().len());
        let sa = broadcast_strides(&a.shape()[..ar - 2], &plan.batch);
        let sb = broadcast_strides(&b.shape()[..br - 2], &plan.batch);
        let out_strides = strides(&plan.batch);
        let offsets: Vec<(usize, usize)> = (0..batch)
            .map(|bi| {
                let (mut oa, mut ob) = (0, 0);
                for d in 0..plan.batch.len() {
                    let idx = (bi / out_strides[d]) % plan.batch[d];
                    oa += idx * sa[d];
                    ob += idx * sb[d];
                }
                (oa * m * k, ob * k * n)
            })
            .collect();
        let step = |i: usize| {
            (
                offsets[i].0.wrapping_sub(offsets[i - 1].0),
                offsets[i].1.wrapping_sub(offsets[i - 1].1),
            )
        };
        let uniform = batch < 2 || (2..batch).all(|i| step(i) == step(1));
        let gemm = |first: usize, count: usize, strides: (usize, usize)| Gemm {
            m,
            n,
            k,
            a: pa + (offsets[first].0 * size) as u64,
            ta: plan.transpose_a,
            b: pb + (offsets[first].1 * size) as u64,
            tb: plan.transpose_b,
            c: c + (first * m * n * size) as u64,
            batch: count,
            strides: (strides.0, strides.1, m * n),
            in_type: a.dtype(),
            out_type: a.dtype(),
        };
        if uniform {
            let s = if batch < 2 { (0, 0) } else { step(1) };
            self.matmul_into(&gemm(0, batch, s))?;
        } else {
            for i in 0..batch {
                self.matmul_into(&gemm(i, 1, (0, 0)))?;
            }
        }
        Ok(())
    }

    /// Zeroes `bytes` bytes of this context's memory at `ptr`, in stream order.
    ///
    /// # Safety
    /// `ptr..ptr + bytes` lies inside one live allocation of this context.
    pub(super) unsafe fn zero(&self, ptr: u64, bytes: usize) -> TResult<()> {
        // SAFETY: the caller's range is a live allocation (above).
        unsafe { cudarc::driver::result::memset_d8_async(ptr, 0, bytes, self.stream().cu_stream()) }
            .map_err(cuda_err("zeroing"))
    }

    pub(super) fn matmul_into(&self, g: &Gemm) -> TResult<()> {
        let blas = self.lane.blas.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: the plan's extents were validated by the op layer and the
        // buffers were allocated for them in this context.
        unsafe { blas::gemm(*blas.handle(), g, self.tenant.device.tf32) }
            .map_err(TensorError::Backend)
    }
}

impl Backend for CudaBackend {
    fn name(&self) -> String {
        format!("cuda:{}", self.tenant.device.ordinal)
    }

    fn enqueues(&self) -> bool {
        true
    }

    fn max_broadcast_rank(&self) -> usize {
        MAX_RANK
    }

    fn record(&self, key: u64) -> TResult<()> {
        // A lane shared with other instances would record their work too.
        if !self.leased || !self.tenant.graphs {
            return Ok(());
        }
        self.bind()?;
        // Made now: a first split product would allocate it mid-capture.
        self.lane
            .split_scratch()
            .map_err(cuda_err("the split-product scratch"))?;
        self.lane
            .recorder
            .record(self.stream(), key)
            .map_err(TensorError::Backend)
    }

    fn run_recorded(&self) -> TResult<()> {
        self.bind()?;
        self.lane
            .recorder
            .run(self.stream())
            .map_err(TensorError::Backend)
    }

    fn synchronize(&self) -> TResult<()> {
        self.settle()?;
        self.stream()
            .synchronize()
            .map_err(cuda_err("waiting for the GPU"))
    }

    fn upload(&self, data: CpuData) -> TResult<Data> {
        self.upload_bytes(&data.as_le_bytes(), data.dtype())
    }

    fn upload_bytes(&self, bytes: &[u8], dtype: DType) -> TResult<Data> {
        // From guest memory: not something a graph can replay.
        self.settle()?;
        let mut out = self.alloc_uncaptured(bytes.len() / dtype.size(), dtype)?;
        if !bytes.is_empty() {
            self.stream()
                .memcpy_htod(bytes, &mut out.buf.slice_mut(..bytes.len()))
                .map_err(cuda_err("copying to the GPU"))?;
        }
        Ok(Data::Cuda(out))
    }

    fn download(&self, x: &Tensor) -> TResult<CpuData> {
        self.settle()?;
        let Data::Cuda(g) = x.data() else {
            return Err(TensorError::Backend(
                "a host tensor reached the GPU backend".into(),
            ));
        };
        let mut bytes = vec![0u8; x.len() * x.dtype().size()];
        if !bytes.is_empty() {
            self.stream()
                .memcpy_dtoh(&g.buf.slice(..bytes.len()), &mut bytes)
                .map_err(cuda_err("copying from the GPU"))?;
        }
        self.stream()
            .synchronize()
            .map_err(cuda_err("waiting for the GPU"))?;
        Ok(CpuData::from_le_bytes(&bytes, x.dtype()))
    }

    fn matmul(&self, a: &Tensor, b: &Tensor, plan: &MatmulPlan) -> TResult<Data> {
        self.bind()?;
        let MatmulPlan { m, n, k, .. } = *plan;
        let batch: usize = plan.batch.iter().product();
        let out = self.alloc(batch * m * n, a.dtype())?;
        if batch * m * n == 0 {
            return Ok(Data::Cuda(out));
        }
        let c = self.raw(&out.buf);
        if k == 0 {
            // SAFETY: c spans the output's bytes.
            unsafe { self.zero(c, batch * m * n * a.dtype().size())? };
            return Ok(Data::Cuda(out));
        }
        let (pa, pb) = (self.ptr(a)?, self.ptr(b)?);
        if b.shape().len() == 2 && !plan.transpose_a {
            let rows = batch * m;
            // A decode step's rows by a weight stored [n, k]: one launch of
            // our own, which costs the CPU less than a cuBLAS call (it picks
            // and launches its kernels on every call).
            let kind = match product(rows, n, k) {
                _ if !plan.transpose_b || !a.dtype().is_float() => Product::Cublas,
                kind => kind,
            };
            let (dt, rows_, n_, k_) = (suffix(a.dtype()), rows as i64, n as i64, k as i64);
            match kind {
                Product::Matvec => {
                    let columns = (BLOCK / 32) as usize / MATVEC_SPLIT;
                    let blocks = rows_grid(n.div_ceil(columns));
                    launch!(
                        self,
                        &format!("matvec_t_{dt}"),
                        blocks,
                        [&c, &pa, &pb, &rows_, &n_, &k_]
                    )?;
                    return Ok(Data::Cuda(out));
                }
                Product::Tiled => {
                    // At most 2²⁸ columns (`product`): the grid needs no clamp.
                    let (x, y) = (n.div_ceil(TILE.1), rows.div_ceil(TILE.0));
                    let (parts, chunk) = split_k(x * y, k);
                    // The scratch's tickets, then its partial tiles (none
                    // for a product in one part: the kernel reads neither).
                    let (tickets, ws) = match parts {
                        1 => (0u64, 0u64),
                        _ => {
                            let scratch = self
                                .lane
                                .split_scratch()
                                .map_err(cuda_err("split scratch"))?;
                            let t = self.raw(scratch);
                            (t, t + (SPLIT_TILES * 4) as u64)
                        }
                    };
                    let chunk = chunk as i64;
                    launch!(
                        self,
                        &format!("matmul_t_{dt}"),
                        (x as u32, y as u32, parts),
                        [&c, &pa, &pb, &rows_, &n_, &k_, &chunk, &ws, &tickets]
                    )?;
                    return Ok(Data::Cuda(out));
                }
                Product::Cublas => {}
            }
            // One shared right operand (a weight) and a row-major left one:
            // the whole batch is a single (batch·m)×k product, which cuBLAS
            // tiles far better than `batch` products of m rows.
            self.matmul_into(&Gemm {
                m: rows,
                n,
                k,
                a: pa,
                ta: false,
                b: pb,
                tb: plan.transpose_b,
                c,
                batch: 1,
                strides: (0, 0, 0),
                in_type: a.dtype(),
                out_type: a.dtype(),
            })?;
            return Ok(Data::Cuda(out));
        }
        self.broadcast_products(a, b, plan, (pa, pb, c))?;
        Ok(Data::Cuda(out))
    }

    fn binary(&self, op: BinaryOp, a: &Tensor, b: &Tensor, out_shape: &[usize]) -> TResult<Data> {
        let float = a.dtype().is_float();
        if !float && op == BinaryOp::Div && self.download(b)?.as_i64().contains(&0) {
            return Err(arg_err("integer division by zero"));
        }
        self.bind()?;
        let n: usize = out_shape.iter().product();
        let out = self.alloc(n, a.dtype())?;
        let kernel = if float {
            format!("binary_{}", suffix(a.dtype()))
        } else {
            format!("int_binary_{}", a.dtype().name())
        };
        if n > 0 {
            let sa = broadcast_strides(a.shape(), out_shape);
            let sb = broadcast_strides(b.shape(), out_shape);
            let dims = Dims::new(out_shape, &sa, &sb).expect("rank checked");
            let (o, pa, pb) = (self.raw(&out.buf), self.ptr(a)?, self.ptr(b)?);
            let (n, op) = (n as i64, op as i32);
            launch!(
                self,
                &kernel,
                grid(n as usize),
                [&o, &pa, &pb, &n, &op, &dims]
            )?;
        }
        Ok(Data::Cuda(out))
    }

    fn unary(&self, op: UnaryOp, x: &Tensor) -> TResult<Data> {
        self.bind()?;
        let out = self.alloc(x.len(), x.dtype())?;
        if !x.is_empty() {
            let (code, factor): (i32, f32) = match op {
                UnaryOp::Scale(s) => (0, s),
                UnaryOp::Gelu => (1, 0.0),
                UnaryOp::GeluTanh => (2, 0.0),
                UnaryOp::Silu => (3, 0.0),
                UnaryOp::Relu => (4, 0.0),
                UnaryOp::Tanh => (5, 0.0),
                UnaryOp::Exp => (6, 0.0),
            };
            let (o, px, n) = (self.raw(&out.buf), self.ptr(x)?, x.len() as i64);
            launch!(
                self,
                &format!("unary_{}", suffix(x.dtype())),
                grid(x.len()),
                [&o, &px, &n, &code, &factor]
            )?;
        }
        Ok(Data::Cuda(out))
    }

    fn softmax(&self, x: &Tensor, axis: usize, causal: bool) -> TResult<Data> {
        let shape = x.shape();
        if axis + 1 != shape.len() {
            // Causal masking applies to the last axis only (as on the CPU).
            return self.along_axis(x, axis, "softmax_axis", x.dtype(), None);
        }
        self.bind()?;
        let out = self.alloc(x.len(), x.dtype())?;
        let len = shape[axis];
        if len > 0 && !x.is_empty() {
            let rows = (x.len() / len) as i64;
            let q = if causal {
                shape[shape.len() - 2] as i64
            } else {
                0
            };
            let (o, px, len) = (self.raw(&out.buf), self.ptr(x)?, len as i64);
            launch!(
                self,
                &format!("softmax_{}", suffix(x.dtype())),
                rows_grid(rows as usize),
                [&o, &px, &rows, &len, &q]
            )?;
        }
        Ok(Data::Cuda(out))
    }

    fn norm(
        &self,
        kind: NormKind,
        x: &Tensor,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f32,
    ) -> TResult<Data> {
        self.bind()?;
        let out = self.alloc(x.len(), x.dtype())?;
        let dim = x.shape().last().copied().unwrap_or(1);
        if dim > 0 && !x.is_empty() {
            let rows = (x.len() / dim) as i64;
            // Weight and bias in f32 (models often keep them f32 beside bf16 activations).
            let w32 = weight.map(|w| self.as_f32(w)).transpose()?;
            let b32 = bias.map(|b| self.as_f32(b)).transpose()?;
            let pw = w32.as_ref().map(|w| self.ptr(w)).transpose()?.unwrap_or(0);
            let pb = b32.as_ref().map(|b| self.ptr(b)).transpose()?.unwrap_or(0);
            let (o, px, dim) = (self.raw(&out.buf), self.ptr(x)?, dim as i64);
            let kind = matches!(kind, NormKind::Rms) as i32;
            launch!(
                self,
                &format!("norm_{}", suffix(x.dtype())),
                rows_grid(rows as usize),
                [&o, &px, &pw, &pb, &rows, &dim, &kind, &eps]
            )?;
        }
        Ok(Data::Cuda(out))
    }

    fn attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Tensor>,
        scale: f32,
        causal: bool,
    ) -> TResult<Data> {
        self.attend(q, k, v, mask, scale, causal)
    }

    fn embedding(&self, table: &Tensor, ids: &Tensor) -> TResult<Data> {
        // Ids are checked on the host: an out-of-range id is an error, never a wild read.
        let host_ids = self.download(ids)?.as_i64().into_owned();
        let rows = table.shape()[0];
        let dim = table.shape()[1];
        if let Some(bad) = host_ids.iter().find(|&&i| i < 0 || i as u64 >= rows as u64) {
            return Err(arg_err(format!(
                "embedding id {bad} out of range for a table of {rows} rows"
            )));
        }
        let out = self.alloc(host_ids.len() * dim, table.dtype())?;
        if !host_ids.is_empty() && dim > 0 {
            let Data::Cuda(dev_ids) = self.upload(CpuData::I64(host_ids.clone()))? else {
                unreachable!("upload returns device data")
            };
            let (o, pt, pi) = (self.raw(&out.buf), self.ptr(table)?, self.raw(&dev_ids.buf));
            let (n, dim_) = (host_ids.len() as i64, dim as i64);
            launch!(
                self,
                &format!("gather_{}", elem(table.dtype())),
                grid(host_ids.len() * dim),
                [&o, &pt, &pi, &n, &dim_]
            )?;
        }
        Ok(Data::Cuda(out))
    }

    fn permute(&self, x: &Tensor, dims: &[usize]) -> TResult<Data> {
        self.bind()?;
        let out = self.alloc(x.len(), x.dtype())?;
        let shape: Vec<usize> = dims.iter().map(|&d| x.shape()[d]).collect();
        let xs = strides(x.shape());
        let src: Vec<usize> = dims.iter().map(|&d| xs[d]).collect();
        let (o, px) = (self.raw(&out.buf), self.ptr(x)?);
        self.copy(x.dtype(), o, px, &shape, &src, &strides(&shape), (0, 0))?;
        Ok(Data::Cuda(out))
    }

    fn narrow(&self, x: &Tensor, axis: usize, start: usize, len: usize) -> TResult<Data> {
        self.bind()?;
        let mut shape = x.shape().to_vec();
        shape[axis] = len;
        let n: usize = shape.iter().product();
        let out = self.alloc(n, x.dtype())?;
        let xs = strides(x.shape());
        let (o, px) = (self.raw(&out.buf), self.ptr(x)?);
        self.copy(
            x.dtype(),
            o,
            px,
            &shape,
            &xs,
            &strides(&shape),
            (start * xs[axis], 0),
        )?;
        Ok(Data::Cuda(out))
    }

    fn concat(&self, xs: &[&Tensor], axis: usize) -> TResult<Data> {
        self.bind()?;
        let mut shape = xs[0].shape().to_vec();
        shape[axis] = xs.iter().map(|t| t.shape()[axis]).sum();
        let n: usize = shape.iter().product();
        let out = self.alloc(n, xs[0].dtype())?;
        let os = strides(&shape);
        let o = self.raw(&out.buf);
        let mut at = 0;
        for t in xs {
            let p = self.ptr(t)?;
            self.copy(
                t.dtype(),
                o,
                p,
                t.shape(),
                &strides(t.shape()),
                &os,
                (0, at * os[axis]),
            )?;
            at += t.shape()[axis];
        }
        Ok(Data::Cuda(out))
    }

    fn rope(&self, x: &Tensor, offset: usize, theta: f32, layout: RopeLayout) -> TResult<Data> {
        self.bind()?;
        let out = self.alloc(x.len(), x.dtype())?;
        let shape = x.shape();
        let (seq, dim) = (shape[shape.len() - 2], shape[shape.len() - 1]);
        if seq > 0 && dim > 0 && !x.is_empty() {
            let rows = (x.len() / dim) as i64;
            let (o, px) = (self.raw(&out.buf), self.ptr(x)?);
            let (seq, dim_, off) = (seq as i64, dim as i64, offset as i64);
            let layout = matches!(layout, RopeLayout::HalfSplit) as i32;
            launch!(
                self,
                &format!("rope_{}", suffix(x.dtype())),
                grid(x.len() / 2 + 1),
                [&o, &px, &rows, &seq, &dim_, &off, &theta, &layout]
            )?;
        }
        Ok(Data::Cuda(out))
    }

    fn argmax(&self, x: &Tensor, axis: usize) -> TResult<Data> {
        self.along_axis(x, axis, "argmax", DType::I64, None)
    }

    fn top_k(&self, x: &Tensor, k: usize) -> TResult<(Data, Data)> {
        self.bind()?;
        let len = *x.shape().last().unwrap_or(&1);
        let rows = x.len().checked_div(len).unwrap_or(0);
        let values = self.alloc(rows * k, x.dtype())?;
        let indices = self.alloc(rows * k, DType::I64)?;
        if rows * k > 0 {
            let (v, i, px) = (self.raw(&values.buf), self.raw(&indices.buf), self.ptr(x)?);
            let (rows_, len, k) = (rows as i64, len as i64, k as i64);
            launch!(
                self,
                &format!("top_k_{}", x.dtype().name()),
                rows_grid(rows),
                [&v, &i, &px, &rows_, &len, &k]
            )?;
        }
        Ok((Data::Cuda(values), Data::Cuda(indices)))
    }

    fn mean(&self, x: &Tensor, axis: usize, mask: Option<&Tensor>) -> TResult<Data> {
        // The mask, any dtype, as f32 on the device (0 = skip).
        let mask = match mask {
            Some(m) if m.dtype() != DType::F32 => Some(Tensor::new(
                m.shape().to_vec(),
                DType::F32,
                self.cast(m, DType::F32)?,
                None,
            )),
            other => other.cloned(),
        };
        let pm = match &mask {
            Some(m) => self.ptr(m)?,
            None => 0u64,
        };
        self.bind()?;
        let shape = x.shape();
        let (outer, len, inner) = split(shape, axis);
        let out = self.alloc(outer * inner, x.dtype())?;
        if outer * inner > 0 {
            let (o, px) = (self.raw(&out.buf), self.ptr(x)?);
            let (outer_, len, inner_) = (outer as i64, len as i64, inner as i64);
            launch!(
                self,
                &format!("mean_{}", suffix(x.dtype())),
                grid(outer * inner),
                [&o, &px, &pm, &outer_, &len, &inner_]
            )?;
        }
        Ok(Data::Cuda(out))
    }

    fn l2_normalize(&self, x: &Tensor, axis: usize, eps: f32) -> TResult<Data> {
        self.along_axis(x, axis, "l2norm", x.dtype(), Some(eps))
    }

    fn decode_attention(&self, a: &DecodeAttention<'_>) -> TResult<(Data, Option<(Data, Data)>)> {
        self.decode(a)
    }

    fn writable(&self, x: &Tensor) -> bool {
        // Made on this lane: every earlier use of it is on this stream, so
        // a write issued now comes after them.
        matches!(x.data(), Data::Cuda(g) if g.is_on(&self.lane))
    }

    fn add_rms_norm(
        &self,
        x: &Tensor,
        y: &Tensor,
        weight: Option<&Tensor>,
        eps: f32,
    ) -> TResult<(Data, Data)> {
        self.add_norm(x, y, weight, eps)
    }

    fn cast(&self, x: &Tensor, dtype: DType) -> TResult<Data> {
        self.bind()?;
        let out = self.alloc(x.len(), dtype)?;
        if !x.is_empty() {
            let (o, px, n) = (self.raw(&out.buf), self.ptr(x)?, x.len() as i64);
            let name = if x.dtype().is_float() && dtype.is_float() {
                format!("to_{}_{}", suffix(dtype), suffix(x.dtype()))
            } else if x.dtype() == dtype {
                format!("copy_{}", elem(dtype))
            } else {
                format!("cast_{}_{}", dtype.name(), x.dtype().name())
            };
            if x.dtype() == dtype {
                // An identity cast of an integer tensor: a plain copy.
                let dims = Dims::new(&[x.len()], &[1], &[1]).expect("rank 1");
                let zero = 0i64;
                return launch!(
                    self,
                    &name,
                    grid(x.len()),
                    [&o, &px, &n, &dims, &zero, &zero]
                )
                .map(|_| Data::Cuda(out));
            }
            launch!(self, &name, grid(x.len()), [&o, &px, &n])?;
        }
        Ok(Data::Cuda(out))
    }
}
