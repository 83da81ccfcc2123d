//! The CUDA backend (cudarc, libraries loaded at run time): one CUDA context
//! per tenant (separate device address spaces) with its cuBLAS handle and
//! loaded kernels, and a lane (stream) per instance, leased from the
//! tenant's pool. Ops enqueue on the instance's lane and return;
//! only `download` (the guest's read-back) waits. Memory comes from CUDA's
//! stream-ordered pool (`cuMemAllocAsync`), so freed buffers are reused
//! without a `cudaMalloc` per op; tensor bytes are capped per tenant by the
//! op layer's quota before anything is allocated.
//!
//! Every op runs as the kernels in `kernels/tensor.cu` or cuBLAS. Two
//! checks read back from the device first: embedding ids (an out-of-range
//! id is an error, never a wild read) and integer divisors (division by
//! zero is an error). A broadcasting op of more than 8 axes is past what
//! the kernels walk: the op layer (`tensor/ops.rs`) computes it on the CPU
//! over a copy.

mod attention;
mod backend;
mod blas;
mod cache;
mod data;
pub mod fault;
mod fused;
mod graph;
mod kernels;
mod launch;
mod tenant;

pub use backend::CudaBackend;
pub use data::CudaData;
pub use graph::Counts as RecordedSteps;
pub use tenant::CudaTenant;

use cudarc::driver::CudaContext;
use std::path::PathBuf;
use std::sync::Arc;

/// A CUDA device this server computes on.
#[derive(Debug)]
pub struct CudaDevice {
    ordinal: usize,
    name: String,
    arch: String,
    memory: usize,
    driver: i32,
    ptx: kernels::Ptxs,
    tf32: bool,
    compute: (u32, u32),
    limits: DeviceLimits,
    cache_dir: Option<PathBuf>,
    /// The server's own context on the device, for health checks.
    probe: Arc<CudaContext>,
}

/// What one launch may ask of the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceLimits {
    /// Most threads in one block.
    pub max_threads_per_block: u32,
    /// Largest block extents.
    pub max_block: [u32; 3],
    /// Largest grid extents.
    pub max_grid: [u32; 3],
    /// Most (static + dynamic) shared memory one block may use by default.
    pub max_shared_per_block: u32,
    /// Threads per warp.
    pub warp_size: u32,
    /// Streaming multiprocessors.
    pub multiprocessors: u32,
}

impl DeviceLimits {
    fn read(ctx: &CudaContext) -> Result<Self, cudarc::driver::DriverError> {
        use cudarc::driver::sys::CUdevice_attribute as A;
        let a = |x| ctx.attribute(x).map(|v| v.max(0) as u32);
        Ok(Self {
            max_threads_per_block: a(A::CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK)?,
            max_block: [
                a(A::CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X)?,
                a(A::CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y)?,
                a(A::CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z)?,
            ],
            max_grid: [
                a(A::CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X)?,
                a(A::CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y)?,
                a(A::CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z)?,
            ],
            max_shared_per_block: a(A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK)?,
            warp_size: a(A::CU_DEVICE_ATTRIBUTE_WARP_SIZE)?,
            multiprocessors: a(A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?,
        })
    }
}

/// Whether the CUDA driver library can be loaded on this machine.
pub fn driver_present() -> bool {
    // SAFETY: only tries to dlopen libcuda; loads nothing else.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// How many CUDA devices the driver sees.
pub fn device_count() -> anyhow::Result<usize> {
    if !driver_present() {
        anyhow::bail!("no CUDA driver (libcuda.so) found on this machine");
    }
    let n = CudaContext::device_count().map_err(|e| anyhow::anyhow!("CUDA driver error: {e:?}"))?;
    Ok(n.max(0) as usize)
}

impl CudaDevice {
    /// Opens device `ordinal`, compiling (or loading cached) kernels for its
    /// architecture. `cache_dir` keeps compiled PTX across runs.
    pub fn open(ordinal: usize, cache_dir: Option<PathBuf>, tf32: bool) -> anyhow::Result<Self> {
        if !driver_present() {
            anyhow::bail!("no CUDA driver (libcuda.so) found on this machine");
        }
        let count =
            CudaContext::device_count().map_err(|e| anyhow::anyhow!("CUDA driver error: {e:?}"))?;
        if ordinal >= count.max(0) as usize {
            anyhow::bail!("no CUDA device {ordinal}: this machine has {count}");
        }
        let ctx = CudaContext::new(ordinal)
            .map_err(|e| anyhow::anyhow!("cannot open CUDA device {ordinal}: {e:?}"))?;
        let err = |e| anyhow::anyhow!("CUDA device {ordinal}: {e:?}");
        let name = ctx.name().map_err(err)?;
        let (major, minor) = ctx.compute_capability().map_err(err)?;
        let memory = ctx.total_mem().map_err(err)?;
        let mut driver = 0;
        // SAFETY: writes one int.
        unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut driver) };
        let limits = DeviceLimits::read(&ctx).map_err(err)?;
        let arch = format!("sm_{major}{minor}");
        let ptx = kernels::compile(&arch, driver, cache_dir.as_deref())?;
        Ok(Self {
            ordinal,
            name,
            arch,
            memory,
            driver,
            ptx,
            tf32,
            compute: (major.max(0) as u32, minor.max(0) as u32),
            limits,
            cache_dir,
            probe: ctx,
        })
    }

    /// Checks that the device still works, on the server's own context
    /// (a tenant's faulted context says nothing of the GPU): a small
    /// allocation, zeroed and waited for. Returns the device's memory in
    /// use (every process's) and its total, or the driver's error.
    pub fn probe(&self) -> Result<(u64, u64), String> {
        let e = |e: cudarc::driver::DriverError| format!("{:?}", e.0);
        self.probe.bind_to_thread().map_err(e)?;
        let (free, total) = cudarc::driver::result::mem_get_info().map_err(e)?;
        let stream = self.probe.default_stream();
        let bytes = stream.alloc_zeros::<u8>(4).map_err(e)?;
        stream.synchronize().map_err(e)?;
        drop(bytes);
        Ok(((total - free) as u64, total as u64))
    }

    /// The device's ordinal (the `N` of `cuda:N`).
    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    /// The device's name, e.g. "NVIDIA H100 80GB HBM3".
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Compute capability (major, minor).
    pub fn compute(&self) -> (u32, u32) {
        self.compute
    }

    /// Device memory in bytes.
    pub fn memory(&self) -> u64 {
        self.memory as u64
    }

    /// The CUDA driver version (13000 for 13.0).
    pub fn driver(&self) -> u32 {
        self.driver.max(0) as u32
    }

    /// What a launch may ask for.
    pub fn limits(&self) -> &DeviceLimits {
        &self.limits
    }

    /// PTX for CUDA C `source` on this device (compiled by NVRTC, or read
    /// from the on-disk cache); the NVRTC log when it does not compile.
    pub fn compile(&self, source: &str, name: &str) -> Result<String, String> {
        kernels::compile_source(
            source,
            name,
            &self.arch,
            self.driver,
            self.cache_dir.as_deref(),
        )
        .map(|p| p.ptx)
    }

    /// The GPU, its architecture, memory and driver (stable across
    /// restarts: a metric label).
    pub fn hardware(&self) -> String {
        format!(
            "{}, {}, {} GiB, driver {}.{}",
            self.name,
            self.arch,
            self.memory >> 30,
            self.driver / 1000,
            (self.driver % 1000) / 10,
        )
    }

    /// One line for the start-up log.
    pub fn describe(&self) -> String {
        format!(
            "cuda:{} ({}; kernels {}{})",
            self.ordinal,
            self.hardware(),
            self.ptx.origin,
            if self.tf32 {
                "; f32 products in TF32"
            } else {
                ""
            }
        )
    }

    /// A backend with its own CUDA context for one tenant.
    pub fn tenant_backend(self: &Arc<Self>) -> anyhow::Result<Arc<CudaBackend>> {
        Ok(Arc::new(CudaBackend::new(self.clone())?))
    }
}
