//! What every kernel launch shares: the kernel-side strided walk
//! ([`Dims`]), launch shapes, kernel-name suffixes, driver-error mapping,
//! and the `launch!` macro.

use crate::tensor::dtype::DType;
use crate::tensor::error::TensorError;
use cudarc::driver::{DeviceRepr, LaunchConfig};

/// Kernel-side `Dims` (kernels/tensor.cu): a strided walk of up to 8 axes.
#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct Dims {
    rank: i32,
    shape: [i64; MAX_RANK],
    sa: [i64; MAX_RANK],
    sb: [i64; MAX_RANK],
}

// SAFETY: plain-old-data with the C layout the kernels declare.
unsafe impl DeviceRepr for Dims {}

pub(super) const MAX_RANK: usize = 8;
/// Threads per block of every kernel (the reductions assume 256).
pub(super) const BLOCK: u32 = 256;
/// Most rows the `matvec_t` kernels take (`MATVEC_ROWS` in kernels/tensor.cu).
pub(super) const MATVEC_ROWS: usize = 8;
/// Warps per output column of the `matvec_t` kernels (`MATVEC_SPLIT`).
pub(super) const MATVEC_SPLIT: usize = 4;

/// Rows and columns each block of the `matmul_t` kernels computes
/// (`MT_ROWS`, `MT_COLS` in kernels/tensor.cu).
pub(super) const TILE: (usize, usize) = (64, 16);

/// Width of the k-slices `matmul_t` stages (`MT_K`).
const TILE_K: usize = 64;
/// Blocks a split `matmul_t` aims for at most: one a streaming
/// multiprocessor on an H100 (132). Measured there (tensor-probe
/// `/bench/ops`, docs/PERFORMANCE.md): two blocks sharing one, or a second
/// wave, cost more than the shorter walk along k saves.
const SPLIT_BLOCKS: usize = 132;
/// Most parts k is split into.
const MAX_SPLIT: usize = 6;
/// Most partial tiles (blocks) of one split product, and tickets (tiles):
/// what a lane's scratch holds ([`super::tenant::Lane::split_scratch`]).
pub(super) const SPLIT_TILES: usize = SPLIT_BLOCKS;
/// Bytes of a lane's split scratch: the tickets, then the partial tiles.
pub(super) const SPLIT_SCRATCH: usize = SPLIT_TILES * 4 * (1 + TILE.0 * TILE.1);

/// Which kernel a product of `rows` rows by a weight stored [n, k] runs.
#[derive(Debug, PartialEq)]
pub(super) enum Product {
    /// `matvec_t`: up to [`MATVEC_ROWS`] rows, each block reading its
    /// columns of the weight once.
    Matvec,
    /// `matmul_t`: up to one tile of rows (64) while the product is small (at most 2²⁸
    /// multiply-adds: a decode step's projections, not its logits), where
    /// issuing a cuBLAS call costs the CPU more (14–32 µs at 16–64 rows,
    /// docs/PERFORMANCE.md) than the GPU spends on the product. A narrow
    /// weight's few tiles also split k over more blocks ([`split_k`]).
    Tiled,
    /// cuBLAS: its tiled kernels win past that.
    Cublas,
}

/// The kernel for a product of `rows` rows by a weight stored [n, k].
pub(super) fn product(rows: usize, n: usize, k: usize) -> Product {
    if rows <= MATVEC_ROWS {
        Product::Matvec
    } else if rows <= TILE.0 && rows.saturating_mul(n).saturating_mul(k) <= 1 << 28 {
        Product::Tiled
    } else {
        Product::Cublas
    }
}

/// How `matmul_t` splits k for `tiles` output tiles: (parts, the k each
/// part sums, a multiple of the slice width). As many parts as keep the
/// blocks within [`SPLIT_BLOCKS`], each walking at least two slices; one
/// part when the tiles alone come near that.
pub(super) fn split_k(tiles: usize, k: usize) -> (u32, usize) {
    let slices = k.div_ceil(TILE_K);
    let want = (SPLIT_BLOCKS / tiles.max(1))
        .min(slices / 2)
        .clamp(1, MAX_SPLIT);
    let per = slices.div_ceil(want);
    let parts = slices.div_ceil(per);
    if parts == 1 || tiles * parts > SPLIT_TILES {
        return (1, slices * TILE_K);
    }
    (parts as u32, per * TILE_K)
}

impl Dims {
    /// A walk over `shape` with strides `sa` and `sb`; None past 8 axes.
    pub(super) fn new(shape: &[usize], sa: &[usize], sb: &[usize]) -> Option<Self> {
        if shape.len() > MAX_RANK {
            return None;
        }
        let mut d = Dims {
            rank: shape.len() as i32,
            shape: [1; MAX_RANK],
            sa: [0; MAX_RANK],
            sb: [0; MAX_RANK],
        };
        for i in 0..shape.len() {
            d.shape[i] = shape[i] as i64;
            d.sa[i] = sa[i] as i64;
            d.sb[i] = sb[i] as i64;
        }
        Some(d)
    }
}

pub(super) fn cuda_err(what: &str) -> impl Fn(cudarc::driver::DriverError) -> TensorError + '_ {
    move |e| {
        super::fault::note(&e);
        let text = format!("{e:?}");
        if text.contains("OUT_OF_MEMORY") {
            TensorError::Backend(format!("{what}: GPU out of memory"))
        } else {
            TensorError::Backend(format!("{what}: {text}"))
        }
    }
}

/// Kernel-name suffix of a float dtype.
pub(super) fn suffix(d: DType) -> &'static str {
    match d {
        DType::F32 => "f32",
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        DType::I32 | DType::U8 => "b4",
        DType::I64 => "b8",
    }
}

/// Kernel-name suffix of the copy kernels for an element size.
pub(super) fn elem(d: DType) -> &'static str {
    match d.size() {
        1 => "b1",
        2 => "b2",
        4 => "b4",
        _ => "b8",
    }
}

/// [outer, len, inner] around `axis`.
pub(super) fn split(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (
        shape[..axis].iter().product(),
        shape[axis],
        shape[axis + 1..].iter().product(),
    )
}

pub(super) fn grid(n: usize) -> u32 {
    n.div_ceil(BLOCK as usize).clamp(1, 1 << 20) as u32
}

pub(super) fn rows_grid(rows: usize) -> u32 {
    rows.clamp(1, 65_535) as u32
}

/// How a reduction along the middle axis of [outer, len, inner] spreads over
/// the GPU (kernels/tensor.cu, "reductions along a middle axis").
#[derive(Debug, PartialEq)]
pub(super) enum Spread {
    /// One thread per (outer, inner) position walks the axis: many
    /// positions, adjacent ones adjacent in memory (inner > 1).
    Thread,
    /// One block of this many threads per position (the `_rows` kernels):
    /// contiguous or few rows, so no thread walks a long axis alone.
    Block(u32),
}

/// The spread for [outer, len, inner]: blocks sized to the axis (a warp at
/// least; up to 1024 threads when there are too few positions to fill the
/// GPU otherwise, else [`BLOCK`]).
pub(super) fn spread(outer: usize, len: usize, inner: usize) -> Spread {
    let positions = outer * inner;
    if inner > 1 && positions >= 2048 {
        return Spread::Thread;
    }
    let most = if positions < 64 { 1024 } else { BLOCK as usize };
    Spread::Block(len.next_power_of_two().clamp(32, most) as u32)
}

impl Spread {
    /// The launch shape for `positions` (outer · inner) positions.
    pub(super) fn config(&self, positions: usize) -> LaunchConfig {
        match *self {
            Spread::Thread => cfg(grid(positions)),
            Spread::Block(threads) => LaunchConfig {
                grid_dim: (rows_grid(positions), 1, 1),
                block_dim: (threads, 1, 1),
                shared_mem_bytes: 0,
            },
        }
    }
}

/// [`BLOCK`]-thread blocks over `grid`: a count, or (x, y) or (x, y, z)
/// blocks.
pub(super) fn cfg(grid: impl Into<Grid>) -> LaunchConfig {
    let Grid(x, y, z) = grid.into();
    LaunchConfig {
        grid_dim: (x, y, z),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// A launch's blocks along x, y and z.
pub(super) struct Grid(pub u32, pub u32, pub u32);

impl From<u32> for Grid {
    fn from(x: u32) -> Self {
        Grid(x, 1, 1)
    }
}

impl From<(u32, u32)> for Grid {
    fn from((x, y): (u32, u32)) -> Self {
        Grid(x, y, 1)
    }
}

impl From<(u32, u32, u32)> for Grid {
    fn from((x, y, z): (u32, u32, u32)) -> Self {
        Grid(x, y, z)
    }
}

/// Launches kernel `$name` on the instance's lane with `$grid` (a count, or
/// a pair along x and y) blocks of [`BLOCK`] threads and the listed
/// arguments (each a reference to a `DeviceRepr` value, in the kernel's
/// parameter order).
macro_rules! launch {
    ($self:expr, $name:expr, $grid:expr, [$($arg:expr),* $(,)?]) => {{
        let name: &str = $name;
        let f = $self.tenant.kernels.get(&name).map_err($crate::tensor::error::TensorError::Backend)?;
        let mut l = $self.stream().launch_builder(&f);
        $( l.arg($arg); )*
        // SAFETY: each call site passes the kernel's declared parameter list
        // with pointers to live buffers of the extents the kernel walks.
        unsafe { l.launch(cfg($grid)) }
            .map(|_| ())
            .map_err(cuda_err(name))
    }};
}

pub(super) use launch;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_products_skip_cublas() {
        // A decode step of SmolLM-135M (hidden 576, MLP 1536, vocabulary
        // 49,152): every projection, and the logits at a few rows.
        assert_eq!(product(1, 49_152, 576), Product::Matvec);
        assert_eq!(product(8, 1536, 576), Product::Matvec);
        assert_eq!(product(9, 960, 576), Product::Tiled);
        assert_eq!(product(64, 576, 1536), Product::Tiled);
        assert_eq!(product(16, 49_152, 576), Product::Cublas);
        // Past 64 rows (a prefill), cuBLAS.
        assert_eq!(product(65, 576, 576), Product::Cublas);
    }

    #[test]
    fn narrow_weights_split_k() {
        // SmolLM-135M's decode-step products at 9-64 rows (one row tile).
        // o-projection: 36 tiles, 9 slices of k = 576 -> 3 parts of 3.
        assert_eq!(split_k(36, 576), (3, 192));
        // down: 36 tiles, 24 slices of k = 1536 -> 3 parts of 8.
        assert_eq!(split_k(36, 1536), (3, 512));
        // q/k/v stacked: 60 tiles -> 2 parts (5 and 4 slices).
        assert_eq!(split_k(60, 576), (2, 320));
        // gate and up: 96 tiles, near the target already: one part.
        assert_eq!(split_k(96, 576), (1, 576));
        // Enough tiles already, or too short a k: one part over all of k.
        assert_eq!(split_k(300, 4096), (1, 4096));
        assert_eq!(split_k(4, 100), (1, 128));
        // Every part starts inside k, and the scratch holds every tile.
        for tiles in [1, 7, 36, 60, 96, 200, 511] {
            for k in [1, 64, 65, 130, 576, 1536, 10_000] {
                let (parts, chunk) = split_k(tiles, k);
                assert_eq!(chunk % TILE_K, 0);
                assert!((parts as usize - 1) * chunk < k);
                assert!(parts as usize * chunk >= k);
                assert!(parts == 1 || tiles * parts as usize <= SPLIT_TILES);
            }
        }
    }

    #[test]
    fn reductions_spread_by_shape() {
        // A sampler's argmax over a vocabulary: one block, as wide as allowed.
        assert_eq!(spread(1, 49_152, 1), Spread::Block(1024));
        // Many contiguous rows: a block each, sized to the row.
        assert_eq!(spread(4096, 384, 1), Spread::Block(256));
        assert_eq!(spread(100_000, 5, 1), Spread::Block(32));
        // Many strided positions: a thread each, coalesced across them.
        assert_eq!(spread(4, 30, 1000), Spread::Thread);
        assert_eq!(spread(2, 500, 3), Spread::Block(512));
        // A block per position (the kernels grid-stride past 65,535).
        let c = Spread::Block(256).config(100_000);
        assert_eq!((c.grid_dim.0, c.block_dim.0), (65_535, 256));
        let c = Spread::Thread.config(4000);
        assert_eq!(
            (c.grid_dim.0, c.block_dim.0),
            (4000u32.div_ceil(BLOCK), BLOCK)
        );
    }
}
