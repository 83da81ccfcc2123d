//! Products of a few rows with a transposed right operand, `x · Wᵀ` with W
//! stored row-major [n, k] (a `Linear` weight): every output element is the
//! dot product of two contiguous rows, so W is streamed once, unpacked, with
//! all of x's rows against each of W's rows while it is in cache. This is the
//! decode step (one row) and the small-batch case, where packing W for a
//! general kernel would cost more than the arithmetic. Parallel over W's rows.

use rayon::prelude::*;

/// The most rows of x this kernel takes (beyond, a packed kernel wins).
pub const MAX_ROWS: usize = 8;

/// W rows per parallel task (≥ 64 KiB of W at k = 256).
const ROWS_PER_TASK: usize = 64;

/// `dst` (m×n, row-major) = a (m×k, row-major) · wᵀ (w n×k, row-major).
///
/// Panics if `m > MAX_ROWS` or an operand or `dst` has the wrong length.
pub fn matmul_t(dst: &mut [f32], m: usize, n: usize, k: usize, a: &[f32], w: &[f32]) {
    assert!(m <= MAX_ROWS, "skinny: {m} rows");
    assert_eq!(a.len(), m * k, "skinny: a is not m×k");
    assert_eq!(w.len(), n * k, "skinny: w is not n×k");
    assert_eq!(dst.len(), m * n, "skinny: dst is not m×n");
    if m == 0 || n == 0 {
        return;
    }
    // Column-major scratch: task t writes outputs t·ROWS_PER_TASK.. for every row of a.
    let mut cols = vec![0.0f32; n * m];
    let fma = has_fma();
    let task = |(t, out): (usize, &mut [f32])| {
        let j0 = t * ROWS_PER_TASK;
        for (jj, col) in out.chunks_mut(m).enumerate() {
            let wj = &w[(j0 + jj) * k..(j0 + jj + 1) * k];
            dots(wj, a, k, col, fma);
        }
    };
    if n * k >= 1 << 16 {
        cols.par_chunks_mut(ROWS_PER_TASK * m)
            .enumerate()
            .for_each(task);
    } else {
        cols.chunks_mut(ROWS_PER_TASK * m)
            .enumerate()
            .for_each(task);
    }
    for (j, col) in cols.chunks(m).enumerate() {
        for (i, &v) in col.iter().enumerate() {
            dst[i * n + j] = v;
        }
    }
}

/// Whether this CPU has AVX2 and FMA.
fn has_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `out[i] = w · a[i]` for each of the `out.len()` rows of a (each k long);
/// `fma` says [`has_fma`].
fn dots(w: &[f32], a: &[f32], k: usize, out: &mut [f32], fma: bool) {
    #[cfg(target_arch = "x86_64")]
    if fma {
        // SAFETY: the CPU has AVX2 and FMA (the caller checked).
        unsafe { avx2::dots(w, a, k, out) };
        return;
    }
    let _ = fma;
    for (i, o) in out.iter_mut().enumerate() {
        *o = portable_dot(w, &a[i * k..(i + 1) * k]);
    }
}

/// A dot product in eight independent lanes (vectorizes on any target).
fn portable_dot(x: &[f32], y: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (xc, yc) = (x.chunks_exact(8), y.chunks_exact(8));
    let tail: f32 = xc
        .remainder()
        .iter()
        .zip(yc.remainder())
        .map(|(p, q)| p * q)
        .sum();
    for (p, q) in xc.zip(yc) {
        for l in 0..8 {
            acc[l] += p[l] * q[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::MAX_ROWS;
    use std::arch::x86_64::*;

    /// [`super::dots`] with 8-lane FMA: one load of w per step, reused for
    /// every row of a.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dots(w: &[f32], a: &[f32], k: usize, out: &mut [f32]) {
        let rows = out.len();
        debug_assert!(rows <= MAX_ROWS && a.len() >= rows * k && w.len() >= k);
        let body = k - k % 8;
        // SAFETY: every load reads 8 floats at offset p < body ≤ k of a row
        // of length k (w, or row i < rows of a), all in bounds.
        unsafe {
            let mut acc = [_mm256_setzero_ps(); MAX_ROWS];
            let mut p = 0;
            while p < body {
                let wv = _mm256_loadu_ps(w.as_ptr().add(p));
                for (i, s) in acc.iter_mut().enumerate().take(rows) {
                    let av = _mm256_loadu_ps(a.as_ptr().add(i * k + p));
                    *s = _mm256_fmadd_ps(wv, av, *s);
                }
                p += 8;
            }
            for (i, o) in out.iter_mut().enumerate() {
                let mut lanes = [0.0f32; 8];
                _mm256_storeu_ps(lanes.as_mut_ptr(), acc[i]);
                let tail: f32 = (body..k).map(|q| w[q] * a[i * k + q]).sum();
                *o = lanes.iter().sum::<f32>() + tail;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_naive_product() {
        for &(m, n, k) in &[(1, 3, 5), (4, 130, 37), (8, 64, 384), (3, 1000, 17)] {
            let a: Vec<f32> = (0..m * k).map(|i| ((i * 7) % 13) as f32 - 6.0).collect();
            let w: Vec<f32> = (0..n * k).map(|i| ((i * 5) % 11) as f32 - 5.0).collect();
            let mut dst = vec![0.0; m * n];
            matmul_t(&mut dst, m, n, k, &a, &w);
            for i in 0..m {
                for j in 0..n {
                    let want: f32 = (0..k).map(|p| a[i * k + p] * w[j * k + p]).sum();
                    assert_eq!(dst[i * n + j], want, "({m},{n},{k}) at ({i},{j})");
                }
            }
        }
    }
}
