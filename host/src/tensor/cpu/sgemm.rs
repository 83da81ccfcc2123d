//! f32 matrix products for x86-64 CPUs with AVX2 and FMA, written the BLIS
//! way: B is packed in panels sized for L3, A in blocks sized for L2, and a
//! 6×16 register-tile micro-kernel (12 accumulators, two B loads and six
//! broadcasts per step) does the arithmetic. Row blocks run in parallel on
//! the rayon pool; each thread packs its own A block into a reused buffer.
//!
//! [`sgemm`] returns `false` when the CPU lacks AVX2/FMA (or on other
//! architectures) so the caller can fall back to a portable kernel.

/// Rows of the register tile.
const MR: usize = 6;
/// Columns of the register tile (two 8-lane vectors).
const NR: usize = 16;
/// Depth of one packed block (A micro-panel 6 KiB, B micro-panel 16 KiB: L1).
const KC: usize = 256;
/// Most rows of one packed A block (~144 KiB: L2).
const MC_MAX: usize = 144;
/// Most columns of one packed B panel (~4 MiB: L3).
const NC: usize = 4080;

/// A read-only matrix operand: its elements and (row, column) strides.
#[derive(Clone, Copy)]
pub struct Operand<'a> {
    /// The elements; every (i·rs + j·cs) inside the matrix's extent is in bounds.
    pub data: &'a [f32],
    /// Distance between rows.
    pub rs: usize,
    /// Distance between columns.
    pub cs: usize,
}

/// Whether this CPU runs [`sgemm`].
pub fn supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `dst` (m×n, row-major) = a (m×k) · b (k×n), parallel over row blocks.
/// Returns `false`, touching nothing, when the CPU is not [`supported`].
///
/// Panics if an operand does not span its extent or `dst` is not m×n.
pub fn sgemm(dst: &mut [f32], m: usize, n: usize, k: usize, a: Operand, b: Operand) -> bool {
    assert_eq!(dst.len(), m * n, "sgemm: destination is not m×n");
    if m == 0 || n == 0 {
        return true;
    }
    if k == 0 {
        dst.fill(0.0);
        return true;
    }
    assert!(
        a.data.len() > (m - 1) * a.rs + (k - 1) * a.cs,
        "sgemm: a too short"
    );
    assert!(
        b.data.len() > (k - 1) * b.rs + (n - 1) * b.cs,
        "sgemm: b too short"
    );
    #[cfg(target_arch = "x86_64")]
    if supported() {
        // SAFETY: AVX2 and FMA are present (checked just above).
        unsafe { avx2::sgemm(dst, m, n, k, a, b) };
        return true;
    }
    false
}

/// Rows per parallel block: at most [`MC_MAX`], a multiple of [`MR`], and
/// chosen so the block count is a multiple of the thread count when that is
/// possible without going below one tile per block.
fn row_block(m: usize, threads: usize) -> usize {
    let threads = threads.max(1);
    let min_blocks = m.div_ceil(MC_MAX);
    let blocks = min_blocks.div_ceil(threads) * threads;
    let mc = m.div_ceil(blocks).div_ceil(MR) * MR;
    mc.clamp(MR, MC_MAX)
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{KC, MR, NC, NR, Operand};
    use rayon::prelude::*;
    use std::arch::x86_64::*;
    use std::cell::RefCell;

    /// Packed B panels (up to 4 MiB each) kept for reuse: callers are
    /// blocking-pool threads that come and go, so the buffers are pooled
    /// here rather than per thread; at most [`B_POOL_MAX`] are kept.
    static B_POOL: std::sync::Mutex<Vec<Vec<f32>>> = std::sync::Mutex::new(Vec::new());
    /// Most packed B panels kept between calls.
    const B_POOL_MAX: usize = 4;

    thread_local! {
        /// Each thread's packed A block, reused across calls.
        static A_PACK: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    }

    /// A raw pointer that may cross into rayon tasks (each task writes a
    /// disjoint row range through it).
    #[derive(Clone, Copy)]
    struct SendPtr(*mut f32);
    // SAFETY: tasks write disjoint rows; the owner outlives the parallel scope.
    unsafe impl Send for SendPtr {}
    // SAFETY: as above.
    unsafe impl Sync for SendPtr {}

    impl SendPtr {
        /// The pointer (a method, so closures capture the whole wrapper).
        fn get(self) -> *mut f32 {
            self.0
        }
    }

    /// # Safety
    /// AVX2 and FMA must be available; operands span their extents.
    pub unsafe fn sgemm(dst: &mut [f32], m: usize, n: usize, k: usize, a: Operand, b: Operand) {
        let mc = super::row_block(m, rayon::current_num_threads());
        // Column panels of equal width (a multiple of NR) rather than NC and a sliver.
        let nc_max = n.div_ceil(n.div_ceil(NC)).div_ceil(NR) * NR;
        let mut b_pack = B_POOL
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_default();
        let need = KC * nc_max;
        if b_pack.len() < need {
            b_pack.resize(need, 0.0);
        }
        let c = SendPtr(dst.as_mut_ptr());
        for jc in (0..n).step_by(nc_max) {
            let nc = nc_max.min(n - jc);
            for pc in (0..k).step_by(KC) {
                let kc = KC.min(k - pc);
                let panels = nc.div_ceil(NR);
                b_pack[..panels * kc * NR]
                    .par_chunks_mut(kc * NR)
                    .enumerate()
                    .for_each(|(p, out)| pack_b(out, b, pc, jc + p * NR, NR.min(nc - p * NR)));
                let b_packed = &b_pack[..panels * kc * NR];
                let blocks = m.div_ceil(mc);
                (0..blocks).into_par_iter().for_each(|blk| {
                    let ic = blk * mc;
                    let rows = mc.min(m - ic);
                    A_PACK.with(|buf| {
                        let mut buf = buf.borrow_mut();
                        let need = rows.div_ceil(MR) * MR * kc;
                        if buf.len() < need {
                            buf.resize(need, 0.0);
                        }
                        pack_a(&mut buf[..need], a, ic, rows, pc, kc);
                        // SAFETY: this block writes only rows ic..ic+rows of
                        // the m×n destination, which no other task touches.
                        unsafe {
                            macro_kernel(
                                &buf[..need],
                                b_packed,
                                c.get(),
                                n,
                                ic,
                                rows,
                                jc,
                                nc,
                                kc,
                                pc > 0,
                            )
                        };
                    });
                });
            }
        }
        let mut pool = B_POOL.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < B_POOL_MAX {
            pool.push(b_pack);
        }
    }

    /// Packs rows `ic..ic+rows`, depth `pc..pc+kc` of A into MR-row
    /// micro-panels laid out [panel][p][MR], zero-padding the last panel.
    fn pack_a(out: &mut [f32], a: Operand, ic: usize, rows: usize, pc: usize, kc: usize) {
        for (t, panel) in out.chunks_exact_mut(kc * MR).enumerate() {
            let r0 = ic + t * MR;
            let mr = MR.min(ic + rows - r0);
            if a.cs == 1 && mr == MR {
                let rows: [&[f32]; MR] =
                    std::array::from_fn(|i| &a.data[(r0 + i) * a.rs + pc..][..kc]);
                for (p, dst) in panel.chunks_exact_mut(MR).enumerate() {
                    for i in 0..MR {
                        dst[i] = rows[i][p];
                    }
                }
            } else if a.rs == 1 && mr == MR {
                for (p, dst) in panel.chunks_exact_mut(MR).enumerate() {
                    let at = r0 + (pc + p) * a.cs;
                    dst.copy_from_slice(&a.data[at..at + MR]);
                }
            } else {
                for (p, dst) in panel.chunks_exact_mut(MR).enumerate() {
                    for (i, d) in dst.iter_mut().enumerate() {
                        *d = if i < mr {
                            a.data[(r0 + i) * a.rs + (pc + p) * a.cs]
                        } else {
                            0.0
                        };
                    }
                }
            }
        }
    }

    /// Packs depth `pc..pc+kc`, columns `j0..j0+cols` of B into one NR-column
    /// micro-panel laid out [p][NR], zero-padding missing columns.
    fn pack_b(out: &mut [f32], b: Operand, pc: usize, j0: usize, cols: usize) {
        if b.rs == 1 && b.cs != 1 {
            // SAFETY: pack_b runs only inside `sgemm`, which needs AVX2.
            unsafe { pack_b_transposed(out, b, pc, j0, cols) };
            return;
        }
        for (p, dst) in out.chunks_exact_mut(NR).enumerate() {
            let row = (pc + p) * b.rs;
            if b.cs == 1 && cols == NR {
                dst.copy_from_slice(&b.data[row + j0..row + j0 + NR]);
            } else {
                for (j, d) in dst.iter_mut().enumerate() {
                    *d = if j < cols {
                        b.data[row + (j0 + j) * b.cs]
                    } else {
                        0.0
                    };
                }
            }
        }
    }

    /// [`pack_b`] for a transposed row-major B (x·Wᵀ, q·kᵀ), where each
    /// column is contiguous in depth: 8×8 blocks are loaded along the
    /// columns and transposed in registers (a scalar gather per element
    /// cost ~14% of a batch-32 embedding on the CPU).
    ///
    /// # Safety
    /// AVX2 must be available.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn pack_b_transposed(out: &mut [f32], b: Operand, pc: usize, j0: usize, cols: usize) {
        let kc = out.len() / NR;
        let columns: [&[f32]; NR] = std::array::from_fn(|j| {
            if j < cols {
                &b.data[(j0 + j) * b.cs + pc..][..kc]
            } else {
                &[]
            }
        });
        let full = kc / 8 * 8;
        for half in 0..NR / 8 {
            let cols8 = &columns[half * 8..half * 8 + 8];
            for p0 in (0..full).step_by(8) {
                // SAFETY: every non-empty column holds kc ≥ p0 + 8 elements;
                // each store writes 8 floats at (p0+i)·NR + half·8 < kc·NR.
                unsafe {
                    let load = |c: &[f32]| {
                        if c.is_empty() {
                            _mm256_setzero_ps()
                        } else {
                            _mm256_loadu_ps(c.as_ptr().add(p0))
                        }
                    };
                    let rows = transpose8([
                        load(cols8[0]),
                        load(cols8[1]),
                        load(cols8[2]),
                        load(cols8[3]),
                        load(cols8[4]),
                        load(cols8[5]),
                        load(cols8[6]),
                        load(cols8[7]),
                    ]);
                    for (i, r) in rows.into_iter().enumerate() {
                        _mm256_storeu_ps(out.as_mut_ptr().add((p0 + i) * NR + half * 8), r);
                    }
                }
            }
        }
        for p in full..kc {
            for (j, column) in columns.iter().enumerate() {
                out[p * NR + j] = column.get(p).copied().unwrap_or(0.0);
            }
        }
    }

    /// Transposes an 8×8 block held as 8 row vectors.
    #[target_feature(enable = "avx2,fma")]
    fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
        let t0 = _mm256_unpacklo_ps(r[0], r[1]);
        let t1 = _mm256_unpackhi_ps(r[0], r[1]);
        let t2 = _mm256_unpacklo_ps(r[2], r[3]);
        let t3 = _mm256_unpackhi_ps(r[2], r[3]);
        let t4 = _mm256_unpacklo_ps(r[4], r[5]);
        let t5 = _mm256_unpackhi_ps(r[4], r[5]);
        let t6 = _mm256_unpacklo_ps(r[6], r[7]);
        let t7 = _mm256_unpackhi_ps(r[6], r[7]);
        let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        [
            _mm256_permute2f128_ps::<0x20>(u0, u4),
            _mm256_permute2f128_ps::<0x20>(u1, u5),
            _mm256_permute2f128_ps::<0x20>(u2, u6),
            _mm256_permute2f128_ps::<0x20>(u3, u7),
            _mm256_permute2f128_ps::<0x31>(u0, u4),
            _mm256_permute2f128_ps::<0x31>(u1, u5),
            _mm256_permute2f128_ps::<0x31>(u2, u6),
            _mm256_permute2f128_ps::<0x31>(u3, u7),
        ]
    }

    /// Runs the micro-kernel over one packed A block and the packed B panel,
    /// B micro-panels outermost so each stays in L1 across the A panels.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn macro_kernel(
        a_pack: &[f32],
        b_pack: &[f32],
        c: *mut f32,
        ldc: usize,
        ic: usize,
        rows: usize,
        jc: usize,
        nc: usize,
        kc: usize,
        accumulate: bool,
    ) {
        for (jp, b_panel) in b_pack.chunks_exact(kc * NR).enumerate() {
            let j0 = jc + jp * NR;
            let nr = NR.min(jc + nc - j0);
            for (ip, a_panel) in a_pack.chunks_exact(kc * MR).enumerate() {
                let i0 = ic + ip * MR;
                let mr = MR.min(ic + rows - i0);
                // SAFETY: (i0, j0) lies inside the destination; full tiles
                // write MR×NR elements in bounds, partial ones go via `edge`.
                unsafe {
                    let tile = c.add(i0 * ldc + j0);
                    if mr == MR && nr == NR {
                        kernel(
                            kc,
                            a_panel.as_ptr(),
                            b_panel.as_ptr(),
                            tile,
                            ldc,
                            accumulate,
                        );
                    } else {
                        let mut edge = [0.0f32; MR * NR];
                        kernel(
                            kc,
                            a_panel.as_ptr(),
                            b_panel.as_ptr(),
                            edge.as_mut_ptr(),
                            NR,
                            false,
                        );
                        for i in 0..mr {
                            for j in 0..nr {
                                let out = tile.add(i * ldc + j);
                                let v = edge[i * NR + j];
                                *out = if accumulate { *out + v } else { v };
                            }
                        }
                    }
                }
            }
        }
    }

    /// c[0..MR][0..NR] (row stride ldc) = (c +) a_panel · b_panel over kc.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn kernel(kc: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize, acc: bool) {
        // SAFETY: the packed panels hold kc·MR and kc·NR floats; c spans
        // MR rows of NR floats at stride ldc (the caller's contract).
        unsafe {
            for i in 0..MR {
                _mm_prefetch::<_MM_HINT_T0>(c.add(i * ldc) as *const i8);
                _mm_prefetch::<_MM_HINT_T0>(c.add(i * ldc + NR - 1) as *const i8);
            }
            let mut r = [_mm256_setzero_ps(); 2 * MR];
            let (mut a, mut b) = (a, b);
            let step = |a: *const f32, b: *const f32, r: &mut [__m256; 2 * MR]| {
                let b0 = _mm256_loadu_ps(b);
                let b1 = _mm256_loadu_ps(b.add(8));
                for i in 0..MR {
                    let ai = _mm256_broadcast_ss(&*a.add(i));
                    r[2 * i] = _mm256_fmadd_ps(ai, b0, r[2 * i]);
                    r[2 * i + 1] = _mm256_fmadd_ps(ai, b1, r[2 * i + 1]);
                }
            };
            for _ in 0..kc / 4 {
                _mm_prefetch::<_MM_HINT_T0>(a.add(MR * 16) as *const i8);
                step(a, b, &mut r);
                step(a.add(MR), b.add(NR), &mut r);
                step(a.add(2 * MR), b.add(2 * NR), &mut r);
                step(a.add(3 * MR), b.add(3 * NR), &mut r);
                a = a.add(4 * MR);
                b = b.add(4 * NR);
            }
            for _ in 0..kc % 4 {
                step(a, b, &mut r);
                a = a.add(MR);
                b = b.add(NR);
            }
            for i in 0..MR {
                let row = c.add(i * ldc);
                let (mut lo, mut hi) = (r[2 * i], r[2 * i + 1]);
                if acc {
                    lo = _mm256_add_ps(lo, _mm256_loadu_ps(row));
                    hi = _mm256_add_ps(hi, _mm256_loadu_ps(row.add(8)));
                }
                _mm256_storeu_ps(row, lo);
                _mm256_storeu_ps(row.add(8), hi);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(m: usize, n: usize, k: usize, a: Operand, b: Operand) -> Vec<f64> {
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k)
                    .map(|p| {
                        a.data[i * a.rs + p * a.cs] as f64 * b.data[p * b.rs + j * b.cs] as f64
                    })
                    .sum();
            }
        }
        out
    }

    #[test]
    fn matches_reference_on_ragged_shapes_and_layouts() {
        if !supported() {
            eprintln!("sgemm: CPU lacks AVX2/FMA, skipped");
            return;
        }
        let mut seed = 0x2545_f491_u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        for &(m, n, k) in &[
            (1, 1, 1),
            (7, 17, 5),
            (13, 33, 300),
            (150, 70, 513),
            (300, 4100, 3),
        ] {
            let av: Vec<f32> = (0..m * k).map(|_| next()).collect();
            let bv: Vec<f32> = (0..k * n).map(|_| next()).collect();
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                let a = Operand {
                    data: &av,
                    rs: if ta { 1 } else { k },
                    cs: if ta { m } else { 1 },
                };
                let b = Operand {
                    data: &bv,
                    rs: if tb { 1 } else { n },
                    cs: if tb { k } else { 1 },
                };
                let mut out = vec![f32::NAN; m * n];
                assert!(sgemm(&mut out, m, n, k, a, b));
                let want = reference(m, n, k, a, b);
                for (g, w) in out.iter().zip(&want) {
                    assert!(
                        (*g as f64 - w).abs() <= 1e-5 * (k as f64).sqrt() + 1e-6,
                        "{m}x{n}x{k} {ta} {tb}: {g} vs {w}"
                    );
                }
            }
        }
    }

    #[test]
    fn row_blocks_balance_threads() {
        assert_eq!(row_block(1024, 2) % MR, 0);
        assert_eq!(1024usize.div_ceil(row_block(1024, 2)) % 2, 0);
        assert!(row_block(4096, 2) <= MC_MAX);
        assert_eq!(row_block(1, 8), MR);
    }
}
