//! The `wasi:tensor-fused@0.1.3` host traits, over the checks in `fused.rs`
//! (the same call path as every `wasi:tensor` op in `types_impl.rs`), and
//! recorded steps (`steps`, over `Backend::record`). Guests that import
//! 0.1.0 to 0.1.2 get this implementation too: the linker matches
//! semver-compatible versions, and each later version only adds functions.

use super::TensorView;
use super::backend::BinaryOp;
use super::bindings::fused::wasi::tensor_fused::{ops, steps};
use super::bindings::wasi::tensor::ops::RopeLayout;
use super::fused::{DecodeArgs, Operands};
use super::types::Tensor;
use super::types_impl::WResult;
use wasmtime::component::Resource;

type Three = (Resource<Tensor>, Resource<Tensor>, Resource<Tensor>);

/// The tensors behind [`Operands`], held while the op runs.
enum Owned {
    Separate(Tensor, Tensor, Tensor),
    Packed(Tensor),
}

impl Owned {
    fn operands(&self) -> Operands<'_> {
        match self {
            Owned::Separate(q, k, v) => Operands::Separate { q, k, v },
            Owned::Packed(qkv) => Operands::Packed(qkv),
        }
    }
}

impl ops::Host for TensorView<'_> {
    async fn decode_attention(
        &mut self,
        q: Resource<Tensor>,
        k: Resource<Tensor>,
        v: Resource<Tensor>,
        keys: Resource<Tensor>,
        values: Resource<Tensor>,
        positions: Vec<u32>,
        theta: f32,
        layout: RopeLayout,
        scale: f32,
    ) -> WResult<Three> {
        let operands = Owned::Separate(self.get(&q)?, self.get(&k)?, self.get(&v)?);
        let caches = (self.get(&keys)?, self.get(&values)?);
        let step = (positions, theta, layout, scale);
        self.decode(operands, caches, step, false).await
    }

    async fn decode_attention_qkv(
        &mut self,
        qkv: Resource<Tensor>,
        keys: Resource<Tensor>,
        values: Resource<Tensor>,
        positions: Vec<u32>,
        theta: f32,
        layout: RopeLayout,
        scale: f32,
    ) -> WResult<Three> {
        let operands = Owned::Packed(self.get(&qkv)?);
        let caches = (self.get(&keys)?, self.get(&values)?);
        let step = (positions, theta, layout, scale);
        self.decode(operands, caches, step, false).await
    }

    async fn decode_attention_update(
        &mut self,
        qkv: Resource<Tensor>,
        keys: Resource<Tensor>,
        values: Resource<Tensor>,
        positions: Vec<u32>,
        theta: f32,
        layout: RopeLayout,
        scale: f32,
    ) -> WResult<Three> {
        let operands = Owned::Packed(self.get(&qkv)?);
        // The guest gave the caches over: out of its table, so that an
        // unshared cache is held here alone and may be written in place.
        let caches = (self.table.delete(keys)?, self.table.delete(values)?);
        let step = (positions, theta, layout, scale);
        self.decode(operands, caches, step, true).await
    }

    async fn add_rms_norm(
        &mut self,
        x: Resource<Tensor>,
        y: Resource<Tensor>,
        weight: Option<Resource<Tensor>>,
        eps: f32,
    ) -> WResult<(Resource<Tensor>, Resource<Tensor>)> {
        let (x, y, weight) = (self.get(&x)?, self.get(&y)?, self.opt(&weight)?);
        let work = 2 * x.len() as u64;
        let r = self
            .compute("add-rms-norm", work, move |tensors| {
                tensors.add_rms_norm(&x, &y, weight.as_ref(), eps)
            })
            .await?;
        match r {
            Ok((s, n)) => Ok(Ok((self.table.push(s)?, self.table.push(n)?))),
            Err(e) => Ok(Err(e.into())),
        }
    }

    async fn swiglu(
        &mut self,
        gate: Resource<Tensor>,
        up: Resource<Tensor>,
    ) -> WResult<Resource<Tensor>> {
        self.binary(BinaryOp::Swiglu, gate, up).await
    }
}

impl steps::Host for TensorView<'_> {
    async fn record_step(&mut self, shape_key: u64) -> WResult<()> {
        let started = std::time::Instant::now();
        let r = self.ctx.tensors().backend().record(shape_key);
        self.ctx.usage.call(started);
        Ok(r.map_err(Into::into))
    }

    async fn run_step(&mut self) -> WResult<()> {
        let started = std::time::Instant::now();
        let r = self.ctx.tensors().backend().run_recorded();
        self.ctx.usage.call(started);
        Ok(r.map_err(Into::into))
    }
}

impl TensorView<'_> {
    /// `decode-attention` over `operands` (q, k, v, or one packed qkv);
    /// `owned`: the guest gave the caches over.
    async fn decode(
        &mut self,
        operands: Owned,
        (keys, values): (Tensor, Tensor),
        (positions, theta, layout, scale): (Vec<u32>, f32, RopeLayout, f32),
        owned: bool,
    ) -> WResult<Three> {
        // The caches are copied, and each row's query meets its keys and
        // values: about the caches' size plus 2·width·positions.
        let seen: u64 = positions.iter().map(|&p| u64::from(p) + 1).sum();
        let first = match &operands {
            Owned::Separate(q, ..) | Owned::Packed(q) => q,
        };
        let width = first.shape().get(1).copied().unwrap_or(0) as u64;
        let work = (2 * keys.len() as u64).saturating_add(seen.saturating_mul(2 * width));
        let r = self
            .compute("decode-attention", work, move |tensors| {
                tensors.decode_attention(&DecodeArgs {
                    operands: operands.operands(),
                    keys: &keys,
                    values: &values,
                    positions: &positions,
                    theta,
                    layout: layout.into(),
                    scale,
                    owned,
                })
            })
            .await?;
        match r {
            Ok((o, k, v)) => Ok(Ok((
                self.table.push(o)?,
                self.table.push(k)?,
                self.table.push(v)?,
            ))),
            Err(e) => Ok(Err(e.into())),
        }
    }
}
