//! Device work behind `wasi:cuda`: launch-configuration checks, argument
//! marshalling to `cuLaunchKernel`, copies, and waits (on a blocking thread,
//! so the serving thread keeps answering other requests).

use super::Kernel;
use super::bindings::wasi::cuda::{kernels, types};
use super::error::{driver, tensor_err};
use super::signature::{self, Arg, ArgError};
use crate::tensor::cuda::CudaBackend;
use crate::tensor::ops::Tensors;
use cudarc::driver::{CudaEvent, CudaSlice, CudaStream, result, sys};
use std::ffi::c_void;
use std::sync::Arc;

/// The CUDA backend the instance's tensors live on (its tenant's context
/// and its own lane), or `no-device`. `wasi:cuda` work is never recorded
/// into a tensor step: what was recorded is launched first.
pub fn gpu(tensors: &Tensors) -> Result<&CudaBackend, types::Error> {
    let gpu = tensors.cuda().ok_or(types::Error::NoDevice)?;
    gpu.settle().map_err(tensor_err)?;
    Ok(gpu)
}

/// Runs `f` (which waits on the device) on a blocking thread.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, types::Error> + Send + 'static,
) -> wasmtime::Result<Result<T, types::Error>> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| wasmtime::Error::msg(format!("waiting for the GPU failed: {e}")))
}

/// Waits until all work queued on `streams` has finished.
pub async fn wait(streams: Vec<Arc<CudaStream>>) -> wasmtime::Result<Result<(), types::Error>> {
    blocking(move || {
        streams
            .iter()
            .try_for_each(|s| s.synchronize().map_err(driver("waiting for the GPU")))
    })
    .await
}

/// `size` zeroed bytes on the instance's stream.
pub fn alloc_zeroed(gpu: &CudaBackend, size: u64) -> Result<CudaSlice<u8>, types::Error> {
    gpu.bind().map_err(tensor_err)?;
    let stream = gpu.stream();
    // SAFETY: zeroed right below, on the same stream, before any use.
    let mut bytes = unsafe { stream.alloc::<u8>(size as usize) }.map_err(driver("allocating"))?;
    stream.memset_zeros(&mut bytes).map_err(driver("zeroing"))?;
    Ok(bytes)
}

/// A new stream in the instance's tenant context.
pub fn new_stream(gpu: &CudaBackend) -> Result<Arc<CudaStream>, types::Error> {
    gpu.tenant()
        .context()
        .new_stream()
        .map_err(driver("creating a stream"))
}

/// A timing event recorded at the current end of `stream`.
pub fn record(stream: &Arc<CudaStream>) -> Result<Arc<CudaEvent>, types::Error> {
    stream
        .record_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))
        .map(Arc::new)
        .map_err(driver("recording an event"))
}

/// Queues a copy of `len` device bytes.
pub fn copy(stream: &CudaStream, dst: u64, src: u64, len: u64) -> Result<(), types::Error> {
    stream
        .context()
        .bind_to_thread()
        .map_err(driver("binding"))?;
    // SAFETY: the caller checked both ranges against their buffers.
    unsafe { result::memcpy_dtod_async(dst, src, len as usize, stream.cu_stream()) }
        .map_err(driver("copying on the GPU"))
}

/// Copies `data` to device address `dst` (returns once `data` may be reused).
pub fn upload(stream: &CudaStream, dst: u64, data: &[u8]) -> Result<(), types::Error> {
    stream
        .context()
        .bind_to_thread()
        .map_err(driver("binding"))?;
    // SAFETY: the caller checked the range; pageable copies return after
    // staging the source.
    unsafe { result::memcpy_htod_async(dst, data, stream.cu_stream()) }
        .map_err(driver("copying to the GPU"))
}

/// Copies `len` bytes from device address `src` (waits for them).
pub fn download(stream: &CudaStream, src: u64, len: usize) -> Result<Vec<u8>, types::Error> {
    stream
        .context()
        .bind_to_thread()
        .map_err(driver("binding"))?;
    let mut out = vec![0u8; len];
    // SAFETY: the caller checked the range; the stream is synchronized
    // before `out` is read.
    unsafe { result::memcpy_dtoh_async(&mut out, src, stream.cu_stream()) }
        .map_err(driver("copying from the GPU"))?;
    stream
        .synchronize()
        .map_err(driver("copying from the GPU"))?;
    Ok(out)
}

/// Checks a launch configuration against the device's and the kernel's limits.
pub fn check_config(
    config: &kernels::LaunchConfig,
    gpu: &CudaBackend,
    kernel: &Kernel,
) -> Result<(), types::Error> {
    let limits = gpu.tenant().device().limits();
    let bad = |m: String| Err(types::Error::InvalidLaunch(m));
    let grid = [config.grid.x, config.grid.y, config.grid.z];
    let block = [config.block.x, config.block.y, config.block.z];
    for (what, dims, max) in [
        ("grid", grid, limits.max_grid),
        ("block", block, limits.max_block),
    ] {
        for i in 0..3 {
            if dims[i] == 0 || dims[i] > max[i] {
                return bad(format!(
                    "{what} {dims:?}: extent {} must be 1..={} on this device",
                    ["x", "y", "z"][i],
                    max[i]
                ));
            }
        }
    }
    let threads = block.iter().map(|&d| d as u64).product::<u64>();
    let most = limits.max_threads_per_block.min(kernel.max_threads) as u64;
    if threads > most {
        return bad(format!(
            "block {block:?} has {threads} threads; this kernel takes at most {most}"
        ));
    }
    let room = limits
        .max_shared_per_block
        .saturating_sub(kernel.static_shared);
    if config.shared_memory_bytes > room {
        return bad(format!(
            "{} bytes of dynamic shared memory; at most {room} are left beside the kernel's own",
            config.shared_memory_bytes
        ));
    }
    Ok(())
}

/// Checks `args` against the kernel's declared kinds and vetted extents.
pub fn check_args(kernel: &Kernel, args: &[Arg]) -> Result<(), types::Error> {
    signature::check(&kernel.kinds, kernel.signature.as_ref(), args).map_err(|e| match e {
        ArgError::Signature(m) => types::Error::SignatureMismatch(m),
        ArgError::OutOfBounds {
            offset,
            length,
            size,
        } => types::Error::OutOfBounds(types::BoundsError {
            offset,
            length,
            size,
        }),
        ArgError::Invalid(m) => types::Error::InvalidArgument(m),
    })
}

/// Most arguments one launch passes.
pub const MAX_ARGS: usize = 64;

/// Queues the kernel with checked `args` (`pointers[i]` is the device
/// address of pointer argument `i`).
pub fn launch(
    gpu: &CudaBackend,
    stream: &CudaStream,
    kernel: &Kernel,
    config: &kernels::LaunchConfig,
    args: &[Arg],
    pointers: &[u64],
) -> Result<(), types::Error> {
    gpu.bind().map_err(tensor_err)?;
    if args.len() > MAX_ARGS {
        return Err(types::Error::InvalidArgument(format!(
            "a launch takes at most {MAX_ARGS} arguments"
        )));
    }
    let mut slots = [[0u8; 8]; MAX_ARGS];
    for (slot, (a, &p)) in slots.iter_mut().zip(args.iter().zip(pointers)) {
        *slot = a.bytes(p);
    }
    let mut argv = [std::ptr::null_mut::<c_void>(); MAX_ARGS];
    for (p, slot) in argv.iter_mut().zip(slots.iter_mut()) {
        *p = slot.as_mut_ptr().cast::<c_void>();
    }
    let argv = &mut argv[..args.len()];
    let (g, b) = (config.grid, config.block);
    // SAFETY: `argv` has one pointer per declared parameter, each to 8 bytes
    // holding the value in its declared kind (checked above); pointer
    // arguments address live buffers of this context, checked against the
    // vetted extents; the configuration fits the device.
    unsafe {
        result::launch_kernel(
            kernel.function.cu_function(),
            (g.x, g.y, g.z),
            (b.x, b.y, b.z),
            config.shared_memory_bytes,
            stream.cu_stream(),
            argv,
        )
    }
    .map_err(driver("launching"))
}
