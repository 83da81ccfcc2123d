//! Float64 reference implementations of the `wasi:tensor` ops, written for
//! clarity (plain loops over multi-indices), to check the host against.

/// An n-dimensional f64 array.
#[derive(Debug, Clone, PartialEq)]
pub struct Nd {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Row-major elements.
    pub data: Vec<f64>,
}

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Every multi-index of `shape` in row-major order.
pub fn indices(shape: &[usize]) -> Vec<Vec<usize>> {
    let n: usize = shape.iter().product();
    let st = strides(shape);
    (0..n)
        .map(|flat| {
            (0..shape.len())
                .map(|d| (flat / st[d]) % shape[d])
                .collect()
        })
        .collect()
}

impl Nd {
    /// A new array.
    pub fn new(shape: &[usize], data: Vec<f64>) -> Self {
        assert_eq!(shape.iter().product::<usize>(), data.len());
        Self {
            shape: shape.to_vec(),
            data,
        }
    }

    /// Element at a multi-index.
    pub fn at(&self, idx: &[usize]) -> f64 {
        let st = strides(&self.shape);
        self.data[idx.iter().zip(&st).map(|(i, s)| i * s).sum::<usize>()]
    }

    /// Element at an index of a broadcast shape (aligned right).
    fn at_broadcast(&self, idx: &[usize]) -> f64 {
        let pad = idx.len() - self.shape.len();
        let own: Vec<usize> = self
            .shape
            .iter()
            .enumerate()
            .map(|(d, &n)| if n == 1 { 0 } else { idx[pad + d] })
            .collect();
        self.at(&own)
    }

    fn from_fn(shape: &[usize], f: impl Fn(&[usize]) -> f64) -> Self {
        Nd::new(shape, indices(shape).iter().map(|i| f(i)).collect())
    }
}

/// NumPy broadcast of two shapes.
pub fn broadcast(a: &[usize], b: &[usize]) -> Vec<usize> {
    let r = a.len().max(b.len());
    (0..r)
        .map(|i| {
            let da = if i + a.len() >= r {
                a[i + a.len() - r]
            } else {
                1
            };
            let db = if i + b.len() >= r {
                b[i + b.len() - r]
            } else {
                1
            };
            if da == 1 { db } else { da }
        })
        .collect()
}

/// Elementwise binary op with broadcasting.
pub fn binary(a: &Nd, b: &Nd, f: impl Fn(f64, f64) -> f64) -> Nd {
    let shape = broadcast(&a.shape, &b.shape);
    Nd::from_fn(&shape, |i| f(a.at_broadcast(i), b.at_broadcast(i)))
}

/// Elementwise unary op.
pub fn unary(x: &Nd, f: impl Fn(f64) -> f64) -> Nd {
    Nd::new(&x.shape, x.data.iter().map(|&v| f(v)).collect())
}

/// erf by its Maclaurin series / continued fraction (double precision).
pub fn erf(x: f64) -> f64 {
    // Abramowitz–Stegun 7.1.26 is too coarse; use a series for |x| < 3 and
    // the asymptotic complement beyond.
    if x.abs() < 3.0 {
        let mut sum = x;
        let mut term = x;
        let x2 = x * x;
        for n in 1..200 {
            term *= -x2 / n as f64;
            let add = term / (2 * n + 1) as f64;
            sum += add;
            if add.abs() < 1e-17 {
                break;
            }
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        let s = x.signum();
        let z = x.abs();
        // erfc(z) ≈ e^{-z²}/(z√π) · (1 - 1/(2z²) + 3/(4z⁴))
        let c = (-z * z).exp() / (z * std::f64::consts::PI.sqrt())
            * (1.0 - 1.0 / (2.0 * z * z) + 3.0 / (4.0 * z.powi(4)));
        s * (1.0 - c)
    }
}

/// Batched matmul with transposes and broadcast batch dimensions.
pub fn matmul(a: &Nd, b: &Nd, ta: bool, tb: bool) -> Nd {
    let (ar, br) = (a.shape.len(), b.shape.len());
    let (m, k) = if ta {
        (a.shape[ar - 1], a.shape[ar - 2])
    } else {
        (a.shape[ar - 2], a.shape[ar - 1])
    };
    let n = if tb { b.shape[br - 2] } else { b.shape[br - 1] };
    let batch = broadcast(&a.shape[..ar - 2], &b.shape[..br - 2]);
    let mut shape = batch.clone();
    shape.extend([m, n]);
    Nd::from_fn(&shape, |idx| {
        let bi = &idx[..batch.len()];
        let (i, j) = (idx[batch.len()], idx[batch.len() + 1]);
        let pick = |x: &Nd, r: usize, c: usize, rank: usize| {
            let pad = batch.len() - (rank - 2);
            let mut full: Vec<usize> = (0..rank - 2)
                .map(|d| if x.shape[d] == 1 { 0 } else { bi[pad + d] })
                .collect();
            full.extend([r, c]);
            x.at(&full)
        };
        (0..k)
            .map(|p| {
                let av = if ta {
                    pick(a, p, i, ar)
                } else {
                    pick(a, i, p, ar)
                };
                let bv = if tb {
                    pick(b, j, p, br)
                } else {
                    pick(b, p, j, br)
                };
                av * bv
            })
            .sum()
    })
}

/// Softmax along `axis`; `causal` over the last axis of [.., q, k].
pub fn softmax(x: &Nd, axis: usize, causal: bool) -> Nd {
    let r = x.shape.len();
    Nd::from_fn(&x.shape, |idx| {
        let len = x.shape[axis];
        let allowed = |t: usize| !causal || t <= idx[r - 2] + (x.shape[r - 1] - x.shape[r - 2]);
        if !allowed(idx[axis]) {
            return 0.0;
        }
        let vals: Vec<f64> = (0..len)
            .filter(|&t| allowed(t))
            .map(|t| {
                let mut j = idx.to_vec();
                j[axis] = t;
                x.at(&j)
            })
            .collect();
        let max = vals.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = vals.iter().map(|v| (v - max).exp()).sum();
        (x.at(idx) - max).exp() / sum
    })
}

/// Layer norm (or RMS norm when `rms`) over the last axis.
pub fn norm(x: &Nd, w: Option<&Nd>, b: Option<&Nd>, eps: f64, rms: bool) -> Nd {
    let d = *x.shape.last().unwrap();
    let mut out = x.clone();
    for row in out.data.chunks_mut(d.max(1)) {
        let mean = if rms {
            0.0
        } else {
            row.iter().sum::<f64>() / d as f64
        };
        let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / d as f64;
        for (i, v) in row.iter_mut().enumerate() {
            *v = (*v - mean) / (var + eps).sqrt() * w.map_or(1.0, |w| w.data[i])
                + b.map_or(0.0, |b| b.data[i]);
        }
    }
    out
}

/// Permuted axes.
pub fn permute(x: &Nd, dims: &[usize]) -> Nd {
    let shape: Vec<usize> = dims.iter().map(|&d| x.shape[d]).collect();
    Nd::from_fn(&shape, |idx| {
        let mut src = vec![0; dims.len()];
        for (o, &d) in dims.iter().enumerate() {
            src[d] = idx[o];
        }
        x.at(&src)
    })
}

/// Attention over [b, h, s, d] with grouped heads, optional mask and causality.
pub fn attention(q: &Nd, k: &Nd, v: &Nd, mask: Option<&Nd>, scale: f64, causal: bool) -> Nd {
    let (b, hq, sq, d) = (q.shape[0], q.shape[1], q.shape[2], q.shape[3]);
    let (hk, sk, dv) = (k.shape[1], k.shape[2], v.shape[3]);
    let group = hq / hk;
    let mut out = Nd::new(&[b, hq, sq, dv], vec![0.0; b * hq * sq * dv]);
    for bi in 0..b {
        for h in 0..hq {
            let kh = h / group;
            for i in 0..sq {
                let mut s: Vec<f64> = (0..sk)
                    .map(|j| {
                        let dot: f64 = (0..d)
                            .map(|t| q.at(&[bi, h, i, t]) * k.at(&[bi, kh, j, t]))
                            .sum();
                        dot * scale + mask.map_or(0.0, |m| m.at_broadcast(&[bi, h, i, j]))
                    })
                    .collect();
                let limit = if causal { i + (sk - sq) } else { sk - 1 };
                let max = s[..=limit]
                    .iter()
                    .cloned()
                    .fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = s[..=limit].iter().map(|x| (x - max).exp()).sum();
                for (j, x) in s.iter_mut().enumerate() {
                    *x = if j <= limit {
                        (*x - max).exp() / sum
                    } else {
                        0.0
                    };
                }
                for c in 0..dv {
                    let val: f64 = (0..sk).map(|j| s[j] * v.at(&[bi, kh, j, c])).sum();
                    out.data[((bi * hq + h) * sq + i) * dv + c] = val;
                }
            }
        }
    }
    out
}

/// Rows of `table` picked by `ids`.
pub fn embedding(table: &Nd, ids: &Nd) -> Nd {
    let dim = table.shape[1];
    let mut shape = ids.shape.clone();
    shape.push(dim);
    Nd::from_fn(&shape, |idx| {
        let id = ids.at(&idx[..idx.len() - 1]) as usize;
        table.at(&[id, idx[idx.len() - 1]])
    })
}

/// A slice along `axis`.
pub fn narrow(x: &Nd, axis: usize, start: usize, len: usize) -> Nd {
    let mut shape = x.shape.clone();
    shape[axis] = len;
    Nd::from_fn(&shape, |idx| {
        let mut j = idx.to_vec();
        j[axis] += start;
        x.at(&j)
    })
}

/// Joined along `axis`.
pub fn concat(xs: &[&Nd], axis: usize) -> Nd {
    let mut shape = xs[0].shape.clone();
    shape[axis] = xs.iter().map(|x| x.shape[axis]).sum();
    Nd::from_fn(&shape, |idx| {
        let mut j = idx.to_vec();
        for x in xs {
            if j[axis] < x.shape[axis] {
                return x.at(&j);
            }
            j[axis] -= x.shape[axis];
        }
        unreachable!()
    })
}

/// Rotary embedding over the last axis of [.., seq, dim].
pub fn rope(x: &Nd, offset: usize, theta: f64, interleaved: bool) -> Nd {
    let r = x.shape.len();
    let dim = x.shape[r - 1];
    let half = dim / 2;
    Nd::from_fn(&x.shape, |idx| {
        let pos = (offset + idx[r - 2]) as f64;
        let c = idx[r - 1];
        let (pair, first, other) = if interleaved {
            (c / 2, c % 2 == 0, if c % 2 == 0 { c + 1 } else { c - 1 })
        } else if c < half {
            (c, true, c + half)
        } else {
            (c - half, false, c - half)
        };
        let angle = pos * theta.powf(-2.0 * pair as f64 / dim as f64);
        let mut j = idx.to_vec();
        j[r - 1] = other;
        let (me, partner) = (x.at(idx), x.at(&j));
        if first {
            me * angle.cos() - partner * angle.sin()
        } else {
            partner * angle.sin() + me * angle.cos()
        }
    })
}

/// Index of the maximum along `axis` (first on ties).
pub fn argmax(x: &Nd, axis: usize) -> Nd {
    let mut shape = x.shape.clone();
    shape.remove(axis);
    Nd::from_fn(&shape, |idx| {
        let mut best = (0usize, f64::NEG_INFINITY);
        for t in 0..x.shape[axis] {
            let mut j = idx.to_vec();
            j.insert(axis, t);
            if x.at(&j) > best.1 {
                best = (t, x.at(&j));
            }
        }
        best.0 as f64
    })
}

/// The `k` largest of each last-axis row (largest first, lower index on ties).
pub fn top_k(x: &Nd, k: usize) -> (Nd, Nd) {
    let len = *x.shape.last().unwrap();
    let mut shape = x.shape.clone();
    *shape.last_mut().unwrap() = k;
    let (mut vals, mut idxs) = (Vec::new(), Vec::new());
    for row in x
        .data
        .chunks(len.max(1))
        .take(x.data.len().checked_div(len).unwrap_or(0))
    {
        let mut order: Vec<usize> = (0..len).collect();
        order.sort_by(|&a, &b| row[b].partial_cmp(&row[a]).unwrap().then(a.cmp(&b)));
        for &i in &order[..k] {
            vals.push(row[i]);
            idxs.push(i as f64);
        }
    }
    (Nd::new(&shape, vals), Nd::new(&shape, idxs))
}

/// Mean along `axis`; `mask` covers x's shape up to and including `axis`.
pub fn mean(x: &Nd, axis: usize, mask: Option<&Nd>) -> Nd {
    let mut shape = x.shape.clone();
    shape.remove(axis);
    Nd::from_fn(&shape, |idx| {
        let (mut sum, mut count) = (0.0, 0.0);
        for t in 0..x.shape[axis] {
            let mut j = idx.to_vec();
            j.insert(axis, t);
            if let Some(m) = mask
                && m.at(&j[..=axis]) == 0.0
            {
                continue;
            }
            sum += x.at(&j);
            count += 1.0;
        }
        if count > 0.0 { sum / count } else { 0.0 }
    })
}

/// x / max(‖x‖, eps) along `axis`.
pub fn l2_normalize(x: &Nd, axis: usize, eps: f64) -> Nd {
    Nd::from_fn(&x.shape, |idx| {
        let norm = (0..x.shape[axis])
            .map(|t| {
                let mut j = idx.to_vec();
                j[axis] = t;
                x.at(&j).powi(2)
            })
            .sum::<f64>()
            .sqrt();
        x.at(idx) / norm.max(eps)
    })
}

/// `wasi:tensor-fused`'s decode-attention: per row r at position p, q [b,
/// hq·d] and k [b, hk·d] rotated at p, k and v written at p of copies of
/// the caches [b, hk, cap, d] (each written element passed through `store`:
/// the caches hold the op's dtype, so what it attends over is rounded to
/// it), attention over positions 0..=p. Returns the attended values
/// [b, hq·d] and the two caches.
#[allow(clippy::too_many_arguments)]
pub fn decode_attention(
    q: &Nd,
    k: &Nd,
    v: &Nd,
    keys: &Nd,
    values: &Nd,
    positions: &[usize],
    theta: f64,
    interleaved: bool,
    scale: f64,
    store: impl Fn(f64) -> f64,
) -> (Nd, Nd, Nd) {
    let (b, hk, cap, d) = (keys.shape[0], keys.shape[1], keys.shape[2], keys.shape[3]);
    let hq = q.shape[1] / d;
    let heads = |x: &Nd, h: usize| Nd::new(&[b, h, 1, d], x.data.clone());
    let row_rope = |x: &Nd, r: usize, h: usize| {
        let one = Nd::new(&[1, h, 1, d], x.data[r * h * d..(r + 1) * h * d].to_vec());
        rope(&one, positions[r], theta, interleaved)
    };
    let (mut kc, mut vc) = (keys.clone(), values.clone());
    let mut out = Vec::new();
    for (r, &p) in positions.iter().enumerate() {
        let kr = row_rope(&heads(k, hk), r, hk);
        for h in 0..hk {
            for i in 0..d {
                let at = ((r * hk + h) * cap + p) * d + i;
                kc.data[at] = store(kr.data[h * d + i]);
                vc.data[at] = store(v.data[(r * hk + h) * d + i]);
            }
        }
        let past = |c: &Nd| {
            let row = narrow(c, 0, r, 1);
            narrow(&row, 2, 0, p + 1)
        };
        let qr = row_rope(&heads(q, hq), r, hq);
        out.extend(attention(&qr, &past(&kc), &past(&vc), None, scale, false).data);
    }
    (Nd::new(&[b, hq * d], out), kc, vc)
}
