//! Elementwise and reduction kernels on f32 slices (f16/bf16 are widened to
//! f32 by the caller), plus the integer elementwise ops. Large inputs are
//! split across the rayon pool.

use super::movement::for_each_row;
use super::simd::multiversion;
use crate::tensor::backend::{BinaryOp, NormKind, RopeLayout, UnaryOp};
use crate::tensor::layout::broadcast_strides;
use rayon::prelude::*;

/// Elements per task below which a kernel stays on the calling thread.
pub const PAR_MIN: usize = 1 << 15;

/// Rows per parallel task so that each task has about `PAR_MIN` elements.
fn rows_per_task(row_len: usize) -> usize {
    (PAR_MIN / row_len.max(1)).max(1)
}

/// Broadcasting binary operation on any copyable element type.
pub fn binary<T: Copy + Send + Sync>(
    a: &[T],
    ashape: &[usize],
    b: &[T],
    bshape: &[usize],
    out: &[usize],
    f: impl Fn(T, T) -> T + Sync,
) -> Vec<T> {
    let n: usize = out.iter().product();
    if ashape == bshape {
        return if n >= PAR_MIN {
            a.par_iter()
                .zip(b.par_iter())
                .map(|(&x, &y)| f(x, y))
                .collect()
        } else {
            a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect()
        };
    }
    let sa = broadcast_strides(ashape, out);
    let sb = broadcast_strides(bshape, out);
    let mut result = Vec::with_capacity(n);
    let rank = out.len();
    let last = if rank == 0 { 1 } else { out[rank - 1] };
    let (ia, ib) = if rank == 0 {
        (0, 0)
    } else {
        (sa[rank - 1], sb[rank - 1])
    };
    for_each_row(out, &sa, &sb, |oa, ob, _| match (ia, ib) {
        (1, 1) => result.extend(
            a[oa..oa + last]
                .iter()
                .zip(&b[ob..ob + last])
                .map(|(&x, &y)| f(x, y)),
        ),
        (1, 0) => {
            let y = b[ob];
            result.extend(a[oa..oa + last].iter().map(|&x| f(x, y)));
        }
        (0, 1) => {
            let x = a[oa];
            result.extend(b[ob..ob + last].iter().map(|&y| f(x, y)));
        }
        _ => result.extend((0..last).map(|j| f(a[oa + j * ia], b[ob + j * ib]))),
    });
    result
}

/// How an operand of a broadcasting op repeats: the length of the block of
/// `out`'s trailing dimensions it spans contiguously, if it covers them
/// exactly and broadcasts along all the leading ones (`None` otherwise).
/// A full operand repeats with period `n`, a bias over the last axis with
/// period `out[rank-1]`.
fn period(shape: &[usize], out: &[usize]) -> Option<usize> {
    let st = broadcast_strides(shape, out);
    let own = crate::tensor::layout::strides(out);
    let len: usize = shape.iter().product();
    let mut block = 1;
    for i in (0..out.len()).rev() {
        if block == len {
            // The remaining dimensions of `shape` are all 1: it broadcasts there.
            return Some(len);
        }
        if st[i] != own[i] || st[i] != block {
            return None;
        }
        block *= out[i];
    }
    (block == len).then_some(len)
}

multiversion! {
    /// `out[i] = a[i] op b[i % b.len()]` (or with `a` repeating when
    /// `a_repeats`), for `out` a whole number of `b`'s periods.
    fn zip_into(a: &[f32], b: &[f32], out: &mut [f32], op: BinaryOp, a_repeats: bool) {
        let f = float_binary(op);
        let (full, rep) = if a_repeats { (b, a) } else { (a, b) };
        for (o, x) in out.chunks_exact_mut(rep.len()).zip(full.chunks_exact(rep.len())) {
            match (op, a_repeats) {
                (BinaryOp::Add, _) => {
                    for ((o, &x), &y) in o.iter_mut().zip(x).zip(rep) {
                        *o = x + y;
                    }
                }
                (BinaryOp::Mul, _) => {
                    for ((o, &x), &y) in o.iter_mut().zip(x).zip(rep) {
                        *o = x * y;
                    }
                }
                (BinaryOp::Sub, false) => {
                    for ((o, &x), &y) in o.iter_mut().zip(x).zip(rep) {
                        *o = x - y;
                    }
                }
                (_, false) => {
                    for ((o, &x), &y) in o.iter_mut().zip(x).zip(rep) {
                        *o = f(x, y);
                    }
                }
                (_, true) => {
                    for ((o, &y), &x) in o.iter_mut().zip(x).zip(rep) {
                        *o = f(x, y);
                    }
                }
            }
        }
    }
}

/// A broadcasting f32 binary op: vectorized and parallel when one operand is
/// full-size and the other repeats over trailing dimensions (same shapes,
/// a bias row, a per-channel vector), generic otherwise.
pub fn binary_f32(
    a: &[f32],
    ashape: &[usize],
    b: &[f32],
    bshape: &[usize],
    out: &[usize],
    op: BinaryOp,
) -> Vec<f32> {
    let n: usize = out.iter().product();
    let fast = if a.len() == n && n > 0 {
        period(bshape, out).map(|p| (false, p))
    } else if b.len() == n && n > 0 {
        period(ashape, out).map(|p| (true, p))
    } else {
        None
    };
    // Short periods (a scalar, a few channels) vectorize badly per period.
    let Some((a_repeats, p)) = fast.filter(|&(_, p)| p >= 16) else {
        return binary(a, ashape, b, bshape, out, float_binary(op));
    };
    let (full, rep) = if a_repeats { (b, a) } else { (a, b) };
    let mut result = vec![0.0f32; n];
    let chunk = p * (PAR_MIN / p).max(1);
    let run = |(o, x): (&mut [f32], &[f32])| {
        if a_repeats {
            zip_into(rep, x, o, op, true)
        } else {
            zip_into(x, rep, o, op, false)
        }
    };
    if n >= PAR_MIN {
        result
            .par_chunks_mut(chunk)
            .zip(full.par_chunks(chunk))
            .for_each(run);
    } else {
        run((&mut result, full));
    }
    result
}

/// The float function of a binary op.
pub fn float_binary(op: BinaryOp) -> fn(f32, f32) -> f32 {
    match op {
        BinaryOp::Add => |x, y| x + y,
        BinaryOp::Sub => |x, y| x - y,
        BinaryOp::Mul => |x, y| x * y,
        BinaryOp::Div => |x, y| x / y,
        BinaryOp::Swiglu => |x, y| x / (1.0 + (-x).exp()) * y,
    }
}

/// Integer binary ops (wrapping; division truncates, the caller checks for zero).
macro_rules! int_binary_fn {
    ($name:ident, $t:ty) => {
        /// The integer function of a binary op.
        pub fn $name(op: BinaryOp) -> fn($t, $t) -> $t {
            match op {
                BinaryOp::Add => |x, y| x.wrapping_add(y),
                BinaryOp::Sub => |x, y| x.wrapping_sub(y),
                BinaryOp::Mul => |x, y| x.wrapping_mul(y),
                BinaryOp::Div => |x, y| x.wrapping_div(y),
                // Never reached: the op layer takes swiglu for floats only.
                BinaryOp::Swiglu => |x, y| x.wrapping_mul(y),
            }
        }
    };
}
int_binary_fn!(i32_binary, i32);
int_binary_fn!(i64_binary, i64);
int_binary_fn!(u8_binary, u8);

/// erf(x) in f32 to within 5e-7: a rational fit, odd degree-13 numerator
/// over even degree-8 denominator on [-4, 4] (±1 beyond, in f32). No `exp`,
/// so it vectorizes; GELU on a BERT layer's activations is a large share of
/// a CPU forward pass.
#[inline(always)]
fn erf(x: f32) -> f32 {
    const ALPHA: [f32; 7] = [
        -2.726_142e-10,
        2.770_681_4e-8,
        -2.101_024e-6,
        -5.692_506_4e-5,
        -7.349_906_3e-4,
        -2.954_6e-3,
        -1.609_603_3e-2,
    ];
    const BETA: [f32; 5] = [
        -1.456_607_2e-5,
        -2.133_740_6e-4,
        -1.682_827e-3,
        -7.373_329_2e-3,
        -1.426_474e-2,
    ];
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let p = ALPHA[1..].iter().fold(ALPHA[0], |p, &c| p * x2 + c) * x;
    let q = BETA[1..].iter().fold(BETA[0], |q, &c| q * x2 + c);
    p / q
}

/// GELU (erf form).
#[inline(always)]
fn gelu(x: f32) -> f32 {
    // Below -9, gelu(x) is under 1e-18 in magnitude, while erf's absolute
    // error (~1e-7) times x would not be; -inf gives the limit, -0.
    if x < -9.0 {
        return -0.0;
    }
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// The scalar function of a unary op.
#[inline(always)]
fn unary_fn(op: UnaryOp, x: f32) -> f32 {
    match op {
        UnaryOp::Scale(s) => x * s,
        UnaryOp::Gelu => gelu(x),
        UnaryOp::GeluTanh => {
            const C: f32 = 0.797_884_6; // sqrt(2/pi)
            0.5 * x * (1.0 + (C * (x + 0.044_715 * x * x * x)).tanh())
        }
        UnaryOp::Silu => x / (1.0 + (-x).exp()),
        UnaryOp::Relu => x.max(0.0),
        UnaryOp::Tanh => x.tanh(),
        UnaryOp::Exp => x.exp(),
    }
}

multiversion! {
    /// `out[i] = op(x[i])`, one loop per op so the branch-free ones vectorize.
    fn unary_into(x: &[f32], out: &mut [f32], op: UnaryOp) {
        match op {
            UnaryOp::Gelu => {
                for (o, &v) in out.iter_mut().zip(x) {
                    *o = gelu(v);
                }
            }
            UnaryOp::Scale(f) => {
                for (o, &v) in out.iter_mut().zip(x) {
                    *o = v * f;
                }
            }
            UnaryOp::Relu => {
                for (o, &v) in out.iter_mut().zip(x) {
                    *o = v.max(0.0);
                }
            }
            op => {
                for (o, &v) in out.iter_mut().zip(x) {
                    *o = unary_fn(op, v);
                }
            }
        }
    }
}

/// Applies a unary op elementwise.
pub fn unary(x: &[f32], op: UnaryOp) -> Vec<f32> {
    let mut out = vec![0.0f32; x.len()];
    if x.len() >= PAR_MIN {
        out.par_chunks_mut(PAR_MIN)
            .zip(x.par_chunks(PAR_MIN))
            .for_each(|(o, i)| unary_into(i, o, op));
    } else {
        unary_into(x, &mut out, op);
    }
    out
}

/// Softmax of one contiguous row in place; entries past `valid` are masked (0).
fn softmax_row(row: &mut [f32], valid: usize) {
    let (live, dead) = row.split_at_mut(valid.min(row.len()));
    dead.fill(0.0);
    if live.is_empty() {
        return;
    }
    let max = live.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    for v in live.iter_mut() {
        let d = *v - max;
        // exp(d) is 0 in f32 below this; libm's underflow path (errno) is slow,
        // and masked scores (-1e9) take it for every padded key.
        *v = if d < -104.0 { 0.0 } else { d.exp() };
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in live.iter_mut() {
        *v *= inv;
    }
}

/// Softmax over the last axis (`row_len` long); with `causal`, row r of each
/// [q, k] matrix keeps the first r + 1 + (k - q) entries.
pub fn softmax_last(x: &[f32], row_len: usize, causal: Option<usize>) -> Vec<f32> {
    let mut out = x.to_vec();
    if row_len == 0 {
        return out;
    }
    let body = |(r, row): (usize, &mut [f32])| {
        let valid = match causal {
            Some(q) => (r % q) + 1 + (row_len - q),
            None => row_len,
        };
        softmax_row(row, valid);
    };
    if out.len() >= PAR_MIN {
        out.par_chunks_mut(row_len).enumerate().for_each(body);
    } else {
        out.chunks_mut(row_len).enumerate().for_each(body);
    }
    out
}

/// Softmax over a middle axis: `x` viewed as [outer, len, inner].
pub fn softmax_strided(x: &[f32], len: usize, inner: usize) -> Vec<f32> {
    let mut out = x.to_vec();
    if len == 0 || inner == 0 {
        return out;
    }
    let mut col = vec![0.0f32; len];
    for block in out.chunks_mut(len * inner) {
        for i in 0..inner {
            for (t, c) in col.iter_mut().enumerate() {
                *c = block[t * inner + i];
            }
            softmax_row(&mut col, len);
            for (t, c) in col.iter().enumerate() {
                block[t * inner + i] = *c;
            }
        }
    }
    out
}

multiversion! {
    /// Normalizes each row of `dim` in `rows` in place.
    fn norm_rows(
        rows: &mut [f32],
        dim: usize,
        kind: NormKind,
        weight: Option<&[f32]>,
        bias: Option<&[f32]>,
        eps: f32,
    ) {
        let n = dim as f32;
        for row in rows.chunks_exact_mut(dim) {
            let mean = match kind {
                NormKind::Layer => row.iter().sum::<f32>() / n,
                NormKind::Rms => 0.0,
            };
            let var = row.iter().map(|&v| (v - mean) * (v - mean)).sum::<f32>() / n;
            let inv = 1.0 / (var + eps).sqrt();
            for v in row.iter_mut() {
                *v = (*v - mean) * inv;
            }
            if let Some(w) = weight {
                for (v, &w) in row.iter_mut().zip(w) {
                    *v *= w;
                }
            }
            if let Some(b) = bias {
                for (v, &b) in row.iter_mut().zip(b) {
                    *v += b;
                }
            }
        }
    }
}

/// Layer or RMS normalization of rows of `dim`, then weight and bias.
pub fn norm(
    x: &[f32],
    dim: usize,
    kind: NormKind,
    weight: Option<&[f32]>,
    bias: Option<&[f32]>,
    eps: f32,
) -> Vec<f32> {
    let mut out = x.to_vec();
    if dim == 0 {
        return out;
    }
    let body = |rows: &mut [f32]| norm_rows(rows, dim, kind, weight, bias, eps);
    if out.len() >= PAR_MIN {
        out.par_chunks_mut(dim * rows_per_task(dim)).for_each(body);
    } else {
        body(&mut out);
    }
    out
}

/// cos and sin of the rotary angle per (position, pair) for rows of `dim`,
/// computed in f64 and rounded once (what every backend uses).
pub fn rope_table(positions: &[usize], dim: usize, theta: f32) -> (Vec<f32>, Vec<f32>) {
    let half = dim / 2;
    let mut cos = vec![0.0f32; positions.len() * half];
    let mut sin = vec![0.0f32; positions.len() * half];
    for (s, &pos) in positions.iter().enumerate() {
        for i in 0..half {
            let freq = (theta as f64).powf(-2.0 * i as f64 / dim as f64);
            let (sn, cs) = (pos as f64 * freq).sin_cos();
            cos[s * half + i] = cs as f32;
            sin[s * half + i] = sn as f32;
        }
    }
    (cos, sin)
}

/// Rotates `row` in place by the angles whose cos and sin are `c` and `sn`.
pub fn rotate(row: &mut [f32], c: &[f32], sn: &[f32], layout: RopeLayout) {
    let half = c.len();
    for i in 0..half {
        let (a, b) = match layout {
            RopeLayout::Interleaved => (2 * i, 2 * i + 1),
            RopeLayout::HalfSplit => (i, i + half),
        };
        let (x0, x1) = (row[a], row[b]);
        row[a] = x0 * c[i] - x1 * sn[i];
        row[b] = x0 * sn[i] + x1 * c[i];
    }
}

/// Rotary embedding of rows of `dim` where row r has position `offset + r % seq`.
pub fn rope(
    x: &[f32],
    seq: usize,
    dim: usize,
    offset: usize,
    theta: f32,
    layout: RopeLayout,
) -> Vec<f32> {
    let half = dim / 2;
    let mut out = x.to_vec();
    if dim == 0 || seq == 0 {
        return out;
    }
    let positions: Vec<usize> = (offset..offset + seq).collect();
    let (cos, sin) = rope_table(&positions, dim, theta);
    let body = |(r, row): (usize, &mut [f32])| {
        let s = r % seq;
        rotate(
            row,
            &cos[s * half..(s + 1) * half],
            &sin[s * half..(s + 1) * half],
            layout,
        );
    };
    if out.len() >= PAR_MIN {
        out.par_chunks_mut(dim).enumerate().for_each(body);
    } else {
        out.chunks_mut(dim).enumerate().for_each(body);
    }
    out
}

/// Index of the maximum along the middle of [outer, len, inner] (first on ties).
pub fn argmax<T: Copy + PartialOrd>(x: &[T], outer: usize, len: usize, inner: usize) -> Vec<i64> {
    let mut out = Vec::with_capacity(outer * inner);
    for o in 0..outer {
        for i in 0..inner {
            let mut best = 0usize;
            for t in 1..len {
                let (a, b) = (
                    x[(o * len + t) * inner + i],
                    x[(o * len + best) * inner + i],
                );
                if total_order(a, b) == std::cmp::Ordering::Greater {
                    best = t;
                }
            }
            out.push(best as i64);
        }
    }
    out
}

/// The `k` largest of each row of `len` (largest first, lower index first on
/// ties) and their indices.
pub fn top_k<T: Copy + PartialOrd>(x: &[T], len: usize, k: usize) -> (Vec<T>, Vec<i64>) {
    let rows = x.len().checked_div(len).unwrap_or(0);
    let mut values = Vec::with_capacity(rows * k);
    let mut indices = Vec::with_capacity(rows * k);
    let mut order: Vec<usize> = Vec::with_capacity(len);
    for r in 0..rows {
        let row = &x[r * len..(r + 1) * len];
        order.clear();
        order.extend(0..len);
        let cmp = |&a: &usize, &b: &usize| total_order(row[b], row[a]).then(a.cmp(&b));
        if k < len && k > 0 {
            order.select_nth_unstable_by(k - 1, cmp);
        }
        order.truncate(k);
        order.sort_by(cmp);
        for &i in &order {
            values.push(row[i]);
            indices.push(i as i64);
        }
    }
    (values, indices)
}

/// Orders values with NaN above everything (as PyTorch's argmax and topk
/// do): a total order, so sorting never meets an inconsistent comparison
/// and the first NaN wins an argmax wherever it is.
fn total_order<T: PartialOrd>(a: T, b: T) -> std::cmp::Ordering {
    #[allow(clippy::eq_op)]
    let (a_nan, b_nan) = (a != a, b != b);
    match (a_nan, b_nan) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Greater,
        (false, true) => std::cmp::Ordering::Less,
        (false, false) => a.partial_cmp(&b).unwrap_or(std::cmp::Ordering::Equal),
    }
}

/// Mean along the middle of [outer, len, inner]; `mask` is [outer, len].
pub fn mean(x: &[f32], outer: usize, len: usize, inner: usize, mask: Option<&[f32]>) -> Vec<f32> {
    let mut out = vec![0.0f32; outer * inner];
    for o in 0..outer {
        let acc = &mut out[o * inner..(o + 1) * inner];
        let mut count = 0.0f32;
        for t in 0..len {
            if let Some(m) = mask
                && m[o * len + t] == 0.0
            {
                continue;
            }
            count += 1.0;
            let row = &x[(o * len + t) * inner..(o * len + t + 1) * inner];
            for (a, &v) in acc.iter_mut().zip(row) {
                *a += v;
            }
        }
        if count > 0.0 {
            acc.iter_mut().for_each(|a| *a /= count);
        }
    }
    out
}

/// x / max(‖x‖₂, eps) along the middle of [outer, len, inner].
pub fn l2_normalize(x: &[f32], outer: usize, len: usize, inner: usize, eps: f32) -> Vec<f32> {
    let mut out = x.to_vec();
    for o in 0..outer {
        for i in 0..inner {
            let at = |t: usize| (o * len + t) * inner + i;
            let norm = (0..len).map(|t| x[at(t)] * x[at(t)]).sum::<f32>().sqrt();
            let inv = 1.0 / norm.max(eps);
            for t in 0..len {
                out[at(t)] = x[at(t)] * inv;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the differential oracle (tests/oracle.rs).
    #[test]
    fn gelu_of_large_negatives_is_zero_and_nan_orders_above_everything() {
        assert_eq!(gelu(f32::NEG_INFINITY).to_bits(), (-0.0f32).to_bits());
        assert_eq!(gelu(-60.0), 0.0, "not erf's error times 60");
        let x = [1.0, f32::NAN, 3.0, f32::NAN];
        assert_eq!(argmax(&x, 1, 4, 1), vec![1], "the first NaN wins");
        assert_eq!(argmax(&[f32::NAN, 5.0], 1, 2, 1), vec![0]);
        assert_eq!(argmax(&[2.0, 5.0, 5.0], 1, 3, 1), vec![1]);
        let row = [0.5, f32::NAN, 2.0, -1.0, f32::NAN, 7.0];
        let (v, i) = top_k(&row, 6, 3);
        assert!(v[0].is_nan() && v[1].is_nan() && v[2] == 7.0, "{v:?}");
        assert_eq!(i, vec![1, 4, 5]);
    }

    #[test]
    fn erf_is_accurate() {
        for (x, want) in [
            (0.0f64, 0.0f64),
            (0.5, 0.520_499_877_8),
            (1.0, 0.842_700_792_9),
            (-2.0, -0.995_322_265),
            (3.2, 0.999_993_974_2),
            (-5.0, -0.999_999_999_998),
        ] {
            assert!((erf(x as f32) as f64 - want).abs() < 1e-6, "erf({x})");
        }
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| ((i as u32).wrapping_mul(2_654_435_761) ^ seed) as f32 / 4e9 - 0.5)
            .collect()
    }

    #[test]
    fn fast_binary_equals_the_generic_one() {
        let cases: &[(&[usize], &[usize])] = &[
            (&[4, 9, 384], &[384]),
            (&[4, 9, 384], &[4, 9, 384]),
            (&[4, 9, 384], &[1, 9, 384]),
            (&[384], &[4, 9, 384]),
            (&[2, 3, 64, 40], &[64, 40]),
            (&[2, 3, 64, 40], &[2, 1, 64, 40]),
            (&[300, 200], &[300, 1]),
            (&[300, 200], &[]),
            (&[1, 100_000], &[100_000]),
            (&[40, 2000], &[2000]),
        ];
        for (ashape, bshape) in cases {
            let out: Vec<usize> = {
                let rank = ashape.len().max(bshape.len());
                let dim = |s: &[usize], i: usize| {
                    let pad = rank - s.len();
                    if i < pad { 1 } else { s[i - pad] }
                };
                (0..rank)
                    .map(|i| dim(ashape, i).max(dim(bshape, i)))
                    .collect()
            };
            let a = values(ashape.iter().product(), 1);
            let b = values(bshape.iter().product(), 2);
            for op in [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div] {
                let want = binary(&a, ashape, &b, bshape, &out, float_binary(op));
                let got = binary_f32(&a, ashape, &b, bshape, &out, op);
                assert_eq!(got, want, "{ashape:?} {op:?} {bshape:?}");
            }
        }
    }

    #[test]
    fn vectorized_unary_ops_equal_the_scalar_ones() {
        let x: Vec<f32> = values(100_003, 3).iter().map(|v| v * 20.0).collect();
        for op in [
            UnaryOp::Gelu,
            UnaryOp::Scale(0.37),
            UnaryOp::Relu,
            UnaryOp::Silu,
        ] {
            let got = unary(&x, op);
            for (g, &v) in got.iter().zip(&x) {
                assert_eq!(g.to_bits(), unary_fn(op, v).to_bits(), "{op:?}({v})");
            }
        }
    }
}
