//! The `wasi:tensor` host traits, implemented over the validated op layer.

use super::TensorView;
use super::backend::{BinaryOp, NormKind, RopeLayout as Layout, UnaryOp};
use super::bindings::wasi::tensor::{ops, types, weights};
use super::dtype::DType;
use super::error::{TResult, TensorError};
use super::loaded::MetaValue;
use super::ops::Tensors;
use super::storage::CpuData;
use super::types::Tensor;
use super::weights::WeightsHandle;
use crate::platform::telemetry::Span;
use std::time::Instant;
use wasmtime::AsContext;
use wasmtime::component::{Resource, WasmList};

/// Work below which an op runs on the serving thread (about 0.1-1 ms).
const INLINE_WORK: u64 = 1 << 20;

pub(super) type WResult<T> = wasmtime::Result<Result<T, types::Error>>;

/// Runs a CPU op on a rayon worker and awaits it. The op's own parallel
/// loops then run in that pool directly; from a tokio blocking thread they
/// were injected into the pool while the thread slept on a latch — one more
/// wake-up and context switch per op (hundreds per request), ~20% of the
/// CPU in the kernel's scheduler at batch 32. A panic becomes an error.
async fn on_cpu_pool<T: Send + 'static>(
    op: impl FnOnce() -> T + Send + 'static,
) -> wasmtime::Result<T> {
    let (done, result) = tokio::sync::oneshot::channel();
    rayon::spawn(move || {
        let _ = done.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(op)));
    });
    match result.await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(_)) => Err(wasmtime::Error::msg("tensor op failed: it panicked")),
        Err(_) => Err(wasmtime::Error::msg(
            "tensor op failed: its worker went away",
        )),
    }
}

impl From<ops::RopeLayout> for Layout {
    fn from(l: ops::RopeLayout) -> Self {
        match l {
            ops::RopeLayout::Interleaved => Layout::Interleaved,
            ops::RopeLayout::HalfSplit => Layout::HalfSplit,
        }
    }
}

impl From<types::Dtype> for DType {
    fn from(d: types::Dtype) -> Self {
        match d {
            types::Dtype::F32 => DType::F32,
            types::Dtype::F16 => DType::F16,
            types::Dtype::Bf16 => DType::BF16,
            types::Dtype::I32 => DType::I32,
            types::Dtype::I64 => DType::I64,
            types::Dtype::U8 => DType::U8,
        }
    }
}

impl From<DType> for types::Dtype {
    fn from(d: DType) -> Self {
        match d {
            DType::F32 => types::Dtype::F32,
            DType::F16 => types::Dtype::F16,
            DType::BF16 => types::Dtype::Bf16,
            DType::I32 => types::Dtype::I32,
            DType::I64 => types::Dtype::I64,
            DType::U8 => types::Dtype::U8,
        }
    }
}

fn wit_shape(s: &[usize]) -> Vec<u32> {
    s.iter().map(|&d| d as u32).collect()
}

impl From<TensorError> for types::Error {
    fn from(e: TensorError) -> Self {
        match e {
            TensorError::InvalidShape { message, shapes } => {
                types::Error::InvalidShape(types::ShapeError {
                    message,
                    shapes: shapes.iter().map(|s| wit_shape(s)).collect(),
                })
            }
            TensorError::DtypeMismatch { message, dtypes } => {
                types::Error::DtypeMismatch(types::DtypeError {
                    message,
                    dtypes: dtypes.into_iter().map(Into::into).collect(),
                })
            }
            TensorError::InvalidArgument(m) => types::Error::InvalidArgument(m),
            TensorError::QuotaExceeded {
                requested,
                in_use,
                limit,
            } => types::Error::QuotaExceeded(types::QuotaError {
                requested,
                in_use,
                limit,
            }),
            TensorError::NotGranted(m) => types::Error::NotGranted(m),
            TensorError::NotFound(m) => types::Error::NotFound(m),
            TensorError::Backend(m) => types::Error::Backend(m),
        }
    }
}

impl TensorView<'_> {
    pub(super) fn get(&self, r: &Resource<Tensor>) -> wasmtime::Result<Tensor> {
        Ok(self.table.get(r)?.clone())
    }

    /// Counts a call that started at `started`, then [`Self::put`]s its result.
    fn put_timed(&mut self, started: Instant, r: TResult<Tensor>) -> WResult<Resource<Tensor>> {
        self.ctx.usage.call(started);
        self.put(r)
    }

    /// Stores an op's result as a new handle; errors become the WIT variant.
    fn put(&mut self, r: TResult<Tensor>) -> WResult<Resource<Tensor>> {
        match r {
            Ok(t) => Ok(Ok(self.table.push(t)?)),
            Err(e) => Ok(Err(e.into())),
        }
    }

    /// Reads `x` back and converts it: on a blocking thread when the backend
    /// must wait for queued work (GPU) or the copy is large, so the serving
    /// thread keeps answering other requests meanwhile.
    async fn read<T: Send + 'static>(
        &mut self,
        x: Tensor,
        convert: impl FnOnce(&CpuData) -> T + Send + 'static,
    ) -> WResult<T> {
        let started = Instant::now();
        let tensors = self.ctx.tensors.clone();
        let work = x.len() as u64 * 8;
        let bytes = x.byte_size();
        let read = move || tensors.read(&x).map(|d| convert(&d)).map_err(Into::into);
        let r = if work < INLINE_WORK && !self.ctx.tensors.backend().enqueues() {
            Ok(read())
        } else {
            tokio::task::spawn_blocking(read)
                .await
                .map_err(|e| wasmtime::Error::msg(format!("tensor read failed: {e}")))
        };
        self.ctx.usage.read(started, bytes);
        r
    }

    /// Runs an op: inline when `work` (about one unit per multiply-add or
    /// element touched) is small or the backend only enqueues it (GPU),
    /// otherwise on the CPU backend's thread pool ([`on_cpu_pool`]) so that
    /// the serving thread keeps answering other requests meanwhile.
    /// The op `name` is a span of its own in traces with
    /// `--trace-tensor-ops` (otherwise only counted into the request's).
    pub(super) async fn compute<T: Send + 'static>(
        &mut self,
        name: &'static str,
        work: u64,
        op: impl FnOnce(&Tensors) -> TResult<T> + Send + 'static,
    ) -> wasmtime::Result<TResult<T>> {
        let span = Span::verbose(name).with("work", work as i64);
        let started = Instant::now();
        let tensors = self.ctx.tensors.clone();
        let r = if work < INLINE_WORK || tensors.backend().enqueues() {
            op(&tensors)
        } else {
            on_cpu_pool(move || op(&tensors)).await?
        };
        drop(span);
        self.ctx.usage.op(name, started);
        Ok(r)
    }

    /// [`Self::compute`]s an op and stores its result as a new handle.
    pub(super) async fn run(
        &mut self,
        name: &'static str,
        work: u64,
        op: impl FnOnce(&Tensors) -> TResult<Tensor> + Send + 'static,
    ) -> WResult<Resource<Tensor>> {
        let r = self.compute(name, work, op).await?;
        self.put(r)
    }

    async fn unary(&mut self, op: UnaryOp, x: Resource<Tensor>) -> WResult<Resource<Tensor>> {
        let x = self.get(&x)?;
        self.run(op.name(), x.len() as u64 * 8, move |t| t.unary(op, &x))
            .await
    }

    pub(super) async fn binary(
        &mut self,
        op: BinaryOp,
        a: Resource<Tensor>,
        b: Resource<Tensor>,
    ) -> WResult<Resource<Tensor>> {
        let (a, b) = (self.get(&a)?, self.get(&b)?);
        let work = a.len().max(b.len()) as u64;
        self.run(op.name(), work, move |t| t.binary(op, &a, &b))
            .await
    }

    pub(super) fn opt(&self, r: &Option<Resource<Tensor>>) -> wasmtime::Result<Option<Tensor>> {
        r.as_ref().map(|r| self.get(r)).transpose()
    }
}

impl types::Host for TensorView<'_> {}

impl types::HostTensor for TensorView<'_> {
    async fn from_bytes(
        &mut self,
        data: Vec<u8>,
        shape: Vec<u32>,
        dtype: types::Dtype,
    ) -> WResult<Resource<Tensor>> {
        let started = Instant::now();
        let r = self.ctx.tensors.from_bytes(&data, &shape, dtype.into());
        self.put_timed(started, r)
    }

    async fn from_f32(&mut self, data: Vec<f32>, shape: Vec<u32>) -> WResult<Resource<Tensor>> {
        let started = Instant::now();
        let r = self.ctx.tensors.from_data(CpuData::F32(data), &shape);
        self.put_timed(started, r)
    }

    async fn from_i64(&mut self, data: Vec<i64>, shape: Vec<u32>) -> WResult<Resource<Tensor>> {
        let started = Instant::now();
        let r = self.ctx.tensors.from_data(CpuData::I64(data), &shape);
        self.put_timed(started, r)
    }

    async fn full(
        &mut self,
        shape: Vec<u32>,
        dtype: types::Dtype,
        value: f64,
    ) -> WResult<Resource<Tensor>> {
        let started = Instant::now();
        let r = self.ctx.tensors.full(&shape, dtype.into(), value);
        self.put_timed(started, r)
    }

    async fn shape(&mut self, x: Resource<Tensor>) -> wasmtime::Result<Vec<u32>> {
        let started = Instant::now();
        let shape = wit_shape(self.table.get(&x)?.shape());
        self.ctx.usage.call(started);
        Ok(shape)
    }

    async fn dtype(&mut self, x: Resource<Tensor>) -> wasmtime::Result<types::Dtype> {
        Ok(self.table.get(&x)?.dtype().into())
    }

    async fn element_count(&mut self, x: Resource<Tensor>) -> wasmtime::Result<u64> {
        Ok(self.table.get(&x)?.len() as u64)
    }

    async fn to_bytes(&mut self, x: Resource<Tensor>) -> WResult<Vec<u8>> {
        let x = self.get(&x)?;
        self.read(x, |d| d.to_le_bytes()).await
    }

    async fn to_f32(&mut self, x: Resource<Tensor>) -> WResult<Vec<f32>> {
        let x = self.get(&x)?;
        self.read(x, |d| d.as_f32().into_owned()).await
    }

    async fn drop(&mut self, x: Resource<Tensor>) -> wasmtime::Result<()> {
        let started = Instant::now();
        self.table.delete(x)?;
        self.ctx.usage.call(started);
        Ok(())
    }
}

impl ops::Host for TensorView<'_> {
    async fn matmul(
        &mut self,
        a: Resource<Tensor>,
        b: Resource<Tensor>,
        ta: bool,
        tb: bool,
    ) -> WResult<Resource<Tensor>> {
        let (a, b) = (self.get(&a)?, self.get(&b)?);
        // batch·m·k of a, times n of b.
        let n = b
            .shape()
            .iter()
            .rev()
            .nth(usize::from(tb))
            .copied()
            .unwrap_or(1);
        let work = a.len() as u64 * n as u64;
        self.run("matmul", work, move |t| t.matmul(&a, &b, ta, tb))
            .await
    }

    async fn add(&mut self, a: Resource<Tensor>, b: Resource<Tensor>) -> WResult<Resource<Tensor>> {
        self.binary(BinaryOp::Add, a, b).await
    }

    async fn sub(&mut self, a: Resource<Tensor>, b: Resource<Tensor>) -> WResult<Resource<Tensor>> {
        self.binary(BinaryOp::Sub, a, b).await
    }

    async fn mul(&mut self, a: Resource<Tensor>, b: Resource<Tensor>) -> WResult<Resource<Tensor>> {
        self.binary(BinaryOp::Mul, a, b).await
    }

    async fn div(&mut self, a: Resource<Tensor>, b: Resource<Tensor>) -> WResult<Resource<Tensor>> {
        self.binary(BinaryOp::Div, a, b).await
    }

    async fn scale(&mut self, x: Resource<Tensor>, factor: f32) -> WResult<Resource<Tensor>> {
        self.unary(UnaryOp::Scale(factor), x).await
    }

    async fn gelu(&mut self, x: Resource<Tensor>) -> WResult<Resource<Tensor>> {
        self.unary(UnaryOp::Gelu, x).await
    }

    async fn gelu_tanh(&mut self, x: Resource<Tensor>) -> WResult<Resource<Tensor>> {
        self.unary(UnaryOp::GeluTanh, x).await
    }

    async fn silu(&mut self, x: Resource<Tensor>) -> WResult<Resource<Tensor>> {
        self.unary(UnaryOp::Silu, x).await
    }

    async fn relu(&mut self, x: Resource<Tensor>) -> WResult<Resource<Tensor>> {
        self.unary(UnaryOp::Relu, x).await
    }

    async fn tanh(&mut self, x: Resource<Tensor>) -> WResult<Resource<Tensor>> {
        self.unary(UnaryOp::Tanh, x).await
    }

    async fn exp(&mut self, x: Resource<Tensor>) -> WResult<Resource<Tensor>> {
        self.unary(UnaryOp::Exp, x).await
    }

    async fn softmax(
        &mut self,
        x: Resource<Tensor>,
        axis: i32,
        causal: bool,
    ) -> WResult<Resource<Tensor>> {
        let x = self.get(&x)?;
        self.run("softmax", x.len() as u64 * 8, move |t| {
            t.softmax(&x, axis, causal)
        })
        .await
    }

    async fn layer_norm(
        &mut self,
        x: Resource<Tensor>,
        w: Option<Resource<Tensor>>,
        b: Option<Resource<Tensor>>,
        eps: f32,
    ) -> WResult<Resource<Tensor>> {
        let (x, w, b) = (self.get(&x)?, self.opt(&w)?, self.opt(&b)?);
        let work = x.len() as u64 * 4;
        self.run("layer-norm", work, move |t| {
            t.norm(NormKind::Layer, &x, w.as_ref(), b.as_ref(), eps)
        })
        .await
    }

    async fn rms_norm(
        &mut self,
        x: Resource<Tensor>,
        w: Option<Resource<Tensor>>,
        eps: f32,
    ) -> WResult<Resource<Tensor>> {
        let (x, w) = (self.get(&x)?, self.opt(&w)?);
        let work = x.len() as u64 * 4;
        self.run("rms-norm", work, move |t| {
            t.norm(NormKind::Rms, &x, w.as_ref(), None, eps)
        })
        .await
    }

    async fn attention(
        &mut self,
        q: Resource<Tensor>,
        k: Resource<Tensor>,
        v: Resource<Tensor>,
        mask: Option<Resource<Tensor>>,
        scale: f32,
        causal: bool,
    ) -> WResult<Resource<Tensor>> {
        let (q, k, v, m) = (
            self.get(&q)?,
            self.get(&k)?,
            self.get(&v)?,
            self.opt(&mask)?,
        );
        // q·kᵀ and p·v: about 2·q-elements·key-length multiply-adds.
        let keys = k.shape().get(2).copied().unwrap_or(1);
        let work = 2 * q.len() as u64 * keys as u64;
        self.run("attention", work, move |t| {
            t.attention(&q, &k, &v, m.as_ref(), scale, causal)
        })
        .await
    }

    async fn embedding(
        &mut self,
        table: Resource<Tensor>,
        ids: Resource<Tensor>,
    ) -> WResult<Resource<Tensor>> {
        let (table, ids) = (self.get(&table)?, self.get(&ids)?);
        let work = ids.len() as u64 * table.shape().get(1).copied().unwrap_or(1) as u64;
        self.run("embedding", work, move |t| t.embedding(&table, &ids))
            .await
    }

    async fn reshape(&mut self, x: Resource<Tensor>, shape: Vec<u32>) -> WResult<Resource<Tensor>> {
        let x = self.get(&x)?;
        let started = Instant::now();
        let r = self.ctx.tensors.reshape(&x, &shape);
        self.put_timed(started, r)
    }

    async fn permute(&mut self, x: Resource<Tensor>, dims: Vec<u32>) -> WResult<Resource<Tensor>> {
        let x = self.get(&x)?;
        self.run("permute", x.len() as u64, move |t| t.permute(&x, &dims))
            .await
    }

    async fn transpose(
        &mut self,
        x: Resource<Tensor>,
        a0: i32,
        a1: i32,
    ) -> WResult<Resource<Tensor>> {
        let x = self.get(&x)?;
        self.run("transpose", x.len() as u64, move |t| {
            t.transpose(&x, a0, a1)
        })
        .await
    }

    async fn narrow(
        &mut self,
        x: Resource<Tensor>,
        axis: i32,
        start: u32,
        length: u32,
    ) -> WResult<Resource<Tensor>> {
        let x = self.get(&x)?;
        self.run("narrow", x.len() as u64, move |t| {
            t.narrow(&x, axis, start, length)
        })
        .await
    }

    async fn concat(&mut self, xs: Vec<Resource<Tensor>>, axis: i32) -> WResult<Resource<Tensor>> {
        let xs = xs
            .iter()
            .map(|x| self.get(x))
            .collect::<wasmtime::Result<Vec<_>>>()?;
        let work = xs.iter().map(|x| x.len() as u64).sum();
        self.run("concat", work, move |t| {
            let refs: Vec<&Tensor> = xs.iter().collect();
            t.concat(&refs, axis)
        })
        .await
    }

    async fn rope(
        &mut self,
        x: Resource<Tensor>,
        offset: u32,
        theta: f32,
        layout: ops::RopeLayout,
    ) -> WResult<Resource<Tensor>> {
        let x = self.get(&x)?;
        let layout = layout.into();
        self.run("rope", x.len() as u64 * 4, move |t| {
            t.rope(&x, offset, theta, layout)
        })
        .await
    }

    async fn argmax(&mut self, x: Resource<Tensor>, axis: i32) -> WResult<Resource<Tensor>> {
        let x = self.get(&x)?;
        self.run("argmax", x.len() as u64, move |t| t.argmax(&x, axis))
            .await
    }

    async fn top_k(
        &mut self,
        x: Resource<Tensor>,
        k: u32,
    ) -> WResult<(Resource<Tensor>, Resource<Tensor>)> {
        let x = self.get(&x)?;
        match self.ctx.tensors.top_k(&x, k) {
            Ok((v, i)) => Ok(Ok((self.table.push(v)?, self.table.push(i)?))),
            Err(e) => Ok(Err(e.into())),
        }
    }

    async fn mean(
        &mut self,
        x: Resource<Tensor>,
        axis: i32,
        mask: Option<Resource<Tensor>>,
    ) -> WResult<Resource<Tensor>> {
        let (x, m) = (self.get(&x)?, self.opt(&mask)?);
        self.run("mean", x.len() as u64, move |t| {
            t.mean(&x, axis, m.as_ref())
        })
        .await
    }

    async fn l2_normalize(
        &mut self,
        x: Resource<Tensor>,
        axis: i32,
        eps: f32,
    ) -> WResult<Resource<Tensor>> {
        let x = self.get(&x)?;
        self.run("l2-normalize", x.len() as u64 * 2, move |t| {
            t.l2_normalize(&x, axis, eps)
        })
        .await
    }

    async fn cast(
        &mut self,
        x: Resource<Tensor>,
        dtype: types::Dtype,
    ) -> WResult<Resource<Tensor>> {
        let x = self.get(&x)?;
        self.run("cast", x.len() as u64, move |t| t.cast(&x, dtype.into()))
            .await
    }
}

impl From<MetaValue> for weights::MetadataValue {
    fn from(v: MetaValue) -> Self {
        match v {
            MetaValue::Text(s) => weights::MetadataValue::Text(s),
            MetaValue::Integer(i) => weights::MetadataValue::Integer(i),
            MetaValue::Float(f) => weights::MetadataValue::Float(f),
            MetaValue::Boolean(b) => weights::MetadataValue::Boolean(b),
            MetaValue::TextList(l) => weights::MetadataValue::TextList(l),
            MetaValue::IntegerList(l) => weights::MetadataValue::IntegerList(l),
            MetaValue::FloatList(l) => weights::MetadataValue::FloatList(l),
        }
    }
}

impl weights::Host for TensorView<'_> {}

impl weights::HostWeights for TensorView<'_> {
    async fn open(&mut self, name: String) -> WResult<Resource<WeightsHandle>> {
        match self.ctx.weights().get(&name) {
            Some(w) => Ok(Ok(self.table.push(WeightsHandle(w.clone()))?)),
            None => Ok(Err(types::Error::NotGranted(format!(
                "weights `{name}` are not granted to this deployment"
            )))),
        }
    }

    async fn tensors(
        &mut self,
        w: Resource<WeightsHandle>,
    ) -> wasmtime::Result<Vec<weights::TensorInfo>> {
        let w = self.table.get(&w)?.0.clone();
        Ok(w.names
            .iter()
            .filter_map(|n| w.get(n).map(|t| (n, t)))
            .map(|(n, t)| weights::TensorInfo {
                name: n.clone(),
                shape: wit_shape(t.shape()),
                dtype: t.dtype().into(),
            })
            .collect())
    }

    async fn get(&mut self, w: Resource<WeightsHandle>, name: String) -> WResult<Resource<Tensor>> {
        let started = Instant::now();
        let w = self.table.get(&w)?.0.clone();
        self.ctx.usage.call(started);
        match w.get(&name) {
            Some(t) => Ok(Ok(self.table.push(t.clone())?)),
            None => Ok(Err(types::Error::NotFound(format!(
                "no tensor `{name}` in {}",
                w.path.file_name().unwrap_or_default().to_string_lossy()
            )))),
        }
    }

    async fn metadata_keys(&mut self, w: Resource<WeightsHandle>) -> wasmtime::Result<Vec<String>> {
        Ok(self
            .table
            .get(&w)?
            .0
            .metadata
            .iter()
            .map(|(k, _)| k.clone())
            .collect())
    }

    async fn metadata(
        &mut self,
        w: Resource<WeightsHandle>,
        key: String,
    ) -> wasmtime::Result<Option<weights::MetadataValue>> {
        let w = self.table.get(&w)?;
        Ok(w.0
            .metadata
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.clone().into()))
    }

    async fn drop(&mut self, w: Resource<WeightsHandle>) -> wasmtime::Result<()> {
        self.table.delete(w)?;
        Ok(())
    }
}

/// `tensor.from-bytes` reading the guest's bytes where they lie in its
/// linear memory, rather than from a host copy lifted first (a 64 MiB
/// upload would otherwise pay for a fresh 64 MiB allocation and copy).
/// [`super::add_to_linker`] installs it over the generated binding.
pub(super) fn from_guest_bytes<T: super::TensorStateView + 'static>(
    mut store: wasmtime::StoreContextMut<'_, T>,
    (data, shape, dtype): (WasmList<u8>, Vec<u32>, types::Dtype),
) -> wasmtime::Result<(Result<Resource<Tensor>, types::Error>,)> {
    let started = Instant::now();
    let tensors = store.data_mut().tensor().ctx.tensors.clone();
    let r = tensors.from_bytes(data.as_le_slice(store.as_context()), &shape, dtype.into());
    Ok((store.data_mut().tensor().put_timed(started, r)?,))
}
