//! Matrix products on f32 and attention built from them. Large single
//! products use [`sgemm`] (this crate's AVX2/FMA kernel, parallel on the
//! rayon pool; measured on par with numpy's OpenBLAS where `gemm` and
//! `matrixmultiply` reached 0.75–0.85×) or `gemm` on CPUs without AVX2;
//! small and batched products run single-threaded `gemm` kernels, one batch
//! entry per task.

use super::math::softmax_last;
use super::sgemm;
use super::skinny;
use crate::tensor::backend::MatmulPlan;
use crate::tensor::layout::{broadcast_strides, strides};
use gemm::Parallelism;
use rayon::prelude::*;

/// Multiply-adds below which a product runs on one thread.
const PAR_FLOPS: usize = 1 << 20;

/// One m×n = (m×k)·(k×n) product into `dst`, with operand strides given as
/// (row stride, column stride).
#[allow(clippy::too_many_arguments)]
fn gemm_into(
    dst: &mut [f32],
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    a_strides: (usize, usize),
    b: &[f32],
    b_strides: (usize, usize),
    par: Parallelism,
) {
    debug_assert_eq!(dst.len(), m * n);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        dst.fill(0.0);
        return;
    }
    // SAFETY: every index gemm touches is (i·rs + p·cs) for i < rows and p <
    // cols of each operand; the caller passes slices of exactly those extents
    // (checked in debug builds below) and `dst` is m×n row-major, uniquely borrowed.
    debug_assert!(a.len() > (m - 1) * a_strides.0 + (k - 1) * a_strides.1);
    debug_assert!(b.len() > (k - 1) * b_strides.0 + (n - 1) * b_strides.1);
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            a_strides.1 as isize,
            a_strides.0 as isize,
            b.as_ptr(),
            b_strides.1 as isize,
            b_strides.0 as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

/// Rows and columns from which a large product uses [`sgemm`] (below that
/// its 6×16 tiles would be mostly padding).
const SGEMM_MIN_DIM: usize = 64;

/// One large m×n = (m×k)·(k×n) product into `dst` using every core: this
/// crate's AVX2 kernel where the CPU has it, else `gemm` on the rayon pool.
#[allow(clippy::too_many_arguments)]
fn large_gemm_into(
    dst: &mut [f32],
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    a_strides: (usize, usize),
    b: &[f32],
    b_strides: (usize, usize),
) {
    if m >= SGEMM_MIN_DIM && n >= SGEMM_MIN_DIM {
        let a_op = sgemm::Operand {
            data: a,
            rs: a_strides.0,
            cs: a_strides.1,
        };
        let b_op = sgemm::Operand {
            data: b,
            rs: b_strides.0,
            cs: b_strides.1,
        };
        if sgemm::sgemm(dst, m, n, k, a_op, b_op) {
            return;
        }
    }
    gemm_into(
        dst,
        m,
        n,
        k,
        a,
        a_strides,
        b,
        b_strides,
        Parallelism::Rayon(0),
    );
}

/// Batched product per `plan`; `a_shape`/`b_shape` are the operands' shapes.
pub fn matmul(
    a: &[f32],
    a_shape: &[usize],
    b: &[f32],
    b_shape: &[usize],
    plan: &MatmulPlan,
) -> Vec<f32> {
    let MatmulPlan { m, n, k, .. } = *plan;
    let batch: usize = plan.batch.iter().product();
    let mut out = vec![0.0f32; batch * m * n];
    if out.is_empty() {
        return out;
    }
    if b_shape.len() == 2 && !plan.transpose_a {
        // One shared right operand (a weight) and a row-major left one: the
        // whole batch is a single (batch·m)×k product, W read once.
        product(&mut out, batch * m, n, k, a, b, plan.transpose_b);
        return out;
    }
    let ops = Operands::new(a, a_shape, b, b_shape, plan);
    if batch > 1 && m * n * k < PAR_FLOPS * 4 {
        out.par_chunks_mut(m * n)
            .enumerate()
            .for_each(|(bi, dst)| ops.product(bi, dst, Parallelism::None));
    } else {
        for (bi, dst) in out.chunks_mut(m * n).enumerate() {
            if m * n * k >= PAR_FLOPS {
                let (a, b) = ops.matrices(bi);
                large_gemm_into(dst, m, n, k, a, ops.a_st, b, ops.b_st);
            } else {
                ops.product(bi, dst, Parallelism::None);
            }
        }
    }
    out
}

/// Both operands of a broadcast batched product, and where each batch
/// element's matrices lie.
struct Operands<'a> {
    a: &'a [f32],
    b: &'a [f32],
    plan: &'a MatmulPlan,
    /// Batch strides of each operand (in matrices) and of the output.
    sa: Vec<usize>,
    sb: Vec<usize>,
    out_strides: Vec<usize>,
    /// Elements per matrix of each operand.
    a_mat: usize,
    b_mat: usize,
    /// (row, column) strides of each matrix.
    a_st: (usize, usize),
    b_st: (usize, usize),
}

impl<'a> Operands<'a> {
    fn new(
        a: &'a [f32],
        a_shape: &[usize],
        b: &'a [f32],
        b_shape: &[usize],
        plan: &'a MatmulPlan,
    ) -> Self {
        let (ar, br) = (a_shape.len(), b_shape.len());
        let (m, n, k) = (plan.m, plan.n, plan.k);
        Self {
            a,
            b,
            plan,
            sa: broadcast_strides(&batch_dims(a_shape), &plan.batch),
            sb: broadcast_strides(&batch_dims(b_shape), &plan.batch),
            out_strides: strides(&plan.batch),
            a_mat: a_shape[ar - 2] * a_shape[ar - 1],
            b_mat: b_shape[br - 2] * b_shape[br - 1],
            a_st: if plan.transpose_a { (1, m) } else { (k, 1) },
            b_st: if plan.transpose_b { (1, k) } else { (n, 1) },
        }
    }

    /// The two matrices of batch element `bi`.
    fn matrices(&self, bi: usize) -> (&'a [f32], &'a [f32]) {
        let (mut oa, mut ob) = (0, 0);
        for d in 0..self.plan.batch.len() {
            let idx = (bi / self.out_strides[d]) % self.plan.batch[d];
            oa += idx * self.sa[d];
            ob += idx * self.sb[d];
        }
        let (oa, ob) = (oa * self.a_mat, ob * self.b_mat);
        (&self.a[oa..oa + self.a_mat], &self.b[ob..ob + self.b_mat])
    }

    /// Batch element `bi`'s product into `dst`.
    fn product(&self, bi: usize, dst: &mut [f32], par: Parallelism) {
        let MatmulPlan { m, n, k, .. } = *self.plan;
        let (a, b) = self.matrices(bi);
        gemm_into(dst, m, n, k, a, self.a_st, b, self.b_st, par);
    }
}

/// `dst` (m×n) = a (m×k, row-major) · b, b stored k×n or, `transpose_b`,
/// n×k: [`skinny`] for few rows against a transposed b, else [`sgemm`] (or
/// `gemm` on all cores) for large products, single-threaded `gemm` for small.
fn product(dst: &mut [f32], m: usize, n: usize, k: usize, a: &[f32], b: &[f32], transpose_b: bool) {
    let b_st = if transpose_b { (1, k) } else { (n, 1) };
    if transpose_b && m <= skinny::MAX_ROWS {
        skinny::matmul_t(dst, m, n, k, a, b);
    } else if m * n * k >= PAR_FLOPS {
        large_gemm_into(dst, m, n, k, a, (k, 1), b, b_st);
    } else {
        gemm_into(dst, m, n, k, a, (k, 1), b, b_st, Parallelism::None);
    }
}

/// The batch dimensions of a matrix operand's shape.
fn batch_dims(shape: &[usize]) -> Vec<usize> {
    shape[..shape.len() - 2].to_vec()
}

/// Shapes of the attention operands.
pub struct AttentionDims {
    /// Batch.
    pub b: usize,
    /// Query heads.
    pub hq: usize,
    /// Key/value heads.
    pub hk: usize,
    /// Query length.
    pub sq: usize,
    /// Key length.
    pub sk: usize,
    /// Query/key width.
    pub d: usize,
    /// Value width.
    pub dv: usize,
}

/// softmax(q·kᵀ·scale + mask)·v per (batch, head); `mask` is given with its
/// broadcast strides over [b, hq, sq, sk].
pub fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    mask: Option<(&[f32], [usize; 4])>,
    dims: &AttentionDims,
    scale: f32,
    causal: bool,
) -> Vec<f32> {
    let AttentionDims { b, hq, sq, dv, .. } = *dims;
    let mut out = vec![0.0f32; b * hq * sq * dv];
    if out.is_empty() {
        return out;
    }
    let att = Attention {
        q,
        k,
        v,
        mask,
        dims,
        scale,
        causal,
    };
    let head = |(bh, dst): (usize, &mut [f32])| att.head(bh, dst);
    if b * hq > 1 {
        out.par_chunks_mut(sq * dv).enumerate().for_each(head);
    } else {
        out.chunks_mut(sq * dv).enumerate().for_each(head);
    }
    out
}

/// The operands of one attention call.
struct Attention<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    mask: Option<(&'a [f32], [usize; 4])>,
    dims: &'a AttentionDims,
    scale: f32,
    causal: bool,
}

impl Attention<'_> {
    /// Head `bh` (batch · heads + head) into `dst` (sq × dv).
    fn head(&self, bh: usize, dst: &mut [f32]) {
        let AttentionDims {
            hq,
            hk,
            sq,
            sk,
            d,
            dv,
            ..
        } = *self.dims;
        let (bi, h) = (bh / hq, bh % hq);
        let kh = h / (hq / hk);
        let qo = bh * sq * d;
        let ko = (bi * hk + kh) * sk * d;
        let vo = (bi * hk + kh) * sk * dv;
        let mut scores = vec![0.0f32; sq * sk];
        let (q, k) = (&self.q[qo..qo + sq * d], &self.k[ko..ko + sk * d]);
        gemm_into(
            &mut scores,
            sq,
            sk,
            d,
            q,
            (d, 1),
            k,
            (1, d),
            Parallelism::None,
        );
        for i in 0..sq {
            for j in 0..sk {
                let s = &mut scores[i * sk + j];
                *s *= self.scale;
                if let Some((m, st)) = self.mask {
                    *s += m[bi * st[0] + h * st[1] + i * st[2] + j * st[3]];
                }
            }
        }
        let probs = softmax_last(&scores, sk, self.causal.then_some(sq));
        let v = &self.v[vo..vo + sk * dv];
        gemm_into(
            dst,
            sq,
            dv,
            sk,
            &probs,
            (sk, 1),
            v,
            (dv, 1),
            Parallelism::None,
        );
    }
}
