//! What the native GPU benchmarks share: a context with event tracking off
//! (the cheapest launches cudarc makes), its own stream, and the vetted
//! basics module (kernels/vetted/basics.cu) compiled by NVRTC for the device.

use cudarc::driver::{CudaContext, CudaModule, CudaStream};
use cudarc::nvrtc::{CompileOptions, Ptx};
use std::sync::Arc;

/// Argument `i` of the command line as a number, or `default`.
pub fn arg(i: usize, default: u32) -> u32 {
    std::env::args()
        .nth(i)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Device 0's new context, a stream on it and the basics module.
pub fn basics() -> Result<(Arc<CudaStream>, Arc<CudaModule>), Box<dyn std::error::Error>> {
    let ctx = CudaContext::new_non_primary(0, 0)?;
    // SAFETY: one stream; nothing else uses the benchmarks' buffers.
    unsafe { ctx.disable_event_tracking() };
    let stream = ctx.new_stream()?;
    let (major, minor) = ctx.compute_capability()?;
    let ptx = cudarc::nvrtc::compile_ptx_with_opts(
        include_str!("../../kernels/vetted/basics.cu"),
        CompileOptions {
            options: vec![
                format!("--gpu-architecture=sm_{major}{minor}"),
                "--std=c++17".into(),
                "--fmad=true".into(),
            ],
            ..Default::default()
        },
    )?;
    let module = ctx.load_module(Ptx::from_src(ptx.to_src()))?;
    Ok((stream, module))
}
