//! Faults that end a CUDA context: after an illegal address, a hardware
//! exception or an uncorrectable ECC error every later call on that context
//! fails with the same error, so its tenant can compute nothing more there.
//! The two places driver errors become guest errors (`cuda_err` here and
//! `wasi:cuda`'s) note such a fault against the context current on the
//! thread; [`CudaTenant::fault`](super::CudaTenant::fault) reads it back and
//! the device's health check ([`crate::tensor::gpus`]) then probes the GPU
//! on its own context to tell a broken context from a broken GPU. (On the
//! H200 with driver 580, one context's illegal address fails every context
//! of the process, new ones included, while other processes compute on:
//! the probe fails and the GPU is taken out until the server restarts.)

use cudarc::driver::DriverError;
use cudarc::driver::sys::{CUcontext, cudaError_enum as E};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};

/// Contexts that faulted, by handle, with the error.
static FAULTED: Mutex<Option<HashMap<usize, String>>> = Mutex::new(None);
/// Whether any context ever faulted (the common case reads only this).
static ANY: AtomicBool = AtomicBool::new(false);
/// Faults noted so far; the health check waits on it.
pub(crate) static NOTED: (Mutex<u64>, Condvar) = (Mutex::new(0), Condvar::new());
/// Faults noted, for the metric.
pub(crate) static COUNT: AtomicU64 = AtomicU64::new(0);

/// Whether `e` leaves its context unusable.
pub fn ends_context(e: &DriverError) -> bool {
    matches!(
        e.0,
        E::CUDA_ERROR_ILLEGAL_ADDRESS
            | E::CUDA_ERROR_LAUNCH_TIMEOUT
            | E::CUDA_ERROR_HARDWARE_STACK_ERROR
            | E::CUDA_ERROR_ILLEGAL_INSTRUCTION
            | E::CUDA_ERROR_MISALIGNED_ADDRESS
            | E::CUDA_ERROR_INVALID_ADDRESS_SPACE
            | E::CUDA_ERROR_INVALID_PC
            | E::CUDA_ERROR_LAUNCH_FAILED
            | E::CUDA_ERROR_ECC_UNCORRECTABLE
            | E::CUDA_ERROR_CONTEXT_IS_DESTROYED
            | E::CUDA_ERROR_DEVICE_UNAVAILABLE
            | E::CUDA_ERROR_UNKNOWN
    )
}

/// Notes `e` against the thread's current context if it ends it, and wakes
/// the health check.
pub fn note(e: &DriverError) {
    if !ends_context(e) {
        return;
    }
    let Ok(Some(ctx)) = cudarc::driver::result::ctx::get_current() else {
        return;
    };
    let first = FAULTED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_or_insert_with(HashMap::new)
        .insert(ctx as usize, format!("{:?}", e.0))
        .is_none();
    if first {
        ANY.store(true, Ordering::Release);
        COUNT.fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            "a CUDA context hit {:?}: its tenant's deployments on this GPU answer 503; probing the GPU",
            e.0
        );
        let (count, wake) = &NOTED;
        *count.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        wake.notify_all();
    }
}

/// The fault that ended context `ctx`, if one did.
pub fn of(ctx: CUcontext) -> Option<String> {
    if !ANY.load(Ordering::Acquire) {
        return None;
    }
    FAULTED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()?
        .get(&(ctx as usize))
        .cloned()
}

/// Forgets context `ctx` (dropped: its handle may be reused).
pub fn forget(ctx: CUcontext) {
    if ANY.load(Ordering::Acquire)
        && let Some(map) = FAULTED.lock().unwrap_or_else(|p| p.into_inner()).as_mut()
    {
        map.remove(&(ctx as usize));
    }
}
