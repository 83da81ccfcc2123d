//! The differential oracle: property tests generate shapes, broadcasts,
//! strides (permutes, narrows), dtypes and edge values for the `wasi:tensor`
//! ops and compare each backend's result with a float64 reference computed
//! here from the same (dtype-rounded) inputs, within the per-op tolerance
//! table below (docs/SECURITY.md has it with what the runs found).
//!
//! The CPU backend always runs. With `TENSOR_WASM_ORACLE_DEVICE=cuda` the
//! CUDA backend runs the same generated cases too and is compared with the
//! reference and with the CPU (scripts/gpu-oracle.sh, on the device).

use half::{bf16, f16};
use prometheus_client::metrics::gauge::Gauge;
use proptest::prelude::*;
use std::sync::{Arc, OnceLock};
use tensor_wasm::tensor::backend::{BinaryOp, NormKind, RopeLayout, UnaryOp};
use tensor_wasm::tensor::device::{Device, DeviceSpec};
use tensor_wasm::tensor::dtype::DType;
use tensor_wasm::tensor::ops::Tensors;
use tensor_wasm::tensor::quota::Quota;
use tensor_wasm::tensor::storage::CpuData;
use tensor_wasm::tensor::types::Tensor;

/// The backends under test: the CPU, and CUDA when asked for.
fn backends() -> &'static [(String, Tensors)] {
    // The backend of a tenant placed on the device (nothing reserved).
    let first = |d: &Device| {
        d.place("oracle", &DeviceSpec::Auto, 0, false)
            .unwrap()
            .handle(0)
            .clone()
    };
    static ALL: OnceLock<Vec<(String, Tensors)>> = OnceLock::new();
    ALL.get_or_init(|| {
        let quota = || Arc::new(Quota::new(1 << 32, Gauge::default()));
        let mut all = vec![(
            "cpu".to_string(),
            Tensors::new(first(&Device::cpu()), quota()),
        )];
        if std::env::var("TENSOR_WASM_ORACLE_DEVICE").as_deref() == Ok("cuda") {
            let gpu = Device::open(&DeviceSpec::Gpus(vec![0]), None, false).expect("CUDA device 0");
            let gpu = Box::leak(Box::new(gpu));
            all.push(("cuda".into(), Tensors::new(first(gpu), quota())));
        }
        all
    })
}

/// Unit roundoff of a float dtype.
fn eps(dtype: DType) -> f64 {
    match dtype {
        DType::F32 => f32::EPSILON as f64 / 2.0,
        DType::F16 => 2f64.powi(-11),
        DType::BF16 => 2f64.powi(-8),
        _ => 0.0,
    }
}

/// Rounds to `dtype` and back, as a tensor of that dtype holds a value.
fn round(dtype: DType, v: f64) -> f64 {
    match dtype {
        DType::F32 => v as f32 as f64,
        DType::F16 => f16::from_f64(v).to_f64(),
        DType::BF16 => bf16::from_f64(v).to_f64(),
        DType::I32 => v as i32 as f64,
        DType::I64 => v as i64 as f64,
        _ => v,
    }
}

fn data(dtype: DType, v: &[f64]) -> CpuData {
    match dtype {
        DType::F32 => CpuData::F32(v.iter().map(|&x| x as f32).collect()),
        DType::F16 => CpuData::F16(v.iter().map(|&x| f16::from_f64(x)).collect()),
        DType::BF16 => CpuData::BF16(v.iter().map(|&x| bf16::from_f64(x)).collect()),
        DType::I32 => CpuData::I32(v.iter().map(|&x| x as i32).collect()),
        DType::I64 => CpuData::I64(v.iter().map(|&x| x as i64).collect()),
        other => panic!("no test data for {other:?}"),
    }
}

fn f64s(d: CpuData) -> Vec<f64> {
    match d {
        CpuData::F32(v) => v.into_iter().map(f64::from).collect(),
        CpuData::F16(v) => v.into_iter().map(f64::from).collect(),
        CpuData::BF16(v) => v.into_iter().map(f64::from).collect(),
        CpuData::I32(v) => v.into_iter().map(f64::from).collect(),
        CpuData::I64(v) => v.into_iter().map(|x| x as f64).collect(),
        #[allow(unreachable_patterns)]
        _ => panic!("unexpected data"),
    }
}

fn tensor(t: &Tensors, dtype: DType, shape: &[usize], v: &[f64]) -> Tensor {
    let shape: Vec<u32> = shape.iter().map(|&d| d as u32).collect();
    t.from_data(data(dtype, v), &shape).unwrap()
}

/// How close a result must be to the reference: |got − want| ≤
/// `abs` + `rel`·|want| + `scale`·`bound`, where `bound` is the op's own
/// error scale for that element (Σ|aᵢbᵢ| for a dot product, 1 otherwise).
#[derive(Clone, Copy, Debug)]
struct Tol {
    abs: f64,
    rel: f64,
}

/// The tolerance table (documented in docs/SECURITY.md), in units of the
/// output dtype's roundoff `u`.
fn tol(op: &str, dtype: DType) -> Tol {
    let u = eps(dtype).max(f32::EPSILON as f64 / 2.0);
    let (abs_u, rel_u) = match op {
        "add" | "sub" | "mul" | "div" | "scale" | "relu" | "cast" | "move" => (0.0, 1.0),
        "swiglu" | "silu" | "gelu" | "gelu-tanh" | "tanh" | "exp" => (4.0, 8.0),
        "softmax" | "norm" | "mean" | "l2" | "rope" | "attention" => (64.0, 64.0),
        "matmul" => (16.0, 16.0),
        _ => (64.0, 64.0),
    };
    // Ops on f16/bf16 compute in f32 and round once at the end.
    Tol {
        abs: abs_u * u,
        rel: rel_u * u + if dtype == DType::F32 { 0.0 } else { eps(dtype) },
    }
}

/// Compares `got` with `want` elementwise; `bound[i]` scales the absolute
/// part (1 where the op has no scale of its own).
fn close(
    what: &str,
    got: &[f64],
    want: &[f64],
    bound: &[f64],
    t: Tol,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.len(), want.len(), "{}: length", what);
    for i in 0..got.len() {
        let (g, w) = (got[i], want[i]);
        if w.is_nan() {
            prop_assert!(g.is_nan(), "{}[{}]: got {} want NaN", what, i, g);
            continue;
        }
        if w.is_infinite() {
            prop_assert_eq!(g, w, "{}[{}]", what, i);
            continue;
        }
        let scale = if bound[i].is_finite() {
            bound[i].max(1.0)
        } else {
            1.0
        };
        let limit = t.abs * scale + t.rel * w.abs();
        prop_assert!(
            (g - w).abs() <= limit,
            "{}[{}]: got {} want {} (|Δ| {:e} > {:e})",
            what,
            i,
            g,
            w,
            (g - w).abs(),
            limit
        );
    }
    Ok(())
}

/// Runs `op` on every backend and checks each against the reference; the
/// GPU is also checked against the CPU with twice the tolerance.
fn check(
    what: &str,
    dtype: DType,
    t: Tol,
    want: &[f64],
    bound: &[f64],
    op: impl Fn(&Tensors) -> Tensor,
) -> Result<(), TestCaseError> {
    let mut cpu = None;
    for (name, backend) in backends() {
        let out = op(backend);
        let got = f64s(backend.read(&out).unwrap());
        // The reference rounded to the output dtype (what a perfect backend gives).
        let want: Vec<f64> = want.iter().map(|&w| round(dtype, w)).collect();
        close(&format!("{what} on {name}"), &got, &want, bound, t)?;
        match &cpu {
            None => cpu = Some(got),
            Some(c) => {
                let twice = Tol {
                    abs: 2.0 * t.abs,
                    rel: 2.0 * t.rel,
                };
                close(&format!("{what}: {name} vs cpu"), &got, c, bound, twice)?;
            }
        }
    }
    Ok(())
}

/// A float64 reference of a unary op.
type Reference = fn(f64) -> f64;

fn ones(n: usize) -> Vec<f64> {
    vec![1.0; n]
}

fn float_dtype() -> impl Strategy<Value = DType> {
    prop_oneof![Just(DType::F32), Just(DType::F16), Just(DType::BF16)]
}

/// Values with edges: zeros of both signs, ±1, tiny and large magnitudes.
fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        6 => -4.0f64..4.0,
        1 => prop_oneof![Just(0.0), Just(-0.0), Just(1.0), Just(-1.0), Just(1e-6), Just(-3e-5), Just(60.0), Just(-60.0), Just(f64::INFINITY), Just(f64::NEG_INFINITY), Just(f64::NAN)],
    ]
}

fn shape(rank: std::ops::RangeInclusive<usize>, dim: usize) -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(1..=dim, rank)
}

/// Row-major strides of `shape`.
fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// The flat index in `shape` of multi-index `at` (broadcasting size-1 axes,
/// `at` aligned to the right).
fn index(shape: &[usize], at: &[usize]) -> usize {
    let st = strides(shape);
    let off = at.len() - shape.len();
    shape
        .iter()
        .enumerate()
        .map(|(i, &d)| if d == 1 { 0 } else { at[off + i] * st[i] })
        .sum()
}

fn each_index(shape: &[usize]) -> Vec<Vec<usize>> {
    let n: usize = shape.iter().product();
    (0..n)
        .map(|mut flat| {
            let mut at = vec![0; shape.len()];
            for i in (0..shape.len()).rev() {
                at[i] = flat % shape[i];
                flat /= shape[i];
            }
            at
        })
        .collect()
}

/// Two shapes that broadcast, and the result shape.
fn broadcast_pair() -> impl Strategy<Value = (Vec<usize>, Vec<usize>, Vec<usize>)> {
    (
        shape(1..=4, 5),
        proptest::collection::vec(any::<u8>(), 4),
        0..3usize,
    )
        .prop_map(|(full, mask, drop)| {
            let out = full;
            let b: Vec<usize> = out
                .iter()
                .enumerate()
                .map(|(i, &d)| if mask[i] % 3 == 0 { 1 } else { d })
                .collect();
            let a: Vec<usize> = out
                .iter()
                .enumerate()
                .map(|(i, &d)| if mask[i] % 3 == 1 { 1 } else { d })
                .collect();
            let b = b[drop.min(b.len() - 1)..].to_vec();
            // The result: a's axes, each widened where b's aligned axis is wider.
            let off = a.len() - b.len();
            let out = a
                .iter()
                .enumerate()
                .map(|(i, &d)| if i >= off { d.max(b[i - off]) } else { d })
                .collect();
            (a, b, out)
        })
}

/// Exact GELU; at -inf its limit, -0 (the formula gives -inf · 0).
fn gelu(x: f64) -> f64 {
    if x == f64::NEG_INFINITY {
        return -0.0;
    }
    0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2))
}

fn gelu_tanh(x: f64) -> f64 {
    let c = (2.0 / std::f64::consts::PI).sqrt();
    0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh())
}

fn silu(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

/// erf to double precision (Abramowitz–Stegun 7.1.26 is too coarse; this
/// is the series/continued fraction pair).
fn erf(x: f64) -> f64 {
    if x.abs() < 2.5 {
        // Maclaurin series.
        let (mut sum, mut term, x2) = (x, x, x * x);
        for n in 1..80 {
            term *= -x2 / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        2.0 / std::f64::consts::PI.sqrt() * sum
    } else {
        // Continued fraction for erfc.
        let ax = x.abs();
        let mut f = 0.0;
        for n in (1..60).rev() {
            f = n as f64 / 2.0 / (ax + f);
        }
        let erfc = (-ax * ax).exp() / std::f64::consts::PI.sqrt() / (ax + f);
        (1.0 - erfc).copysign(x)
    }
}

proptest! {
    // 64 cases per property (PROPTEST_CASES for longer runs); a failure
    // prints its minimal input, which goes into a regression test.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn binary_ops_broadcast_like_the_reference(
        (sa, sb, out) in broadcast_pair(),
        dtype in float_dtype(),
        seed in any::<u64>(),
        op in prop_oneof![Just(BinaryOp::Add), Just(BinaryOp::Sub), Just(BinaryOp::Mul), Just(BinaryOp::Div)],
    ) {
        let (na, nb) = (sa.iter().product::<usize>(), sb.iter().product::<usize>());
        let mut r = seed | 1;
        let mut next = move || { r ^= r << 13; r ^= r >> 7; r ^= r << 17; (r % 8001) as f64 / 1000.0 - 4.0 };
        let a: Vec<f64> = (0..na).map(|_| round(dtype, next())).collect();
        // Divisors away from zero: x/0 is the IEEE inf both sides agree on,
        // but a rounded near-zero divisor makes the reference meaningless.
        let b: Vec<f64> = (0..nb).map(|_| { let y = next(); round(dtype, if op == BinaryOp::Div && y.abs() < 0.05 { 0.5 } else { y }) }).collect();
        let want: Vec<f64> = each_index(&out).iter().map(|at| {
            let (x, y) = (a[index(&sa, at)], b[index(&sb, at)]);
            match op { BinaryOp::Add => x + y, BinaryOp::Sub => x - y, BinaryOp::Mul => x * y, _ => x / y }
        }).collect();
        check(op.name(), dtype, tol(op.name(), dtype), &want, &ones(want.len()), |t| {
            t.binary(op, &tensor(t, dtype, &sa, &a), &tensor(t, dtype, &sb, &b)).unwrap()
        })?;
    }

    #[test]
    fn integer_add_sub_mul_are_exact(
        (sa, sb, out) in broadcast_pair(),
        int64 in any::<bool>(),
        a in proptest::collection::vec(-1000i64..1000, 625),
        b in proptest::collection::vec(-1000i64..1000, 625),
    ) {
        let dtype = if int64 { DType::I64 } else { DType::I32 };
        let a: Vec<f64> = a[..sa.iter().product()].iter().map(|&x| x as f64).collect();
        let b: Vec<f64> = b[..sb.iter().product()].iter().map(|&x| x as f64).collect();
        for op in [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul] {
            let want: Vec<f64> = each_index(&out).iter().map(|at| {
                let (x, y) = (a[index(&sa, at)], b[index(&sb, at)]);
                match op { BinaryOp::Add => x + y, BinaryOp::Sub => x - y, _ => x * y }
            }).collect();
            check(op.name(), dtype, Tol { abs: 0.0, rel: 0.0 }, &want, &ones(want.len()), |t| {
                t.binary(op, &tensor(t, dtype, &sa, &a), &tensor(t, dtype, &sb, &b)).unwrap()
            })?;
        }
    }

    #[test]
    fn unary_ops_match_the_reference_on_edge_values(
        s in shape(1..=3, 9),
        dtype in float_dtype(),
        v in proptest::collection::vec(value(), 729),
        factor in -3.0f32..3.0,
    ) {
        let n: usize = s.iter().product();
        let x: Vec<f64> = v[..n].iter().map(|&x| round(dtype, x)).collect();
        let ops: [(UnaryOp, &str, Reference); 6] = [
            (UnaryOp::Gelu, "gelu", gelu),
            (UnaryOp::GeluTanh, "gelu-tanh", gelu_tanh),
            (UnaryOp::Silu, "silu", silu),
            (UnaryOp::Relu, "relu", |x| x.max(0.0)),
            (UnaryOp::Tanh, "tanh", f64::tanh),
            (UnaryOp::Exp, "exp", f64::exp),
        ];
        // Errors scale with |x|: an approximation's absolute error in a
        // function's inner part is multiplied by x (gelu, silu).
        let bound: Vec<f64> = x.iter().map(|x| x.abs()).collect();
        for (op, name, f) in ops {
            let want: Vec<f64> = x.iter().map(|&x| f(x)).collect();
            check(name, dtype, tol(name, dtype), &want, &bound, |t| t.unary(op, &tensor(t, dtype, &s, &x)).unwrap())?;
        }
        let want: Vec<f64> = x.iter().map(|&x| x * factor as f64).collect();
        check("scale", dtype, tol("scale", dtype), &want, &ones(n), |t| {
            t.unary(UnaryOp::Scale(factor), &tensor(t, dtype, &s, &x)).unwrap()
        })?;
    }

    #[test]
    fn matmul_with_transposes_and_batch_broadcast(
        m in 1usize..40, k in 1usize..70, n in 1usize..40,
        batch in prop_oneof![Just((vec![], vec![])), Just((vec![2], vec![2])), Just((vec![3], vec![1])), Just((vec![1, 2], vec![2]))],
        ta in any::<bool>(), tb in any::<bool>(),
        dtype in float_dtype(),
        seed in any::<u64>(),
    ) {
        let (ba, bb) = batch;
        let sa: Vec<usize> = ba.iter().copied().chain(if ta { [k, m] } else { [m, k] }).collect();
        let sb: Vec<usize> = bb.iter().copied().chain(if tb { [n, k] } else { [k, n] }).collect();
        let mut r = seed | 1;
        let mut next = move || { r ^= r << 13; r ^= r >> 7; r ^= r << 17; (r % 2001) as f64 / 1000.0 - 1.0 };
        let a: Vec<f64> = (0..sa.iter().product()).map(|_| round(dtype, next())).collect();
        let b: Vec<f64> = (0..sb.iter().product()).map(|_| round(dtype, next())).collect();
        let out_batch = if ba.len() >= bb.len() { ba.clone() } else { bb.clone() };
        let mut out_shape = out_batch.clone();
        out_shape.extend([m, n]);
        let (mut want, mut bound) = (Vec::new(), Vec::new());
        for at in each_index(&out_shape) {
            let (i, j) = (at[at.len() - 2], at[at.len() - 1]);
            let (mut s, mut mag) = (0.0, 0.0);
            for p in 0..k {
                let mut ia = at.clone(); let la = ia.len();
                ia[la - 2] = if ta { p } else { i }; ia[la - 1] = if ta { i } else { p };
                let mut ib = at.clone(); let lb = ib.len();
                ib[lb - 2] = if tb { j } else { p }; ib[lb - 1] = if tb { p } else { j };
                let x = a[index(&sa, &ia)] * b[index(&sb, &ib)];
                s += x; mag += x.abs();
            }
            want.push(s); bound.push(mag);
        }
        check("matmul", dtype, tol("matmul", dtype), &want, &bound, |t| {
            t.matmul(&tensor(t, dtype, &sa, &a), &tensor(t, dtype, &sb, &b), ta, tb).unwrap()
        })?;
    }

    #[test]
    fn softmax_norms_mean_and_l2_over_an_axis(
        s in shape(2..=3, 12),
        dtype in float_dtype(),
        v in proptest::collection::vec(value(), 1728),
        causal in any::<bool>(),
        ax in 0usize..3,
    ) {
        let n: usize = s.iter().product();
        let x: Vec<f64> = v[..n].iter().map(|&x| round(dtype, x)).collect();
        let rank = s.len();
        let ax = ax % rank;
        // Softmax over `ax` (causal only over the last axis with k ≥ q).
        let causal = causal && ax == rank - 1 && s[rank - 1] >= s[rank - 2];
        let want: Vec<f64> = each_index(&s).iter().map(|at| {
            let limit = if causal { s[rank - 1] - s[rank - 2] + at[rank - 2] } else { usize::MAX };
            let row: Vec<f64> = (0..s[ax]).filter(|&p| !causal || p <= limit).map(|p| {
                let mut b = at.clone(); b[ax] = p; x[index(&s, &b)]
            }).collect();
            if causal && at[ax] > limit { return 0.0; }
            let mx = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = row.iter().map(|r| (r - mx).exp()).sum();
            (x[index(&s, at)] - mx).exp() / z
        }).collect();
        check("softmax", dtype, tol("softmax", dtype), &want, &ones(n), |t| {
            t.softmax(&tensor(t, dtype, &s, &x), ax as i32, causal).unwrap()
        })?;
        // Layer and RMS norm over the last axis, with weight and bias.
        let d = s[rank - 1];
        let w: Vec<f64> = (0..d).map(|i| round(dtype, 0.5 + i as f64 / d as f64)).collect();
        let bias: Vec<f64> = (0..d).map(|i| round(dtype, i as f64 / 8.0 - 0.25)).collect();
        for kind in [NormKind::Layer, NormKind::Rms] {
            let (mut want, mut bound) = (Vec::with_capacity(n), Vec::with_capacity(n));
            for row in x.chunks(d) {
                let mean = if kind == NormKind::Layer { row.iter().sum::<f64>() / d as f64 } else { 0.0 };
                let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / d as f64;
                let inv = 1.0 / (var + 1e-5).sqrt();
                for (i, v) in row.iter().enumerate() {
                    let y = (v - mean) * inv * w[i];
                    want.push(if kind == NormKind::Layer { y + bias[i] } else { y });
                    // x − mean cancels on nearly constant rows: the f32
                    // mean's rounding (u·|mean|) is amplified by 1/σ.
                    bound.push((v.abs() + mean.abs()) * inv * w[i].abs() + 4.0);
                }
            }
            check("norm", dtype, tol("norm", dtype), &want, &bound, |t| {
                let (wt, bt) = (tensor(t, dtype, &[d], &w), tensor(t, dtype, &[d], &bias));
                let b = (kind == NormKind::Layer).then_some(&bt);
                t.norm(kind, &tensor(t, dtype, &s, &x), Some(&wt), b, 1e-5).unwrap()
            })?;
        }
        // Mean and L2 normalization over `ax`.
        let mut reduced = s.clone(); reduced.remove(ax);
        let want: Vec<f64> = each_index(&reduced).iter().map(|at| {
            (0..s[ax]).map(|p| { let mut b = at.clone(); b.insert(ax, p); x[index(&s, &b)] }).sum::<f64>() / s[ax] as f64
        }).collect();
        let bound: Vec<f64> = want.iter().map(|_| 4.0).collect();
        check("mean", dtype, tol("mean", dtype), &want, &bound, |t| t.mean(&tensor(t, dtype, &s, &x), ax as i32, None).unwrap())?;
        let want: Vec<f64> = each_index(&s).iter().map(|at| {
            let norm = (0..s[ax]).map(|p| { let mut b = at.clone(); b[ax] = p; x[index(&s, &b)].powi(2) }).sum::<f64>().sqrt();
            x[index(&s, at)] / norm.max(1e-12)
        }).collect();
        check("l2", dtype, tol("l2", dtype), &want, &ones(n), |t| t.l2_normalize(&tensor(t, dtype, &s, &x), ax as i32, 1e-12).unwrap())?;
    }

    #[test]
    fn movement_ops_and_casts_are_exact(
        s in shape(2..=4, 6),
        dtype in float_dtype(),
        v in proptest::collection::vec(value(), 1296),
        perm_seed in any::<u64>(),
        start_frac in 0.0f64..1.0,
        to in float_dtype(),
    ) {
        let n: usize = s.iter().product();
        let x: Vec<f64> = v[..n].iter().map(|&x| round(dtype, x)).collect();
        let rank = s.len();
        // A permutation (a non-contiguous stride pattern).
        let mut order: Vec<usize> = (0..rank).collect();
        let mut r = perm_seed | 1;
        for i in (1..rank).rev() { r ^= r << 13; r ^= r >> 7; r ^= r << 17; order.swap(i, (r % (i as u64 + 1)) as usize); }
        let ps: Vec<usize> = order.iter().map(|&d| s[d]).collect();
        let want: Vec<f64> = each_index(&ps).iter().map(|at| {
            let mut src = vec![0; rank];
            for (i, &d) in order.iter().enumerate() { src[d] = at[i]; }
            x[index(&s, &src)]
        }).collect();
        let order32: Vec<u32> = order.iter().map(|&d| d as u32).collect();
        check("permute", dtype, tol("move", dtype), &want, &ones(n), |t| t.permute(&tensor(t, dtype, &s, &x), &order32).unwrap())?;
        // Narrow the permuted tensor along its first axis, then concat.
        let ax = 0;
        let start = ((ps[ax] as f64 - 1.0) * start_frac) as usize;
        let len = ps[ax] - start;
        let mut ns = ps.clone(); ns[ax] = len;
        let inner: usize = ps[1..].iter().product();
        let narrowed: Vec<f64> = want[start * inner..].to_vec();
        check("narrow", dtype, tol("move", dtype), &narrowed, &ones(narrowed.len()), |t| {
            let p = t.permute(&tensor(t, dtype, &s, &x), &order32).unwrap();
            t.narrow(&p, ax as i32, start as u32, len as u32).unwrap()
        })?;
        let mut joined = want.clone(); joined.extend(narrowed.iter());
        check("concat", dtype, tol("move", dtype), &joined, &ones(joined.len()), |t| {
            let p = t.permute(&tensor(t, dtype, &s, &x), &order32).unwrap();
            let q = t.narrow(&p, ax as i32, start as u32, len as u32).unwrap();
            t.concat(&[&p, &q], ax as i32).unwrap()
        })?;
        // Casts round to the target dtype.
        check("cast", to, tol("cast", to), &x, &ones(n), |t| t.cast(&tensor(t, dtype, &s, &x), to).unwrap())?;
    }

    #[test]
    fn rope_argmax_top_k_and_embedding(
        seq in 1usize..9, half in 1usize..9, heads in 1usize..3,
        dtype in float_dtype(),
        v in proptest::collection::vec(value(), 2 * 8 * 16),
        offset in 0u32..4096,
        interleaved in any::<bool>(),
        k in 1usize..5,
    ) {
        let d = 2 * half;
        let s = [heads, seq, d];
        let n = heads * seq * d;
        let x: Vec<f64> = v[..n].iter().map(|&x| round(dtype, x)).collect();
        let theta = 10000.0f32;
        let mut want = x.clone();
        for h in 0..heads { for p in 0..seq {
            let row = &mut want[(h * seq + p) * d..(h * seq + p + 1) * d];
            let orig = row.to_vec();
            for i in 0..half {
                let freq = (theta as f64).powf(-2.0 * i as f64 / d as f64);
                let ang = (offset as f64 + p as f64) * freq;
                let (a, b) = if interleaved { (2 * i, 2 * i + 1) } else { (i, i + half) };
                row[a] = orig[a] * ang.cos() - orig[b] * ang.sin();
                row[b] = orig[a] * ang.sin() + orig[b] * ang.cos();
            }
        }}
        let layout = if interleaved { RopeLayout::Interleaved } else { RopeLayout::HalfSplit };
        let bound: Vec<f64> = want.iter().map(|_| 8.0).collect();
        check("rope", dtype, tol("rope", dtype), &want, &bound, |t| t.rope(&tensor(t, dtype, &s, &x), offset, theta, layout).unwrap())?;
        // argmax over the last axis: the first of the largest, NaN above
        // everything (as PyTorch and NumPy).
        let want: Vec<f64> = x.chunks(d).map(|row| {
            if let Some(i) = row.iter().position(|v| v.is_nan()) { return i as f64; }
            let mx = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            row.iter().position(|&v| v == mx).unwrap() as f64
        }).collect();
        check("argmax", DType::I64, Tol { abs: 0.0, rel: 0.0 }, &want, &ones(want.len()), |t| t.argmax(&tensor(t, dtype, &s, &x), -1).unwrap())?;
        // top-k values (ties make indices ambiguous: values only).
        let k = k.min(d);
        let want: Vec<f64> = x.chunks(d).flat_map(|row| {
            let mut r = row.to_vec(); r.sort_by(|a, b| b.total_cmp(a)); r.truncate(k); r
        }).collect();
        check("top-k", dtype, tol("move", dtype), &want, &ones(want.len()), |t| t.top_k(&tensor(t, dtype, &s, &x), k as u32).unwrap().0)?;
        // Embedding: a gather of rows.
        let rows = seq + 1;
        let table: Vec<f64> = (0..rows * d).map(|i| round(dtype, i as f64 / 7.0 - 3.0)).collect();
        let ids: Vec<f64> = (0..heads * seq).map(|i| ((i * 7 + offset as usize) % rows) as f64).collect();
        let want: Vec<f64> = ids.iter().flat_map(|&id| table[id as usize * d..(id as usize + 1) * d].to_vec()).collect();
        check("embedding", dtype, tol("move", dtype), &want, &ones(want.len()), |t| {
            t.embedding(&tensor(t, dtype, &[rows, d], &table), &tensor(t, DType::I64, &[heads, seq], &ids)).unwrap()
        })?;
    }

    #[test]
    fn attention_matches_softmax_of_scaled_scores(
        b in 1usize..3, hk in 1usize..3, group in 1usize..3, q in 1usize..7, extra in 0usize..4, d in 1usize..17,
        dtype in float_dtype(),
        causal in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let (hq, kl) = (hk * group, q + extra);
        let mut r = seed | 1;
        let mut next = move || { r ^= r << 13; r ^= r >> 7; r ^= r << 17; (r % 2001) as f64 / 1000.0 - 1.0 };
        let qv: Vec<f64> = (0..b * hq * q * d).map(|_| round(dtype, next())).collect();
        let kv: Vec<f64> = (0..b * hk * kl * d).map(|_| round(dtype, next())).collect();
        let vv: Vec<f64> = (0..b * hk * kl * d).map(|_| round(dtype, next())).collect();
        let scale = 1.0 / (d as f32).sqrt();
        let mut want = Vec::new();
        for bi in 0..b { for h in 0..hq { let kh = h / group; for i in 0..q {
            let limit = kl - q + i;
            let scores: Vec<f64> = (0..kl).map(|j| {
                if causal && j > limit { return f64::NEG_INFINITY; }
                (0..d).map(|p| qv[((bi * hq + h) * q + i) * d + p] * kv[((bi * hk + kh) * kl + j) * d + p]).sum::<f64>() * scale as f64
            }).collect();
            let mx = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = scores.iter().map(|s| (s - mx).exp()).sum();
            for p in 0..d {
                want.push((0..kl).map(|j| (scores[j] - mx).exp() / z * vv[((bi * hk + kh) * kl + j) * d + p]).sum::<f64>());
            }
        }}}
        let bound: Vec<f64> = want.iter().map(|_| 4.0).collect();
        check("attention", dtype, tol("attention", dtype), &want, &bound, |t| {
            t.attention(
                &tensor(t, dtype, &[b, hq, q, d], &qv),
                &tensor(t, dtype, &[b, hk, kl, d], &kv),
                &tensor(t, dtype, &[b, hk, kl, d], &vv),
                None, scale, causal,
            ).unwrap()
        })?;
    }
}
