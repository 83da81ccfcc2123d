//! `wasi:tensor-fused@0.1.0`'s checks: the fused ops validated once for
//! every backend, as `ops.rs` does for `wasi:tensor` (`swiglu` is a
//! [`BinaryOp`](super::backend::BinaryOp) there).

pub use super::backend::DecodeArgs;
use super::backend::DecodeAttention;
use super::error::{TResult, arg_err, shape_err};
use super::ops::{Tensors, float, same_dtype};
use super::types::Tensor;

/// The widest head `decode-attention` takes (on every backend: the GPU
/// kernel keeps a head's partial sums in shared memory).
pub const MAX_HEAD_DIM: usize = 1024;

impl Tensors {
    /// `decode-attention`: the attended values [rows, heads · dim] and the
    /// updated key and value caches.
    pub fn decode_attention(&self, a: &DecodeArgs<'_>) -> TResult<(Tensor, Tensor, Tensor)> {
        let plan = plan(a)?;
        let size = a.q.dtype().size() as u64;
        let cache = (plan.rows * plan.kv_heads * plan.capacity * plan.dim) as u64 * size;
        let out = self.quota().charge(a.q.len() as u64 * size)?;
        let keys = self.quota().charge(cache)?;
        let values = self.quota().charge(cache)?;
        let (o, k, v) = self.backend().decode_attention(&plan)?;
        let dtype = a.q.dtype();
        Ok((
            Tensor::new(a.q.shape().to_vec(), dtype, o, Some(out)),
            Tensor::new(a.keys.shape().to_vec(), dtype, k, Some(keys)),
            Tensor::new(a.values.shape().to_vec(), dtype, v, Some(values)),
        ))
    }
}

/// Checks `a`'s shapes, dtypes and positions.
fn plan<'a>(a: &'a DecodeArgs<'a>) -> TResult<DecodeAttention<'a>> {
    const OP: &str = "decode-attention";
    float(OP, a.q)?;
    for t in [a.k, a.v, a.keys, a.values] {
        same_dtype(OP, a.q, t)?;
    }
    let shapes = [
        a.q.shape(),
        a.k.shape(),
        a.v.shape(),
        a.keys.shape(),
        a.values.shape(),
    ];
    let bad = |m: &str| shape_err(format!("{OP}: {m}"), &shapes);
    let [q, k, v, keys, values] = shapes;
    if q.len() != 2 || k.len() != 2 || v.len() != 2 || keys.len() != 4 || keys != values {
        return Err(bad(
            "q, k, v must be [rows, heads·dim] and the caches one shape [rows, kv-heads, capacity, dim]",
        ));
    }
    let (rows, kv_heads, capacity, dim) = (keys[0], keys[1], keys[2], keys[3]);
    if dim == 0 || !dim.is_multiple_of(2) || kv_heads == 0 {
        return Err(bad(
            "the head width must be even and positive, with at least one key head",
        ));
    }
    if dim > MAX_HEAD_DIM {
        return Err(bad(&format!(
            "heads wider than {MAX_HEAD_DIM} are not supported"
        )));
    }
    if q[0] != rows || k[0] != rows || v[0] != rows {
        return Err(bad("q, k, v and the caches must have the same rows"));
    }
    if k[1] != kv_heads * dim || v[1] != kv_heads * dim {
        return Err(bad(
            "k and v must be [rows, kv-heads·dim] of the caches' heads and width",
        ));
    }
    if !q[1].is_multiple_of(kv_heads * dim) {
        return Err(bad(
            "q's width must be a multiple of kv-heads·dim (grouped-query heads)",
        ));
    }
    if a.positions.len() != rows {
        return Err(arg_err(format!(
            "{OP}: {} positions for {rows} rows",
            a.positions.len()
        )));
    }
    if let Some(p) = a.positions.iter().find(|&&p| p as usize >= capacity) {
        return Err(arg_err(format!(
            "{OP}: position {p} is past the caches' capacity {capacity}"
        )));
    }
    if !(a.theta > 0.0 && a.theta.is_finite() && a.scale.is_finite()) {
        return Err(arg_err(format!(
            "{OP}: theta must be positive and finite and scale finite (got {}, {})",
            a.theta, a.scale
        )));
    }
    Ok(DecodeAttention {
        args: a,
        rows,
        heads: q[1] / dim,
        kv_heads,
        capacity,
        dim,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::backend::{BinaryOp, RopeLayout};
    use crate::tensor::device::{Device, DeviceSpec};
    use crate::tensor::error::TensorError;
    use crate::tensor::quota::Quota;
    use crate::tensor::storage::CpuData;
    use prometheus_client::metrics::gauge::Gauge;
    use std::sync::Arc;

    fn cpu() -> Tensors {
        let quota = Arc::new(Quota::new(1 << 30, Gauge::default()));
        let placed = Device::cpu()
            .place("t", &DeviceSpec::Auto, 0, false)
            .unwrap();
        Tensors::new(placed.handle(0).clone(), quota)
    }

    /// Deterministic values in [-1, 1).
    fn noise(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn tensor(t: &Tensors, shape: &[u32], seed: u64) -> Tensor {
        let n = shape.iter().product::<u32>() as usize;
        t.from_data(CpuData::F32(noise(n, seed)), shape).unwrap()
    }

    fn floats(t: &Tensors, x: &Tensor) -> Vec<f32> {
        t.read(x).unwrap().as_f32().into_owned()
    }

    /// What `decode-attention` does, row by row with `wasi:tensor` ops.
    fn composed(t: &Tensors, a: &DecodeArgs<'_>, heads: u32, kv: u32, d: u32) -> Vec<f32> {
        let mut out = Vec::new();
        for (r, &p) in a.positions.iter().enumerate() {
            let row = |x: &Tensor, h: u32| {
                let x = t.narrow(x, 0, r as u32, 1).unwrap();
                let x = t.reshape(&x, &[1, h, 1, d]).unwrap();
                t.rope(&x, p, a.theta, a.layout).unwrap()
            };
            let (q, k) = (row(a.q, heads), row(a.k, kv));
            let v = t.narrow(a.v, 0, r as u32, 1).unwrap();
            let v = t.reshape(&v, &[1, kv, 1, d]).unwrap();
            let past = |c: &Tensor| {
                let c = t.narrow(c, 0, r as u32, 1).unwrap();
                t.narrow(&c, 2, 0, p).unwrap()
            };
            let keys = t.concat(&[&past(a.keys), &k], 2).unwrap();
            let values = t.concat(&[&past(a.values), &v], 2).unwrap();
            let o = t
                .attention(&q, &keys, &values, None, a.scale, false)
                .unwrap();
            out.extend(floats(t, &o));
        }
        out
    }

    #[test]
    fn decode_attention_is_the_ops_it_fuses() {
        let t = cpu();
        let (rows, heads, kv, cap, d) = (3u32, 6u32, 2u32, 9u32, 8u32);
        for layout in [RopeLayout::Interleaved, RopeLayout::HalfSplit] {
            let q = tensor(&t, &[rows, heads * d], 1);
            let k = tensor(&t, &[rows, kv * d], 2);
            let v = tensor(&t, &[rows, kv * d], 3);
            let keys = tensor(&t, &[rows, kv, cap, d], 4);
            let values = tensor(&t, &[rows, kv, cap, d], 5);
            let args = DecodeArgs {
                q: &q,
                k: &k,
                v: &v,
                keys: &keys,
                values: &values,
                positions: &[0, 4, 8],
                theta: 10_000.0,
                layout,
                scale: 0.35,
            };
            let (o, nk, nv) = t.decode_attention(&args).unwrap();
            assert_eq!(o.shape(), q.shape());
            let want = composed(&t, &args, heads, kv, d);
            for (g, w) in floats(&t, &o).iter().zip(&want) {
                assert!((g - w).abs() < 1e-5, "{g} vs {w} ({layout:?})");
            }
            // The caches: the input everywhere but each row's position.
            let (old_k, new_k) = (floats(&t, &keys), floats(&t, &nk));
            let (old_v, new_v, vv) = (floats(&t, &values), floats(&t, &nv), floats(&t, &v));
            let per_row = (kv * cap * d) as usize;
            for i in 0..old_k.len() {
                let (r, p) = (i / per_row, i / d as usize % cap as usize);
                if p == args.positions[r] as usize {
                    let h = i % per_row / (cap * d) as usize;
                    let at = (r * kv as usize + h) * d as usize + i % d as usize;
                    assert_eq!(new_v[i], vv[at]);
                } else {
                    assert_eq!((new_k[i], new_v[i]), (old_k[i], old_v[i]));
                }
            }
        }
    }

    #[test]
    fn decode_attention_refuses_bad_arguments() {
        let t = cpu();
        let q = tensor(&t, &[2, 16], 1);
        let k = tensor(&t, &[2, 8], 2);
        let cache = tensor(&t, &[2, 1, 4, 8], 3);
        let odd = tensor(&t, &[2, 1, 4, 7], 3);
        let call = |q: &Tensor, keys: &Tensor, positions: &[u32]| {
            t.decode_attention(&DecodeArgs {
                q,
                k: &k,
                v: &k,
                keys,
                values: keys,
                positions,
                theta: 10_000.0,
                layout: RopeLayout::Interleaved,
                scale: 1.0,
            })
            .map(|_| ())
            .unwrap_err()
            .to_string()
        };
        assert!(call(&q, &cache, &[1, 4]).contains("position 4 is past the caches' capacity 4"));
        assert!(call(&q, &cache, &[1]).contains("1 positions for 2 rows"));
        assert!(call(&k, &odd, &[0, 0]).contains("even"));
        let wide = tensor(&t, &[2, 1, 1, 1026], 3);
        let wide_err = t
            .decode_attention(&DecodeArgs {
                q: &tensor(&t, &[2, 1026], 1),
                k: &tensor(&t, &[2, 1026], 2),
                v: &tensor(&t, &[2, 1026], 2),
                keys: &wide,
                values: &wide,
                positions: &[0, 0],
                theta: 10_000.0,
                layout: RopeLayout::Interleaved,
                scale: 1.0,
            })
            .map(|_| ())
            .unwrap_err();
        assert!(
            wide_err.to_string().contains("wider than 1024"),
            "{wide_err}"
        );
        let bad_q = tensor(&t, &[2, 12], 1);
        assert!(call(&bad_q, &cache, &[0, 0]).contains("multiple of kv-heads"));
        let ints = t.from_data(CpuData::I64(vec![0; 32]), &[2, 16]).unwrap();
        assert!(matches!(
            t.decode_attention(&DecodeArgs {
                q: &ints,
                k: &k,
                v: &k,
                keys: &cache,
                values: &cache,
                positions: &[0, 0],
                theta: 1.0,
                layout: RopeLayout::Interleaved,
                scale: 1.0,
            }),
            Err(TensorError::DtypeMismatch { .. })
        ));
    }

    #[test]
    fn swiglu_is_silu_then_mul() {
        let t = cpu();
        let (g, u) = (tensor(&t, &[4, 40], 1), tensor(&t, &[4, 40], 2));
        let fused = t.binary(BinaryOp::Swiglu, &g, &u).unwrap();
        let silu = t.unary(crate::tensor::backend::UnaryOp::Silu, &g).unwrap();
        let composed = t.binary(BinaryOp::Mul, &silu, &u).unwrap();
        assert_eq!(floats(&t, &fused), floats(&t, &composed));
        let row = tensor(&t, &[40], 3);
        let err = t.binary(BinaryOp::Swiglu, &g, &row).unwrap_err();
        assert!(err.to_string().contains("one shape"), "{err}");
        let ints = t.from_data(CpuData::I64(vec![1; 160]), &[4, 40]).unwrap();
        assert!(t.binary(BinaryOp::Swiglu, &ints, &ints).is_err());
    }
}
