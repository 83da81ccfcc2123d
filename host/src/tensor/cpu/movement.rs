//! Data movement on host memory: permute, narrow, concat, gather, and the
//! row walk under broadcast strides the elementwise kernels share. Generic
//! over the element type, so every dtype moves the same way.

use crate::tensor::layout::strides;

/// Calls `f(offset_a, offset_b, out_index_of_row_start)` once per row (all
/// dimensions but the last) of `out`, with the element offsets of each
/// operand under broadcast strides `sa` and `sb`.
pub fn for_each_row(
    out: &[usize],
    sa: &[usize],
    sb: &[usize],
    mut f: impl FnMut(usize, usize, usize),
) {
    let rank = out.len();
    if rank == 0 {
        f(0, 0, 0);
        return;
    }
    let last = out[rank - 1];
    let rows: usize = out[..rank - 1].iter().product();
    if rows == 0 || last == 0 {
        return;
    }
    let mut idx = vec![0usize; rank - 1];
    let (mut oa, mut ob) = (0usize, 0usize);
    for row in 0..rows {
        f(oa, ob, row * last);
        // Increment the multi-index, updating offsets incrementally.
        for d in (0..rank - 1).rev() {
            idx[d] += 1;
            oa += sa[d];
            ob += sb[d];
            if idx[d] < out[d] {
                break;
            }
            oa -= sa[d] * out[d];
            ob -= sb[d] * out[d];
            idx[d] = 0;
        }
    }
}

/// `x` (of `shape`) with its axes reordered by `dims`.
pub fn permute<T: Copy>(x: &[T], shape: &[usize], dims: &[usize]) -> Vec<T> {
    let src = strides(shape);
    let out_shape: Vec<usize> = dims.iter().map(|&d| shape[d]).collect();
    let perm_strides: Vec<usize> = dims.iter().map(|&d| src[d]).collect();
    let n = x.len();
    let mut out = Vec::with_capacity(n);
    if n == 0 {
        return out;
    }
    let zeros = vec![0; out_shape.len()];
    let rank = out_shape.len();
    if rank == 0 {
        out.push(x[0]);
        return out;
    }
    let inner_stride = perm_strides[rank - 1];
    let last = out_shape[rank - 1];
    for_each_row(&out_shape, &perm_strides, &zeros, |base, _, _| {
        if inner_stride == 1 {
            out.extend_from_slice(&x[base..base + last]);
        } else {
            out.extend((0..last).map(|j| x[base + j * inner_stride]));
        }
    });
    out
}

/// `len` entries of `axis` from `start`.
pub fn narrow<T: Copy>(x: &[T], shape: &[usize], axis: usize, start: usize, len: usize) -> Vec<T> {
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let dim = shape[axis];
    let mut out = Vec::with_capacity(outer * len * inner);
    for o in 0..outer {
        let base = (o * dim + start) * inner;
        out.extend_from_slice(&x[base..base + len * inner]);
    }
    out
}

/// Joins `parts` (each with its shape) along `axis`.
pub fn concat<T: Copy>(parts: &[(&[T], &[usize])], axis: usize) -> Vec<T> {
    let shape = parts[0].1;
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let total: usize = parts.iter().map(|(x, _)| x.len()).sum();
    let mut out = Vec::with_capacity(total);
    for o in 0..outer {
        for (x, s) in parts {
            let chunk = s[axis] * inner;
            out.extend_from_slice(&x[o * chunk..(o + 1) * chunk]);
        }
    }
    out
}

/// Rows of `table` (rows × `dim`) picked by `ids` (already range-checked).
pub fn gather<T: Copy>(table: &[T], dim: usize, ids: &[i64]) -> Vec<T> {
    let mut out = Vec::with_capacity(ids.len() * dim);
    for &id in ids {
        let r = id as usize;
        out.extend_from_slice(&table[r * dim..(r + 1) * dim]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permute_transposes() {
        let x: Vec<i32> = (0..6).collect();
        assert_eq!(permute(&x, &[2, 3], &[1, 0]), vec![0, 3, 1, 4, 2, 5]);
        assert_eq!(narrow(&x, &[2, 3], 1, 1, 2), vec![1, 2, 4, 5]);
        assert_eq!(
            concat(&[(&x[..3], &[1, 3][..]), (&x[3..], &[1, 3][..])], 0),
            x
        );
    }
}
