//! The native side of the `wasi:cuda` launch-overhead benchmark: the same
//! vetted `vector_add` (kernels/vetted/basics.cu, compiled by NVRTC for the
//! device) launched from Rust through cudarc, in its cheapest form (a
//! context with event tracking off, its own stream, arguments pushed per
//! launch). Prints one JSON line per round: µs per launch to queue
//! (`enqueue_us`) and including the final wait (`total_us`).
//!
//! `cuda_launch [REPS] [ROUNDS] [N] [empty]` — run by benches/gpu/bench.py
//! on the GPU machine; built here by scripts/gpu-pack.sh. With `empty`, the
//! argument-less `empty` kernel on one thread instead.

#[path = "vetted.rs"]
mod vetted;

use cudarc::driver::{LaunchConfig, PushKernelArg};
use std::time::Instant;
use vetted::arg;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (reps, rounds, n) = (arg(1, 10_000), arg(2, 7), arg(3, 256));
    let (stream, module) = vetted::basics()?;
    let empty = std::env::args().nth(4).as_deref() == Some("empty");
    let f = module.load_function(if empty { "empty" } else { "vector_add" })?;
    let a = stream.alloc_zeros::<f32>(n as usize)?;
    let b = stream.alloc_zeros::<f32>(n as usize)?;
    let mut c = stream.alloc_zeros::<f32>(n as usize)?;
    let threads = if empty { 1 } else { n };
    let cfg = LaunchConfig {
        grid_dim: (threads.div_ceil(256).max(1), 1, 1),
        block_dim: (threads.clamp(1, 256), 1, 1),
        shared_mem_bytes: 0,
    };
    let mut launch = || -> Result<(), cudarc::driver::DriverError> {
        let mut l = stream.launch_builder(&f);
        if !empty {
            l.arg(&a).arg(&b).arg(&mut c).arg(&n);
        }
        // SAFETY: vector_add(const float*, const float*, float*, unsigned)
        // over n elements of buffers of n elements, or empty().
        unsafe { l.launch(cfg) }.map(|_| ())
    };
    for _ in 0..100 {
        launch()?;
    }
    stream.synchronize()?;
    for _ in 0..rounds {
        let t0 = Instant::now();
        for _ in 0..reps {
            launch()?;
        }
        let t1 = t0.elapsed();
        stream.synchronize()?;
        let t2 = t0.elapsed();
        let per = |d: std::time::Duration| d.as_secs_f64() * 1e6 / reps.max(1) as f64;
        println!(
            "{{\"reps\": {reps}, \"n\": {n}, \"enqueue_us\": {}, \"total_us\": {}}}",
            per(t1),
            per(t2)
        );
    }
    Ok(())
}
