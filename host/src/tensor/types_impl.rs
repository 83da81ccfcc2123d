//! The `wasi:tensor` host traits, implemented over the validated op layer.

use super::TensorView;
use super::backend::{BinaryOp, NormKind, RopeLayout as Layout, UnaryOp};
use super::bindings::wasi::tensor::{ops, types, weights};
use super::cpu::CpuData;
use super::types::{DType, TResult, Tensor, TensorError};
use super::weights::{MetaValue, WeightsHandle};
use wasmtime::component::Resource;

type WResult<T> = wasmtime::Result<Result<T, types::Error>>;

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
    fn get(&self, r: &Resource<Tensor>) -> wasmtime::Result<Tensor> {
        Ok(self.table.get(r)?.clone())
    }

    /// Stores an op's result as a new handle; errors become the WIT variant.
    fn put(&mut self, r: TResult<Tensor>) -> WResult<Resource<Tensor>> {
        match r {
            Ok(t) => Ok(Ok(self.table.push(t)?)),
            Err(e) => Ok(Err(e.into())),
        }
    }

    fn unary(&mut self, op: UnaryOp, x: Resource<Tensor>) -> WResult<Resource<Tensor>> {
        let x = self.get(&x)?;
        let r = self.ctx.shared.tensors.unary(op, &x);
        self.put(r)
    }

    fn binary(
        &mut self,
        op: BinaryOp,
        a: Resource<Tensor>,
        b: Resource<Tensor>,
    ) -> WResult<Resource<Tensor>> {
        let (a, b) = (self.get(&a)?, self.get(&b)?);
        let r = self.ctx.shared.tensors.binary(op, &a, &b);
        self.put(r)
    }

    fn opt(&self, r: &Option<Resource<Tensor>>) -> wasmtime::Result<Option<Tensor>> {
        r.as_ref().map(|r| self.get(r)).transpose()
    }
}

impl types::Host for TensorView<'_> {}

impl types::HostTensor for TensorView<'_> {
    fn from_bytes(
        &mut self,
        data: Vec<u8>,
        shape: Vec<u32>,
        dtype: types::Dtype,
    ) -> WResult<Resource<Tensor>> {
        let r = self
            .ctx
            .shared
            .tensors
            .from_bytes(&data, &shape, dtype.into());
        self.put(r)
    }

    fn from_f32(&mut self, data: Vec<f32>, shape: Vec<u32>) -> WResult<Resource<Tensor>> {
        let r = self
            .ctx
            .shared
            .tensors
            .from_data(CpuData::F32(data), &shape);
        self.put(r)
    }

    fn from_i64(&mut self, data: Vec<i64>, shape: Vec<u32>) -> WResult<Resource<Tensor>> {
        let r = self
            .ctx
            .shared
            .tensors
            .from_data(CpuData::I64(data), &shape);
        self.put(r)
    }

    fn full(
        &mut self,
        shape: Vec<u32>,
        dtype: types::Dtype,
        value: f64,
    ) -> WResult<Resource<Tensor>> {
        let r = self.ctx.shared.tensors.full(&shape, dtype.into(), value);
        self.put(r)
    }

    fn shape(&mut self, x: Resource<Tensor>) -> wasmtime::Result<Vec<u32>> {
        Ok(wit_shape(self.table.get(&x)?.shape()))
    }

    fn dtype(&mut self, x: Resource<Tensor>) -> wasmtime::Result<types::Dtype> {
        Ok(self.table.get(&x)?.dtype().into())
    }

    fn element_count(&mut self, x: Resource<Tensor>) -> wasmtime::Result<u64> {
        Ok(self.table.get(&x)?.len() as u64)
    }

    fn to_bytes(&mut self, x: Resource<Tensor>) -> WResult<Vec<u8>> {
        let x = self.get(&x)?;
        Ok(self
            .ctx
            .shared
            .tensors
            .read(&x)
            .map(|d| d.to_le_bytes())
            .map_err(Into::into))
    }

    fn to_f32(&mut self, x: Resource<Tensor>) -> WResult<Vec<f32>> {
        let x = self.get(&x)?;
        Ok(self
            .ctx
            .shared
            .tensors
            .read(&x)
            .map(|d| d.as_f32().into_owned())
            .map_err(Into::into))
    }

    fn drop(&mut self, x: Resource<Tensor>) -> wasmtime::Result<()> {
        self.table.delete(x)?;
        Ok(())
    }
}

impl ops::Host for TensorView<'_> {
    fn matmul(
        &mut self,
        a: Resource<Tensor>,
        b: Resource<Tensor>,
        ta: bool,
        tb: bool,
    ) -> WResult<Resource<Tensor>> {
        let (a, b) = (self.get(&a)?, self.get(&b)?);
        let r = self.ctx.shared.tensors.matmul(&a, &b, ta, tb);
        self.put(r)
    }

    fn add(&mut self, a: Resource<Tensor>, b: Resource<Tensor>) -> WResult<Resource<Tensor>> {
        self.binary(BinaryOp::Add, a, b)
    }

    fn sub(&mut self, a: Resource<Tensor>, b: Resource<Tensor>) -> WResult<Resource<Tensor>> {
        self.binary(BinaryOp::Sub, a, b)
    }

    fn mul(&mut self, a: Resource<Tensor>, b: Resource<Tensor>) -> WResult<Resource<Tensor>> {
        self.binary(BinaryOp::Mul, a, b)
    }

    fn div(&mut self, a: Resource<Tensor>, b: Resource<Tensor>) -> WResult<Resource<Tensor>> {
        self.binary(BinaryOp::Div, a, b)
    }

    fn scale(&mut self, x: Resource<Tensor>, factor: f32) -> WResult<Resource<Tensor>> {
        self.unary(UnaryOp::Scale(factor), x)
    }

    fn gelu(&mut self, x: Resource<Tensor>) -> WResult<Resource<Tensor>> {
        self.unary(UnaryOp::Gelu, x)
    }

    fn gelu_tanh(&mut self, x: Resource<Tensor>) -> WResult<Resource<Tensor>> {
        self.unary(UnaryOp::GeluTanh, x)
    }

    fn silu(&mut self, x: Resource<Tensor>) -> WResult<Resource<Tensor>> {
        self.unary(UnaryOp::Silu, x)
    }

    fn relu(&mut self, x: Resource<Tensor>) -> WResult<Resource<Tensor>> {
        self.unary(UnaryOp::Relu, x)
    }

    fn tanh(&mut self, x: Resource<Tensor>) -> WResult<Resource<Tensor>> {
        self.unary(UnaryOp::Tanh, x)
    }

    fn exp(&mut self, x: Resource<Tensor>) -> WResult<Resource<Tensor>> {
        self.unary(UnaryOp::Exp, x)
    }

    fn softmax(
        &mut self,
        x: Resource<Tensor>,
        axis: i32,
        causal: bool,
    ) -> WResult<Resource<Tensor>> {
        let x = self.get(&x)?;
        let r = self.ctx.shared.tensors.softmax(&x, axis, causal);
        self.put(r)
    }

    fn layer_norm(
        &mut self,
        x: Resource<Tensor>,
        w: Option<Resource<Tensor>>,
        b: Option<Resource<Tensor>>,
        eps: f32,
    ) -> WResult<Resource<Tensor>> {
        let (x, w, b) = (self.get(&x)?, self.opt(&w)?, self.opt(&b)?);
        let r = self
            .ctx
            .shared
            .tensors
            .norm(NormKind::Layer, &x, w.as_ref(), b.as_ref(), eps);
        self.put(r)
    }

    fn rms_norm(
        &mut self,
        x: Resource<Tensor>,
        w: Option<Resource<Tensor>>,
        eps: f32,
    ) -> WResult<Resource<Tensor>> {
        let (x, w) = (self.get(&x)?, self.opt(&w)?);
        let r = self
            .ctx
            .shared
            .tensors
            .norm(NormKind::Rms, &x, w.as_ref(), None, eps);
        self.put(r)
    }

    fn attention(
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
        let r = self
            .ctx
            .shared
            .tensors
            .attention(&q, &k, &v, m.as_ref(), scale, causal);
        self.put(r)
    }

    fn embedding(
        &mut self,
        table: Resource<Tensor>,
        ids: Resource<Tensor>,
    ) -> WResult<Resource<Tensor>> {
        let (t, i) = (self.get(&table)?, self.get(&ids)?);
        let r = self.ctx.shared.tensors.embedding(&t, &i);
        self.put(r)
    }

    fn reshape(&mut self, x: Resource<Tensor>, shape: Vec<u32>) -> WResult<Resource<Tensor>> {
        let x = self.get(&x)?;
        let r = self.ctx.shared.tensors.reshape(&x, &shape);
        self.put(r)
    }

    fn permute(&mut self, x: Resource<Tensor>, dims: Vec<u32>) -> WResult<Resource<Tensor>> {
        let x = self.get(&x)?;
        let r = self.ctx.shared.tensors.permute(&x, &dims);
        self.put(r)
    }

    fn transpose(&mut self, x: Resource<Tensor>, a0: i32, a1: i32) -> WResult<Resource<Tensor>> {
        let x = self.get(&x)?;
        let r = self.ctx.shared.tensors.transpose(&x, a0, a1);
        self.put(r)
    }

    fn narrow(
        &mut self,
        x: Resource<Tensor>,
        axis: i32,
        start: u32,
        length: u32,
    ) -> WResult<Resource<Tensor>> {
        let x = self.get(&x)?;
        let r = self.ctx.shared.tensors.narrow(&x, axis, start, length);
        self.put(r)
    }

    fn concat(&mut self, xs: Vec<Resource<Tensor>>, axis: i32) -> WResult<Resource<Tensor>> {
        let xs = xs
            .iter()
            .map(|x| self.get(x))
            .collect::<wasmtime::Result<Vec<_>>>()?;
        let refs: Vec<&Tensor> = xs.iter().collect();
        let r = self.ctx.shared.tensors.concat(&refs, axis);
        self.put(r)
    }

    fn rope(
        &mut self,
        x: Resource<Tensor>,
        offset: u32,
        theta: f32,
        layout: ops::RopeLayout,
    ) -> WResult<Resource<Tensor>> {
        let x = self.get(&x)?;
        let layout = match layout {
            ops::RopeLayout::Interleaved => Layout::Interleaved,
            ops::RopeLayout::HalfSplit => Layout::HalfSplit,
        };
        let r = self.ctx.shared.tensors.rope(&x, offset, theta, layout);
        self.put(r)
    }

    fn argmax(&mut self, x: Resource<Tensor>, axis: i32) -> WResult<Resource<Tensor>> {
        let x = self.get(&x)?;
        let r = self.ctx.shared.tensors.argmax(&x, axis);
        self.put(r)
    }

    fn top_k(
        &mut self,
        x: Resource<Tensor>,
        k: u32,
    ) -> WResult<(Resource<Tensor>, Resource<Tensor>)> {
        let x = self.get(&x)?;
        match self.ctx.shared.tensors.top_k(&x, k) {
            Ok((v, i)) => Ok(Ok((self.table.push(v)?, self.table.push(i)?))),
            Err(e) => Ok(Err(e.into())),
        }
    }

    fn mean(
        &mut self,
        x: Resource<Tensor>,
        axis: i32,
        mask: Option<Resource<Tensor>>,
    ) -> WResult<Resource<Tensor>> {
        let (x, m) = (self.get(&x)?, self.opt(&mask)?);
        let r = self.ctx.shared.tensors.mean(&x, axis, m.as_ref());
        self.put(r)
    }

    fn l2_normalize(
        &mut self,
        x: Resource<Tensor>,
        axis: i32,
        eps: f32,
    ) -> WResult<Resource<Tensor>> {
        let x = self.get(&x)?;
        let r = self.ctx.shared.tensors.l2_normalize(&x, axis, eps);
        self.put(r)
    }

    fn cast(&mut self, x: Resource<Tensor>, dtype: types::Dtype) -> WResult<Resource<Tensor>> {
        let x = self.get(&x)?;
        let r = self.ctx.shared.tensors.cast(&x, dtype.into());
        self.put(r)
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
    fn open(&mut self, name: String) -> WResult<Resource<WeightsHandle>> {
        match self.ctx.shared.weights.get(&name) {
            Some(w) => Ok(Ok(self.table.push(WeightsHandle(w.clone()))?)),
            None => Ok(Err(types::Error::NotGranted(format!(
                "weights `{name}` are not granted to this deployment"
            )))),
        }
    }

    fn tensors(
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

    fn get(&mut self, w: Resource<WeightsHandle>, name: String) -> WResult<Resource<Tensor>> {
        let w = self.table.get(&w)?.0.clone();
        match w.get(&name) {
            Some(t) => Ok(Ok(self.table.push(t.clone())?)),
            None => Ok(Err(types::Error::NotFound(format!(
                "no tensor `{name}` in {}",
                w.path.file_name().unwrap_or_default().to_string_lossy()
            )))),
        }
    }

    fn metadata_keys(&mut self, w: Resource<WeightsHandle>) -> wasmtime::Result<Vec<String>> {
        Ok(self
            .table
            .get(&w)?
            .0
            .metadata
            .iter()
            .map(|(k, _)| k.clone())
            .collect())
    }

    fn metadata(
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

    fn drop(&mut self, w: Resource<WeightsHandle>) -> wasmtime::Result<()> {
        self.table.delete(w)?;
        Ok(())
    }
}
