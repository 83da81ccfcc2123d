//! One tenant's GPU state: its CUDA context, loaded kernels and guest
//! modules, and its pool of lanes (a stream and cuBLAS handle each).

use super::CudaDevice;
use super::cache::Cache;
use super::graph::Recorder;
use super::kernels::Kernels;
use super::launch::SPLIT_SCRATCH;
use cudarc::cublas::CudaBlas;
use cudarc::driver::{CudaContext, CudaModule, CudaSlice, CudaStream, DriverError};
use cudarc::nvrtc::Ptx;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// Makes the device's stream-ordered pool keep freed memory for reuse
/// instead of returning it to the driver at every synchronization (so an op
/// does not pay a `cuMemMap` for its output); tenants' bytes are capped by
/// their quotas, not by the pool. Best effort: a failure only costs speed.
pub(super) fn keep_pool_memory(ctx: &Arc<CudaContext>) {
    use cudarc::driver::sys;
    let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
    let mut threshold = u64::MAX;
    // SAFETY: plain driver calls on the device of a live context; the
    // attribute takes a pointer to a u64.
    let r = unsafe {
        let r = sys::cuDeviceGetDefaultMemPool(&mut pool, ctx.cu_device());
        if r != sys::CUresult::CUDA_SUCCESS {
            r
        } else {
            sys::cuMemPoolSetAttribute(
                pool,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                (&mut threshold as *mut u64).cast(),
            )
        }
    };
    if r != sys::CUresult::CUDA_SUCCESS {
        tracing::warn!("GPU memory pool left at its defaults: {r:?}");
    }
}

/// A stream with its own cuBLAS handle: the ordered queue one instance's
/// work runs on, and the device memory its dropped tensors left for the
/// next ones of the same size.
///
/// The cache takes the per-op `cuMemAllocAsync`/`cuMemFreeAsync` driver
/// calls out of a decode step, which allocates the same sizes every step:
/// bytes a tensor held on this lane are handed to a later tensor of this
/// lane, so every use stays ordered on one stream (the stream-ordered pool
/// needs no more). It holds at most [`CACHE_BYTES`] in pieces of at most
/// [`CACHE_PIECE`], outside the tenant's quota (its tensors are released),
/// making room by the sizes least recently used ([`Cache`]); memory moved
/// to `wasi:cuda` buffers never comes back to it.
pub struct Lane {
    pub(super) stream: Arc<CudaStream>,
    pub(super) blas: Mutex<CudaBlas>,
    cache: Mutex<Cache<CudaSlice<u8>>>,
    /// Made by the lane's first split product ([`Lane::split_scratch`]).
    split: OnceLock<CudaSlice<u8>>,
    /// Recorded steps ([`Recorder`]).
    pub(super) recorder: Recorder,
}

impl Drop for Lane {
    fn drop(&mut self) {
        if self.stream.context().bind_to_thread().is_ok() {
            self.recorder.clear(&self.stream);
        }
    }
}

/// Most bytes one lane's cache keeps.
pub const CACHE_BYTES: usize = 8 << 20;
/// Largest piece a lane's cache keeps.
pub const CACHE_PIECE: usize = 1 << 20;

impl Lane {
    pub(super) fn new(ctx: &Arc<CudaContext>) -> anyhow::Result<Self> {
        let stream = ctx
            .new_stream()
            .map_err(|e| anyhow::anyhow!("new CUDA stream: {e:?}"))?;
        let blas = CudaBlas::new(stream.clone()).map_err(|e| anyhow::anyhow!("cuBLAS: {e:?}"))?;
        Ok(Self {
            stream,
            blas: Mutex::new(blas),
            cache: Mutex::new(Cache::new(CACHE_BYTES)),
            split: OnceLock::new(),
            recorder: Recorder::default(),
        })
    }

    /// The scratch of `matmul_t` split along k ([`super::launch::split_k`]),
    /// [`SPLIT_SCRATCH`] bytes made on first use: a ticket per output tile,
    /// zeros (each launch leaves them so), then the blocks' partial tiles.
    /// One per lane is enough: the lane's launches run one after another.
    /// Like the cache, it is outside the tenant's quota.
    pub(super) fn split_scratch(&self) -> Result<&CudaSlice<u8>, DriverError> {
        if let Some(scratch) = self.split.get() {
            return Ok(scratch);
        }
        let scratch = self.stream.alloc_zeros::<u8>(SPLIT_SCRATCH)?;
        Ok(self.split.get_or_init(|| scratch))
    }

    /// Cached bytes of exactly `len`, if any.
    pub(super) fn take(&self, len: usize) -> Option<CudaSlice<u8>> {
        if len > CACHE_PIECE {
            return None;
        }
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.take(len)
    }

    /// New bytes on this lane's stream (made outside a step being
    /// recorded: [`Recorder::alloc`]).
    pub(super) fn alloc(&self, bytes: usize) -> Result<CudaSlice<u8>, DriverError> {
        match self.recorder.alloc(&self.stream, bytes) {
            Some(made) => made,
            // SAFETY: u8 has no invalid bit patterns; every op writes what it reads back.
            None => unsafe { self.stream.alloc::<u8>(bytes) },
        }
    }

    /// Keeps `buf` for a later tensor of its size, or frees it (too big);
    /// what makes room for it is freed too, after the lock. While a step
    /// is recorded, frees wait until it is launched ([`Recorder::defer`]).
    pub(super) fn keep(&self, buf: CudaSlice<u8>) {
        let freed = match buf.len() > CACHE_PIECE {
            true => vec![buf],
            false => self
                .cache
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .keep(buf),
        };
        for buf in freed {
            drop(self.recorder.defer(buf));
        }
    }
}

/// Idle lanes a tenant keeps for its next instances.
pub(super) const IDLE_LANES: usize = 16;

/// One tenant's CUDA context, kernels and pool of lanes.
pub struct CudaTenant {
    /// Unique for the server's life (a context's address may be reused).
    pub(super) id: u64,
    pub(super) device: Arc<CudaDevice>,
    pub(super) ctx: Arc<CudaContext>,
    pub(super) kernels: Kernels,
    pub(super) poison: bool,
    /// Recorded steps become CUDA graphs (off with TENSOR_WASM_NO_GRAPHS:
    /// every op launched as it is called).
    pub(super) graphs: bool,
    pub(super) idle: Mutex<Vec<Arc<Lane>>>,
    pub(super) modules: Mutex<HashMap<blake3::Hash, Arc<CudaModule>>>,
}

impl Drop for CudaTenant {
    fn drop(&mut self) {
        super::fault::forget(self.ctx.cu_ctx());
    }
}

/// Guest modules a tenant context keeps loaded.
const MODULES_KEPT: usize = 64;

impl CudaTenant {
    /// The tenant's context.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The device.
    pub fn device(&self) -> &Arc<CudaDevice> {
        &self.device
    }

    /// Identifies this context for the server's life (weights are cached
    /// per context by it).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The fault that ended this context, if one did (`super::fault`).
    pub fn fault(&self) -> Option<String> {
        super::fault::of(self.ctx.cu_ctx())
    }

    /// A guest module (CUDA C, compiled once per device, or PTX) loaded
    /// into this context once; the compiler's or loader's message when it
    /// does not build.
    pub fn module(
        &self,
        source: &str,
        is_ptx: bool,
        name: &str,
    ) -> Result<Arc<CudaModule>, String> {
        let key = blake3::Hasher::new()
            .update(&[is_ptx as u8])
            .update(source.as_bytes())
            .finalize();
        if let Some(m) = self
            .modules
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(m.clone());
        }
        let ptx = if is_ptx {
            source.to_string()
        } else {
            self.device.compile(source, name)?
        };
        self.ctx
            .bind_to_thread()
            .map_err(|e| format!("binding the context: {e:?}"))?;
        let module = self
            .ctx
            .load_module(Ptx::from_src(ptx))
            .map_err(|e| format!("the driver could not load {name}: {e:?}"))?;
        let mut kept = self.modules.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() < MODULES_KEPT {
            kept.insert(key, module.clone());
        }
        Ok(module)
    }
}
