//! The CPU backend: host memory, `gemm` for products, rayon for large
//! elementwise work. f16/bf16 compute in f32 and round once at the end.

mod decode;
pub mod math;
pub mod matmul;
pub mod movement;
mod sgemm;
mod simd;
mod skinny;

use super::backend::{
    Backend, BinaryOp, DecodeAttention, MatmulPlan, NormKind, Operands, RopeLayout, UnaryOp,
};
use super::dtype::DType;
use super::error::{TResult, arg_err};
use super::storage::{CpuData, map_same};
use super::types::{Data, Tensor};
use std::borrow::Cow;

/// The CPU backend.
#[derive(Debug, Default)]
pub struct CpuBackend;

/// The host elements of `x` (a CPU tensor: a tenant's tensors all come
/// from its one backend, and the GPU backend hands this one host copies).
fn host(x: &Tensor) -> &CpuData {
    match x.data() {
        Data::Cpu(d) => d,
        Data::Cuda(_) => panic!("the CPU backend was given a GPU tensor"),
    }
}

/// `x`'s elements as f32 (borrowed when f32).
fn floats(x: &Tensor) -> Cow<'_, [f32]> {
    host(x).as_f32()
}

/// f32 results stored as `x`'s dtype.
fn like(x: &Tensor, v: Vec<f32>) -> Data {
    Data::Cpu(CpuData::from_f32(v, x.dtype()))
}

/// Splits `shape` around `axis` into (outer, len, inner) element counts.
fn split(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (
        shape[..axis].iter().product(),
        shape[axis],
        shape[axis + 1..].iter().product(),
    )
}

fn last_dim(shape: &[usize]) -> usize {
    shape.last().copied().unwrap_or(1)
}

impl Backend for CpuBackend {
    fn name(&self) -> String {
        "cpu".into()
    }

    fn upload(&self, data: CpuData) -> TResult<Data> {
        Ok(Data::Cpu(data))
    }

    fn download(&self, x: &Tensor) -> TResult<CpuData> {
        Ok(host(x).clone())
    }

    fn matmul(&self, a: &Tensor, b: &Tensor, plan: &MatmulPlan) -> TResult<Data> {
        let out = matmul::matmul(&floats(a), a.shape(), &floats(b), b.shape(), plan);
        Ok(like(a, out))
    }

    fn binary(&self, op: BinaryOp, a: &Tensor, b: &Tensor, out: &[usize]) -> TResult<Data> {
        let (sa, sb) = (a.shape(), b.shape());
        if op == BinaryOp::Div && !a.dtype().is_float() {
            let zero = match host(b) {
                CpuData::I32(v) => v.contains(&0),
                CpuData::I64(v) => v.contains(&0),
                CpuData::U8(v) => v.contains(&0),
                _ => false,
            };
            if zero {
                return Err(arg_err("integer division by zero"));
            }
        }
        let data = match (host(a), host(b)) {
            (CpuData::I32(x), CpuData::I32(y)) => {
                CpuData::I32(math::binary(x, sa, y, sb, out, math::i32_binary(op)))
            }
            (CpuData::I64(x), CpuData::I64(y)) => {
                CpuData::I64(math::binary(x, sa, y, sb, out, math::i64_binary(op)))
            }
            (CpuData::U8(x), CpuData::U8(y)) => {
                CpuData::U8(math::binary(x, sa, y, sb, out, math::u8_binary(op)))
            }
            (CpuData::F32(x), CpuData::F32(y)) => {
                CpuData::F32(math::binary_f32(x, sa, y, sb, out, op))
            }
            (x, y) => CpuData::from_f32(
                math::binary_f32(&x.as_f32(), sa, &y.as_f32(), sb, out, op),
                a.dtype(),
            ),
        };
        Ok(Data::Cpu(data))
    }

    fn unary(&self, op: UnaryOp, x: &Tensor) -> TResult<Data> {
        Ok(like(x, math::unary(&floats(x), op)))
    }

    fn softmax(&self, x: &Tensor, axis: usize, causal: bool) -> TResult<Data> {
        let shape = x.shape();
        let (_, len, inner) = split(shape, axis);
        let v = floats(x);
        let out = if inner == 1 {
            let q = causal.then(|| shape[shape.len() - 2]);
            math::softmax_last(&v, len, q)
        } else {
            math::softmax_strided(&v, len, inner)
        };
        Ok(like(x, out))
    }

    fn norm(
        &self,
        kind: NormKind,
        x: &Tensor,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f32,
    ) -> TResult<Data> {
        let w = weight.map(floats);
        let b = bias.map(floats);
        let out = math::norm(
            &floats(x),
            last_dim(x.shape()),
            kind,
            w.as_deref(),
            b.as_deref(),
            eps,
        );
        Ok(like(x, out))
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
        let (qs, ks, vs) = (q.shape(), k.shape(), v.shape());
        let dims = matmul::AttentionDims {
            b: qs[0],
            hq: qs[1],
            hk: ks[1],
            sq: qs[2],
            sk: ks[2],
            d: qs[3],
            dv: vs[3],
        };
        let full = [dims.b, dims.hq, dims.sq, dims.sk];
        let m = mask.map(floats);
        let m_strides = mask.map(|t| {
            let s = crate::tensor::layout::broadcast_strides(t.shape(), &full);
            [s[0], s[1], s[2], s[3]]
        });
        let out = matmul::attention(
            &floats(q),
            &floats(k),
            &floats(v),
            m.as_deref().zip(m_strides),
            &dims,
            scale,
            causal,
        );
        Ok(like(q, out))
    }

    fn embedding(&self, table: &Tensor, ids: &Tensor) -> TResult<Data> {
        let rows = table.shape()[0];
        let dim = table.shape()[1];
        let ids = host(ids).as_i64();
        if let Some(bad) = ids.iter().find(|&&i| i < 0 || i as u64 >= rows as u64) {
            return Err(arg_err(format!(
                "embedding id {bad} out of range for a table of {rows} rows"
            )));
        }
        Ok(Data::Cpu(
            map_same!(host(table), v => movement::gather(v, dim, &ids)),
        ))
    }

    fn permute(&self, x: &Tensor, dims: &[usize]) -> TResult<Data> {
        let shape = x.shape();
        Ok(Data::Cpu(
            map_same!(host(x), v => movement::permute(v, shape, dims)),
        ))
    }

    fn narrow(&self, x: &Tensor, axis: usize, start: usize, len: usize) -> TResult<Data> {
        let shape = x.shape();
        Ok(Data::Cpu(
            map_same!(host(x), v => movement::narrow(v, shape, axis, start, len)),
        ))
    }

    fn concat(&self, xs: &[&Tensor], axis: usize) -> TResult<Data> {
        macro_rules! join {
            ($variant:ident) => {{
                let parts: Vec<_> = xs
                    .iter()
                    .map(|t| match host(t) {
                        CpuData::$variant(v) => (v.as_slice(), t.shape()),
                        _ => unreachable!("dtypes checked by the op layer"),
                    })
                    .collect();
                CpuData::$variant(movement::concat(&parts, axis))
            }};
        }
        let data = match xs[0].dtype() {
            DType::F32 => join!(F32),
            DType::F16 => join!(F16),
            DType::BF16 => join!(BF16),
            DType::I32 => join!(I32),
            DType::I64 => join!(I64),
            DType::U8 => join!(U8),
        };
        Ok(Data::Cpu(data))
    }

    fn rope(&self, x: &Tensor, offset: usize, theta: f32, layout: RopeLayout) -> TResult<Data> {
        let shape = x.shape();
        let (seq, dim) = (shape[shape.len() - 2], shape[shape.len() - 1]);
        Ok(like(
            x,
            math::rope(&floats(x), seq, dim, offset, theta, layout),
        ))
    }

    fn argmax(&self, x: &Tensor, axis: usize) -> TResult<Data> {
        let (o, l, i) = split(x.shape(), axis);
        let out = match host(x) {
            CpuData::I32(v) => math::argmax(v, o, l, i),
            CpuData::I64(v) => math::argmax(v, o, l, i),
            CpuData::U8(v) => math::argmax(v, o, l, i),
            other => math::argmax(&other.as_f32(), o, l, i),
        };
        Ok(Data::Cpu(CpuData::I64(out)))
    }

    fn top_k(&self, x: &Tensor, k: usize) -> TResult<(Data, Data)> {
        let len = last_dim(x.shape());
        let (values, indices) = match host(x) {
            CpuData::I32(v) => {
                let (a, b) = math::top_k(v, len, k);
                (CpuData::I32(a), b)
            }
            CpuData::I64(v) => {
                let (a, b) = math::top_k(v, len, k);
                (CpuData::I64(a), b)
            }
            CpuData::U8(v) => {
                let (a, b) = math::top_k(v, len, k);
                (CpuData::U8(a), b)
            }
            other => {
                let (a, b) = math::top_k(&other.as_f32(), len, k);
                (CpuData::from_f32(a, x.dtype()), b)
            }
        };
        Ok((Data::Cpu(values), Data::Cpu(CpuData::I64(indices))))
    }

    fn mean(&self, x: &Tensor, axis: usize, mask: Option<&Tensor>) -> TResult<Data> {
        let (o, l, i) = split(x.shape(), axis);
        let m = mask.map(floats);
        Ok(like(x, math::mean(&floats(x), o, l, i, m.as_deref())))
    }

    fn l2_normalize(&self, x: &Tensor, axis: usize, eps: f32) -> TResult<Data> {
        let (o, l, i) = split(x.shape(), axis);
        Ok(like(x, math::l2_normalize(&floats(x), o, l, i, eps)))
    }

    fn cast(&self, x: &Tensor, dtype: DType) -> TResult<Data> {
        Ok(Data::Cpu(host(x).cast(dtype)))
    }

    fn decode_attention(&self, a: &DecodeAttention<'_>) -> TResult<(Data, Option<(Data, Data)>)> {
        // Each operand's tensor converted once (the packed one is all three).
        let converted = match a.args.operands {
            Operands::Separate { q, k, v } => vec![floats(q), floats(k), floats(v)],
            Operands::Packed(qkv) => vec![floats(qkv)],
        };
        let operand = |i: usize| &*converted[i.min(converted.len() - 1)];
        let (out, keys, values) = decode::decode_attention(
            a,
            [operand(0), operand(1), operand(2)],
            &floats(a.args.keys),
            &floats(a.args.values),
        );
        // Never `in_place` here (`writable` is false): the caches are copies.
        let like = |x| like(a.q.tensor, x);
        Ok((like(out), Some((like(keys), like(values)))))
    }
}
