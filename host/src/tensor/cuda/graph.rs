//! Recorded steps (`wasi:tensor-fused/steps`): between `record-step` and
//! `run-step`, a lane's kernels and cuBLAS calls are captured into CUDA
//! graphs instead of being launched one by one, and each graph is launched
//! whole. Launching a kernel costs the CPU 2.5 µs on an H100; capturing
//! one, bringing the graph kept from the last step of the same shape up to
//! date (`cuGraphExecUpdate`) and launching it, 0.55 µs
//! (benches/gpu/graph_launch.rs, docs/PERFORMANCE.md). A step is captured
//! in parts of [`PART_OPS`] ops, each launched as soon as it is full, so
//! the GPU works on one part while the CPU captures the next. Graphs are
//! kept per (guest key, part) on the lane.
//!
//! Nothing a guest sees changes but the time: every op still checks its
//! arguments and returns its result when called, and whatever must wait
//! for the device (a read-back, an upload from guest memory, an op that
//! checks values on the host, a `wasi:cuda` call) first launches what was
//! captured ([`Recorder::settle`]), so everything runs in the order the
//! guest issued it; capturing resumes at the next op. Two things must not
//! enter a graph, and don't:
//! - memory: a lane's allocations that miss its cache while capturing are
//!   made on a side stream and waited for (not graph allocation nodes), and
//!   the bytes dropped while capturing are freed only after the part is
//!   launched (not graph free nodes);
//! - other work: a lane is one instance's alone (a lane shared with other
//!   instances never records: [`super::CudaBackend`]'s `record`).
//!
//! A part that cannot be built or launched leaves the lane lost: the ops in
//! it never ran, so every later read-back fails, the instance is not
//! reused and the lane is not handed on.

use cudarc::driver::{CudaSlice, CudaStream, DriverError, sys};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Executable graphs a lane keeps: the parts of the shapes of step a batch
/// moves between (its sizes as sequences join and leave).
const GRAPHS: usize = 64;

/// Ops a part of a step holds at most: parts are launched as they fill, so
/// the GPU runs the first while the next are captured (one graph for the
/// whole step leaves the GPU idle until the CPU is done: 0.82–0.91× the
/// direct step, against 1.09–1.29× in parts of 16 ops; docs/PERFORMANCE.md).
const PART_OPS: u32 = 16;

/// Parts a step may have: past them (a guest that never calls `run-step`,
/// its instance reused request after request) recording stops.
const MAX_PARTS: u32 = 1024;

/// One lane's recording, and the graphs of its past steps.
#[derive(Default)]
pub(super) struct Recorder {
    /// Whether recording (read without the lock on every op, drop and
    /// allocation; [`State`] decides).
    on: AtomicBool,
    /// Whether a recorded step could not run (set once, with
    /// `State::lost`): read without the lock before every wait.
    lost: AtomicBool,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Between `record` and `run` (capturing, or to capture again at the
    /// next op: [`Recorder::op`]).
    recording: bool,
    capturing: bool,
    /// Ops captured in this part ([`PART_OPS`]).
    ops: u32,
    /// The guest's key for this step's shape, and which part of the step
    /// (a read-back in the middle starts the next part).
    key: u64,
    part: u32,
    /// Bytes dropped while capturing, freed once the graph is launched.
    deferred: Vec<CudaSlice<u8>>,
    /// Executable graphs by (key, part), least recently used first.
    graphs: Vec<Exec>,
    /// Where allocations are made while capturing.
    side: Option<Arc<CudaStream>>,
    /// Why a recorded step could not run: every later wait fails with it.
    lost: Option<String>,
    counts: Counts,
}

/// What a lane's recordings did (for tests and logs).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Graphs launched.
    pub launched: u64,
    /// Of those, brought up to date from a kept graph.
    pub updated: u64,
}

struct Exec {
    key: (u64, u32),
    exec: sys::CUgraphExec,
}

// SAFETY: an executable graph is a driver handle, used under the lock.
unsafe impl Send for Exec {}

fn check(r: sys::CUresult, what: &str) -> Result<(), String> {
    match r {
        sys::CUresult::CUDA_SUCCESS => Ok(()),
        e => Err(format!("{what}: {e:?}")),
    }
}

impl Recorder {
    /// Starts capturing `stream`'s work as the step `key` (a step already
    /// being captured is launched first).
    pub(super) fn record(&self, stream: &Arc<CudaStream>, key: u64) -> Result<(), String> {
        let mut s = self.lock();
        if let Some(lost) = &s.lost {
            return Err(lost.clone());
        }
        if s.capturing {
            self.launch(&mut s, stream)?;
        }
        s.recording = false;
        if s.side.is_none() {
            let side = stream
                .context()
                .new_stream()
                .map_err(|e| format!("a stream to allocate on: {e:?}"))?;
            s.side = Some(side);
        }
        (s.key, s.part) = (key, 0);
        s.recording = true;
        self.on.store(true, Ordering::Release);
        Ok(())
    }

    /// Launches what was captured and stops recording.
    pub(super) fn run(&self, stream: &Arc<CudaStream>) -> Result<(), String> {
        let mut s = self.lock();
        if s.capturing {
            self.launch(&mut s, stream)?;
        }
        s.recording = false;
        self.on.store(false, Ordering::Release);
        s.lost.clone().map_or(Ok(()), Err)
    }

    /// At the start of every op (before its first allocation): while
    /// recording, captures from here on, launching the part captured so
    /// far first once it holds [`PART_OPS`] ops.
    pub(super) fn op(&self, stream: &Arc<CudaStream>) -> Result<(), String> {
        if !self.on.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut s = self.lock();
        if !s.recording {
            return Ok(());
        }
        if s.capturing && s.ops >= PART_OPS {
            self.launch(&mut s, stream)?;
        }
        if s.part >= MAX_PARTS {
            s.recording = false;
            self.on.store(false, Ordering::Release);
            return Ok(());
        }
        if !s.capturing {
            self.begin(&mut s, stream)?;
        }
        s.ops += 1;
        Ok(())
    }

    /// Before work that waits for the device or is not captured: launches
    /// what was captured; recording goes on at the next op.
    pub(super) fn settle(&self, stream: &Arc<CudaStream>) -> Result<(), String> {
        if !self.on.load(Ordering::Acquire) {
            if !self.lost.load(Ordering::Acquire) {
                return Ok(());
            }
            return self.lock().lost.clone().map_or(Ok(()), Err);
        }
        let mut s = self.lock();
        if s.capturing {
            self.launch(&mut s, stream)?;
        }
        s.lost.clone().map_or(Ok(()), Err)
    }

    /// Ends a capture without launching it (the instance is gone): its
    /// results have no reader left.
    pub(super) fn abandon(&self, stream: &Arc<CudaStream>) {
        let mut s = self.lock();
        if s.capturing {
            if let Ok(graph) = end(stream) {
                // SAFETY: the graph just captured, not instantiated.
                unsafe { sys::cuGraphDestroy(graph) };
            }
            s.capturing = false;
        }
        s.recording = false;
        self.on.store(false, Ordering::Release);
        s.deferred.clear();
    }

    /// Whether a recorded step of this lane could not run.
    pub(super) fn lost(&self) -> bool {
        self.lost.load(Ordering::Acquire)
    }

    /// What this lane's recordings did.
    pub(super) fn counts(&self) -> Counts {
        self.lock().counts
    }

    /// Keeps `buf` until the captured work is launched, if capturing;
    /// otherwise gives it back.
    pub(super) fn defer(&self, buf: CudaSlice<u8>) -> Option<CudaSlice<u8>> {
        if !self.on.load(Ordering::Acquire) {
            return Some(buf);
        }
        let mut s = self.lock();
        if !s.capturing {
            return Some(buf);
        }
        s.deferred.push(buf);
        None
    }

    /// `bytes` on `stream` made outside the capture, when capturing: on the
    /// side stream, waited for, then `stream`'s (freed in its order).
    pub(super) fn alloc(
        &self,
        stream: &Arc<CudaStream>,
        bytes: usize,
    ) -> Option<Result<CudaSlice<u8>, DriverError>> {
        if !self.on.load(Ordering::Acquire) {
            return None;
        }
        let s = self.lock();
        let side = s.side.as_ref().filter(|_| s.capturing)?;
        Some((|| {
            // SAFETY: u8 has no invalid bit patterns; the caller writes
            // what it reads back.
            let buf = unsafe { side.alloc::<u8>(bytes) }?;
            side.synchronize()?;
            let ptr = buf.leak();
            // SAFETY: `ptr` is a live allocation of `bytes` bytes of this
            // context, complete (waited for above), owned by nothing else.
            Ok(unsafe { stream.upgrade_device_ptr(ptr, bytes) })
        })())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn begin(&self, s: &mut State, stream: &Arc<CudaStream>) -> Result<(), String> {
        // Relaxed: other threads' driver calls (other lanes' waits and
        // allocations) go on as usual while this stream captures.
        let mode = sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED;
        stream
            .begin_capture(mode)
            .map_err(|e| format!("recording a step: {e:?}"))?;
        (s.capturing, s.ops) = (true, 0);
        Ok(())
    }

    /// Ends the capture and launches it (the step's next part): through
    /// the graph kept for its (key, part) brought up to date, or a new
    /// one. On failure the lane is lost (what the guest was told is done
    /// never ran) and recording stops.
    fn launch(&self, s: &mut State, stream: &Arc<CudaStream>) -> Result<(), String> {
        s.capturing = false;
        let r = end(stream).and_then(|graph| {
            let r = match nodes(graph)? {
                0 => Ok(()),
                _ => self.instantiate_and_launch(s, stream, graph),
            };
            // SAFETY: captured above; an executable graph does not need it.
            unsafe { sys::cuGraphDestroy(graph) };
            r
        });
        // Freed in stream order, after the graph.
        s.deferred.clear();
        s.part += 1;
        if let Err(e) = &r {
            s.recording = false;
            self.on.store(false, Ordering::Release);
            s.lost = Some(format!("a recorded step could not run: {e}"));
            self.lost.store(true, Ordering::Release);
            return Err(s.lost.clone().unwrap_or_default());
        }
        Ok(())
    }

    fn instantiate_and_launch(
        &self,
        s: &mut State,
        stream: &Arc<CudaStream>,
        graph: sys::CUgraph,
    ) -> Result<(), String> {
        let key = (s.key, s.part);
        let kept = s.graphs.iter().position(|g| g.key == key);
        let mut updated = false;
        let exec = match kept.map(|i| s.graphs.remove(i)) {
            Some(g) => {
                // SAFETY: a zeroed result record is valid input.
                let mut info: sys::CUgraphExecUpdateResultInfo = unsafe { std::mem::zeroed() };
                // SAFETY: a kept executable graph and a graph of this context.
                let r = unsafe { sys::cuGraphExecUpdate_v2(g.exec, graph, &mut info) };
                if r == sys::CUresult::CUDA_SUCCESS {
                    updated = true;
                    g
                } else {
                    // Another shape of step under the same key: a new one.
                    // SAFETY: kept here alone, not running on the CPU side.
                    unsafe { sys::cuGraphExecDestroy(g.exec) };
                    instantiate(key, graph)?
                }
            }
            None => instantiate(key, graph)?,
        };
        // SAFETY: an executable graph of this stream's context.
        let r = check(
            unsafe { sys::cuGraphLaunch(exec.exec, stream.cu_stream()) },
            "launching a recorded step",
        );
        s.graphs.push(exec);
        if s.graphs.len() > GRAPHS {
            let old = s.graphs.remove(0);
            // SAFETY: launches in flight keep what they need.
            unsafe { sys::cuGraphExecDestroy(old.exec) };
        }
        r?;
        s.counts.launched += 1;
        s.counts.updated += updated as u64;
        Ok(())
    }

    /// Frees the kept graphs (the lane's context is current).
    pub(super) fn clear(&self, stream: &Arc<CudaStream>) {
        self.abandon(stream);
        for g in self.lock().graphs.drain(..) {
            // SAFETY: kept here alone.
            unsafe { sys::cuGraphExecDestroy(g.exec) };
        }
    }
}

fn instantiate(key: (u64, u32), graph: sys::CUgraph) -> Result<Exec, String> {
    let mut exec = std::ptr::null_mut();
    // SAFETY: a complete captured graph.
    check(
        unsafe { sys::cuGraphInstantiateWithFlags(&mut exec, graph, 0) },
        "building a recorded step",
    )?;
    Ok(Exec { key, exec })
}

/// How many nodes `graph` has.
fn nodes(graph: sys::CUgraph) -> Result<usize, String> {
    let mut n = 0;
    // SAFETY: counts only (no node array).
    check(
        unsafe { sys::cuGraphGetNodes(graph, std::ptr::null_mut(), &mut n) },
        "reading a recorded step",
    )?;
    Ok(n)
}

/// Ends `stream`'s capture: the graph captured.
fn end(stream: &Arc<CudaStream>) -> Result<sys::CUgraph, String> {
    stream
        .context()
        .bind_to_thread()
        .map_err(|e| format!("binding the context: {e:?}"))?;
    let mut graph = std::ptr::null_mut();
    // SAFETY: the stream is capturing (begun by `Recorder::begin`).
    check(
        unsafe { sys::cuStreamEndCapture(stream.cu_stream(), &mut graph) },
        "ending a recorded step",
    )?;
    if graph.is_null() {
        return Err("ending a recorded step: no graph".into());
    }
    Ok(graph)
}
