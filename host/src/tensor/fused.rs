//! `wasi:tensor-fused@0.1.1`'s checks: the fused ops validated once for
//! every backend, as `ops.rs` does for `wasi:tensor` (`swiglu` is a
//! [`BinaryOp`](super::backend::BinaryOp) there).

use super::backend::{Columns, DecodeAttention};
pub use super::backend::{DecodeArgs, Operands};
use super::error::{TResult, TensorError, arg_err, shape_err};
use super::ops::{Tensors, float, same_dtype};
use super::types::Tensor;

/// The widest head `decode-attention` takes (on every backend: the GPU
/// kernel keeps a head's partial sums in shared memory).
pub const MAX_HEAD_DIM: usize = 1024;

impl Tensors {
    /// `decode-attention`, `decode-attention-qkv` and
    /// `decode-attention-update`: the attended values [rows, heads · dim]
    /// and the updated key and value caches. Caches the guest gave over
    /// (`a.owned`) that nothing else shares are written where they are when
    /// the backend can ([`Backend::writable`](super::backend::Backend::writable)):
    /// no copy, no new charge; otherwise they are copied and charged.
    pub fn decode_attention(&self, a: &DecodeArgs<'_>) -> TResult<(Tensor, Tensor, Tensor)> {
        let mut plan = plan(a)?;
        let dtype = plan.q.tensor.dtype();
        let size = dtype.size() as u64;
        let width = plan.heads * plan.dim;
        let out = self.quota().charge((plan.rows * width) as u64 * size)?;
        let backend = self.backend();
        plan.in_place = a.owned
            && [a.keys, a.values]
                .iter()
                .all(|c| c.unshared() && backend.writable(c));
        let charges = match plan.in_place {
            true => None,
            false => {
                let cache = (plan.rows * plan.kv_heads * plan.capacity * plan.dim) as u64 * size;
                Some((self.quota().charge(cache)?, self.quota().charge(cache)?))
            }
        };
        let (o, caches) = backend.decode_attention(&plan)?;
        let (keys, values) = match (caches, charges) {
            (None, None) => (a.keys.clone(), a.values.clone()),
            (Some((k, v)), Some((ck, cv))) => (
                Tensor::new(a.keys.shape().to_vec(), dtype, k, Some(ck)),
                Tensor::new(a.values.shape().to_vec(), dtype, v, Some(cv)),
            ),
            _ => {
                return Err(TensorError::Backend(
                    "decode-attention: the backend did not write the caches as asked".into(),
                ));
            }
        };
        Ok((
            Tensor::new(vec![plan.rows, width], dtype, o, Some(out)),
            keys,
            values,
        ))
    }

    /// `add-rms-norm`: `x + y` and its RMS norm over the last axis.
    pub fn add_rms_norm(
        &self,
        x: &Tensor,
        y: &Tensor,
        weight: Option<&Tensor>,
        eps: f32,
    ) -> TResult<(Tensor, Tensor)> {
        const OP: &str = "add-rms-norm";
        float(OP, x)?;
        same_dtype(OP, x, y)?;
        let dim = x.shape().last().copied();
        if x.shape() != y.shape() || dim.is_none() {
            return Err(shape_err(
                format!("{OP}: x and y must have one shape of at least one axis"),
                &[x.shape(), y.shape()],
            ));
        }
        if let Some(w) = weight {
            float(OP, w)?;
            if w.shape() != [dim.unwrap_or(0)] {
                return Err(shape_err(
                    format!("{OP}: the weight must be [last axis of x]"),
                    &[x.shape(), w.shape()],
                ));
            }
        }
        if eps.is_nan() || eps < 0.0 {
            return Err(arg_err(format!("{OP}: eps must be ≥ 0, got {eps}")));
        }
        let bytes = x.byte_size();
        let sum = self.quota().charge(bytes)?;
        let normed = self.quota().charge(bytes)?;
        let (s, n) = self.backend().add_rms_norm(x, y, weight, eps)?;
        let (shape, dtype) = (x.shape().to_vec(), x.dtype());
        Ok((
            Tensor::new(shape.clone(), dtype, s, Some(sum)),
            Tensor::new(shape, dtype, n, Some(normed)),
        ))
    }
}

/// Checks `a`'s shapes, dtypes and positions.
fn plan<'a>(a: &'a DecodeArgs<'a>) -> TResult<DecodeAttention<'a>> {
    const OP: &str = "decode-attention";
    let inputs: Vec<&Tensor> = match a.operands {
        Operands::Separate { q, k, v } => vec![q, k, v],
        Operands::Packed(qkv) => vec![qkv],
    };
    float(OP, inputs[0])?;
    for t in inputs.iter().skip(1).chain([&a.keys, &a.values]) {
        same_dtype(OP, inputs[0], t)?;
    }
    let mut shapes: Vec<&[usize]> = inputs.iter().map(|t| t.shape()).collect();
    shapes.extend([a.keys.shape(), a.values.shape()]);
    let bad = |m: &str| shape_err(format!("{OP}: {m}"), &shapes);
    let (keys, values) = (a.keys.shape(), a.values.shape());
    if inputs.iter().any(|t| t.shape().len() != 2) || keys.len() != 4 || keys != values {
        return Err(bad(match a.operands {
            Operands::Separate { .. } => {
                "q, k, v must be [rows, heads·dim] and the caches one shape [rows, kv-heads, capacity, dim]"
            }
            Operands::Packed(_) => {
                "qkv must be [rows, (heads + 2·kv-heads)·dim] and the caches one shape [rows, kv-heads, capacity, dim]"
            }
        }));
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
    if inputs.iter().any(|t| t.shape()[0] != rows) {
        return Err(bad("the new rows and the caches must have the same rows"));
    }
    let kv = kv_heads * dim;
    let (q, k, v, width) = match a.operands {
        Operands::Separate { q, k, v } => {
            if k.shape()[1] != kv || v.shape()[1] != kv {
                return Err(bad(
                    "k and v must be [rows, kv-heads·dim] of the caches' heads and width",
                ));
            }
            let at = |tensor| Columns { tensor, at: 0 };
            (at(q), at(k), at(v), q.shape()[1])
        }
        Operands::Packed(qkv) => {
            if qkv.shape()[1] <= 2 * kv {
                return Err(bad(
                    "qkv must be wider than the key and value heads (2·kv-heads·dim)",
                ));
            }
            let hq = qkv.shape()[1] - 2 * kv;
            let at = |at| Columns { tensor: qkv, at };
            (at(0), at(hq), at(hq + kv), hq)
        }
    };
    if !width.is_multiple_of(kv) {
        return Err(bad(
            "the queries' width must be a multiple of kv-heads·dim (grouped-query heads)",
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
        q,
        k,
        v,
        rows,
        heads: width / dim,
        kv_heads,
        capacity,
        dim,
        in_place: false,
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
        let Operands::Separate { q, k, v } = a.operands else {
            unreachable!("the reference takes separate operands")
        };
        let mut out = Vec::new();
        for (r, &p) in a.positions.iter().enumerate() {
            let row = |x: &Tensor, h: u32| {
                let x = t.narrow(x, 0, r as u32, 1).unwrap();
                let x = t.reshape(&x, &[1, h, 1, d]).unwrap();
                t.rope(&x, p, a.theta, a.layout).unwrap()
            };
            let (q, k) = (row(q, heads), row(k, kv));
            let v = t.narrow(v, 0, r as u32, 1).unwrap();
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
                operands: Operands::Separate {
                    q: &q,
                    k: &k,
                    v: &v,
                },
                keys: &keys,
                values: &values,
                positions: &[0, 4, 8],
                theta: 10_000.0,
                layout,
                scale: 0.35,
                owned: false,
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
                operands: Operands::Separate { q, k: &k, v: &k },
                keys,
                values: keys,
                positions,
                theta: 10_000.0,
                layout: RopeLayout::Interleaved,
                scale: 1.0,
                owned: false,
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
                operands: Operands::Separate {
                    q: &tensor(&t, &[2, 1026], 1),
                    k: &tensor(&t, &[2, 1026], 2),
                    v: &tensor(&t, &[2, 1026], 2),
                },
                keys: &wide,
                values: &wide,
                positions: &[0, 0],
                theta: 10_000.0,
                layout: RopeLayout::Interleaved,
                scale: 1.0,
                owned: false,
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
                operands: Operands::Separate {
                    q: &ints,
                    k: &k,
                    v: &k
                },
                keys: &cache,
                values: &cache,
                positions: &[0, 0],
                theta: 1.0,
                layout: RopeLayout::Interleaved,
                scale: 1.0,
                owned: false,
            }),
            Err(TensorError::DtypeMismatch { .. })
        ));
    }

    #[test]
    fn packed_operands_are_the_separate_ones_side_by_side() {
        let t = cpu();
        let (rows, heads, kv, cap, d) = (3u32, 6u32, 2u32, 9u32, 8u32);
        let q = tensor(&t, &[rows, heads * d], 1);
        let k = tensor(&t, &[rows, kv * d], 2);
        let v = tensor(&t, &[rows, kv * d], 3);
        let qkv = t.concat(&[&q, &k, &v], 1).unwrap();
        let keys = tensor(&t, &[rows, kv, cap, d], 4);
        let values = tensor(&t, &[rows, kv, cap, d], 5);
        let run = |operands| {
            let (o, nk, nv) = t
                .decode_attention(&DecodeArgs {
                    operands,
                    keys: &keys,
                    values: &values,
                    positions: &[0, 4, 8],
                    theta: 10_000.0,
                    layout: RopeLayout::Interleaved,
                    scale: 0.35,
                    owned: false,
                })
                .unwrap();
            assert_eq!(o.shape(), [rows as usize, (heads * d) as usize]);
            (floats(&t, &o), floats(&t, &nk), floats(&t, &nv))
        };
        let separate = run(Operands::Separate {
            q: &q,
            k: &k,
            v: &v,
        });
        assert_eq!(run(Operands::Packed(&qkv)), separate);
        let call = |qkv: &Tensor| {
            t.decode_attention(&DecodeArgs {
                operands: Operands::Packed(qkv),
                keys: &keys,
                values: &values,
                positions: &[0, 0, 0],
                theta: 10_000.0,
                layout: RopeLayout::Interleaved,
                scale: 1.0,
                owned: false,
            })
            .map(|_| ())
            .unwrap_err()
            .to_string()
        };
        // No room for queries; a query width that is not whole key heads.
        assert!(call(&tensor(&t, &[rows, 2 * kv * d], 1)).contains("wider than the key"));
        let odd = tensor(&t, &[rows, 2 * kv * d + d], 1);
        assert!(call(&odd).contains("multiple of kv-heads"));
        let three = tensor(&t, &[rows, heads * d + 2 * kv * d, 1], 1);
        assert!(call(&three).contains("qkv must be [rows"));
    }

    #[test]
    fn add_rms_norm_is_add_then_rms_norm() {
        let t = cpu();
        let (x, y, w) = (
            tensor(&t, &[3, 40], 1),
            tensor(&t, &[3, 40], 2),
            tensor(&t, &[40], 3),
        );
        let (sum, normed) = t.add_rms_norm(&x, &y, Some(&w), 1e-5).unwrap();
        let want = t.binary(BinaryOp::Add, &x, &y).unwrap();
        let want_norm = t
            .norm(
                crate::tensor::backend::NormKind::Rms,
                &want,
                Some(&w),
                None,
                1e-5,
            )
            .unwrap();
        assert_eq!(floats(&t, &sum), floats(&t, &want));
        assert_eq!(floats(&t, &normed), floats(&t, &want_norm));
        let err = |r: TResult<(Tensor, Tensor)>| r.map(|_| ()).unwrap_err().to_string();
        let row = tensor(&t, &[40], 4);
        assert!(err(t.add_rms_norm(&x, &row, None, 1e-5)).contains("one shape"));
        assert!(err(t.add_rms_norm(&x, &y, Some(&x), 1e-5)).contains("the weight must be"));
        assert!(err(t.add_rms_norm(&x, &y, None, -1.0)).contains("eps"));
        let ints = t.from_data(CpuData::I64(vec![1; 120]), &[3, 40]).unwrap();
        assert!(t.add_rms_norm(&ints, &ints, None, 1e-5).is_err());
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
