//! Whether a CUDA graph, captured afresh every step, issues a step of many
//! small launches for less CPU than launching them: the question behind
//! recorded steps (`wasi:tensor-fused/steps`). A "step" is `LAUNCHES` launches of
//! the vetted `vector_add` (kernels/vetted/basics.cu) with one argument
//! changed every step, then a wait (a decode step ends with a read-back).
//! Modes, each a median over `STEPS` steps, in µs a step:
//! - `direct`: the launches, then the wait;
//! - `update`: stream capture of the launches, `cuGraphExecUpdate` of the
//!   graph kept from the step before, `cuGraphLaunch`, the wait;
//! - `instantiate`: the same with a new executable graph every step;
//! - `replay`: launching one executable graph again (no capture).
//!
//! `graph_launch [LAUNCHES] [STEPS] [N]` — one JSON line per mode; built
//! here (`cargo bench --no-run --bench graph_launch`), run on the GPU
//! machine.

#[path = "vetted.rs"]
mod vetted;

use cudarc::driver::{CudaStream, LaunchConfig, PushKernelArg, sys};
use std::sync::Arc;
use std::time::Instant;
use vetted::arg;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn check(r: sys::CUresult, what: &str) -> Res<()> {
    if r == sys::CUresult::CUDA_SUCCESS {
        Ok(())
    } else {
        Err(format!("{what}: {r:?}").into())
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Ends `stream`'s capture: the graph captured.
fn end(stream: &Arc<CudaStream>) -> Res<sys::CUgraph> {
    let mut g = std::ptr::null_mut();
    // SAFETY: the stream is capturing (begun by the caller).
    check(
        unsafe { sys::cuStreamEndCapture(stream.cu_stream(), &mut g) },
        "end capture",
    )?;
    Ok(g)
}

fn main() -> Res<()> {
    let (launches, steps, n) = (arg(1, 300), arg(2, 200), arg(3, 4096));
    let (stream, module) = vetted::basics()?;
    let f = module.load_function("vector_add")?;
    let a = stream.alloc_zeros::<f32>(n as usize)?;
    let b = stream.alloc_zeros::<f32>(n as usize)?;
    let mut c = stream.alloc_zeros::<f32>(n as usize)?;
    let cfg = LaunchConfig {
        grid_dim: (n.div_ceil(256), 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    // One step's launches; `step` changes the element count every step.
    let mut issue = |step: u32| -> Res<()> {
        let count = n - step % 2;
        for _ in 0..launches {
            let mut l = stream.launch_builder(&f);
            l.arg(&a).arg(&b).arg(&mut c).arg(&count);
            // SAFETY: vector_add(const float*, const float*, float*,
            // unsigned) over at most n elements of n-element buffers.
            unsafe { l.launch(cfg) }?;
        }
        Ok(())
    };
    let relaxed = sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED;
    let cs = stream.cu_stream();
    let report = |mode: &str, issue_us: Vec<f64>, step_us: Vec<f64>| {
        println!(
            "{{\"mode\": \"{mode}\", \"launches\": {launches}, \"n\": {n}, \"issue_us\": {:.1}, \"step_us\": {:.1}, \"issue_us_per_launch\": {:.3}}}",
            median(issue_us.clone()),
            median(step_us),
            median(issue_us) / f64::from(launches)
        );
    };
    for round in 0..2 {
        // direct
        let (mut iss, mut stp) = (Vec::new(), Vec::new());
        for s in 0..steps {
            let t0 = Instant::now();
            issue(s)?;
            iss.push(t0.elapsed().as_secs_f64() * 1e6);
            stream.synchronize()?;
            stp.push(t0.elapsed().as_secs_f64() * 1e6);
        }
        if round == 1 {
            report("direct", iss, stp);
        }
        // update (and a split of its time)
        let mut exec: sys::CUgraphExec = std::ptr::null_mut();
        let (mut iss, mut stp, mut cap, mut upd) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for s in 0..steps {
            let t0 = Instant::now();
            stream.begin_capture(relaxed)?;
            issue(s)?;
            let g = end(&stream)?;
            cap.push(t0.elapsed().as_secs_f64() * 1e6);
            let t1 = Instant::now();
            // SAFETY: a graph and (once made) an executable graph of this context.
            unsafe {
                let mut info: sys::CUgraphExecUpdateResultInfo = std::mem::zeroed();
                if exec.is_null()
                    || sys::cuGraphExecUpdate_v2(exec, g, &mut info) != sys::CUresult::CUDA_SUCCESS
                {
                    if !exec.is_null() {
                        sys::cuGraphExecDestroy(exec);
                    }
                    check(
                        sys::cuGraphInstantiateWithFlags(&mut exec, g, 0),
                        "instantiate",
                    )?;
                }
                upd.push(t1.elapsed().as_secs_f64() * 1e6);
                sys::cuGraphDestroy(g);
                check(sys::cuGraphLaunch(exec, cs), "graph launch")?;
            }
            iss.push(t0.elapsed().as_secs_f64() * 1e6);
            stream.synchronize()?;
            stp.push(t0.elapsed().as_secs_f64() * 1e6);
        }
        if round == 1 {
            report("update", iss, stp);
            println!(
                "{{\"mode\": \"update-split\", \"capture_us\": {:.1}, \"update_us\": {:.1}}}",
                median(cap),
                median(upd)
            );
        }
        // replay the last executable graph
        let (mut iss, mut stp) = (Vec::new(), Vec::new());
        for _ in 0..steps {
            let t0 = Instant::now();
            // SAFETY: the executable graph made above.
            check(unsafe { sys::cuGraphLaunch(exec, cs) }, "graph launch")?;
            iss.push(t0.elapsed().as_secs_f64() * 1e6);
            stream.synchronize()?;
            stp.push(t0.elapsed().as_secs_f64() * 1e6);
        }
        // SAFETY: made above, no longer running.
        unsafe { sys::cuGraphExecDestroy(exec) };
        if round == 1 {
            report("replay", iss, stp);
        }
        // instantiate every step
        let (mut iss, mut stp) = (Vec::new(), Vec::new());
        for s in 0..steps.min(50) {
            let t0 = Instant::now();
            stream.begin_capture(relaxed)?;
            issue(s)?;
            let g = end(&stream)?;
            let mut e: sys::CUgraphExec = std::ptr::null_mut();
            // SAFETY: the graph just captured; both destroyed after the launch.
            unsafe {
                check(
                    sys::cuGraphInstantiateWithFlags(&mut e, g, 0),
                    "instantiate",
                )?;
                check(sys::cuGraphLaunch(e, cs), "graph launch")?;
            }
            iss.push(t0.elapsed().as_secs_f64() * 1e6);
            stream.synchronize()?;
            stp.push(t0.elapsed().as_secs_f64() * 1e6);
            // SAFETY: finished (waited for above).
            unsafe {
                sys::cuGraphExecDestroy(e);
                sys::cuGraphDestroy(g);
            }
        }
        if round == 1 {
            report("instantiate", iss, stp);
        }
    }
    Ok(())
}
