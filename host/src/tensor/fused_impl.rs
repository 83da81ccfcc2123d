//! The `wasi:tensor-fused` host trait, over the checks in `fused.rs` (the
//! same call path as every `wasi:tensor` op in `types_impl.rs`).

use super::TensorView;
use super::backend::BinaryOp;
use super::bindings::fused::wasi::tensor_fused::ops;
use super::bindings::wasi::tensor::ops::RopeLayout;
use super::fused::DecodeArgs;
use super::types::Tensor;
use super::types_impl::WResult;
use wasmtime::component::Resource;

type Three = (Resource<Tensor>, Resource<Tensor>, Resource<Tensor>);

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
        let (q, k, v) = (self.get(&q)?, self.get(&k)?, self.get(&v)?);
        let (keys, values) = (self.get(&keys)?, self.get(&values)?);
        // The caches are copied, and each row's query meets its keys and
        // values: about the caches' size plus 2·q-elements·positions.
        let seen: u64 = positions.iter().map(|&p| u64::from(p) + 1).sum();
        let width = q.shape().get(1).copied().unwrap_or(0) as u64;
        let work = (2 * keys.len() as u64).saturating_add(seen.saturating_mul(2 * width));
        let r = self
            .compute("decode-attention", work, move |tensors| {
                tensors.decode_attention(&DecodeArgs {
                    q: &q,
                    k: &k,
                    v: &v,
                    keys: &keys,
                    values: &values,
                    positions: &positions,
                    theta,
                    layout: layout.into(),
                    scale,
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

    async fn swiglu(
        &mut self,
        gate: Resource<Tensor>,
        up: Resource<Tensor>,
    ) -> WResult<Resource<Tensor>> {
        self.binary(BinaryOp::Swiglu, gate, up).await
    }
}
