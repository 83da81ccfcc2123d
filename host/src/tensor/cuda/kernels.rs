//! The CUDA C kernels of `kernels/tensor.cu`, compiled by NVRTC for the
//! device's architecture once per process and cached on disk as PTX, keyed
//! by BLAKE3 of the source, the compile options, the architecture and the
//! driver version (so a driver upgrade recompiles).

use crate::platform::telemetry::Span;
use cudarc::driver::{CudaContext, CudaFunction, CudaModule};
use cudarc::nvrtc::{CompileOptions, Ptx};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The kernel source, built into the binary.
pub const SOURCE: &str = include_str!("../../../../kernels/tensor.cu");

/// Compiled PTX for one device, shared by every tenant context on it.
#[derive(Debug)]
pub struct Ptxs {
    /// The PTX text.
    pub ptx: String,
    /// Where it came from ("compiled in 1.2s" / "cache").
    pub origin: String,
}

/// NVRTC options for `arch` (e.g. `sm_90`).
fn options(arch: &str) -> Vec<String> {
    vec![
        format!("--gpu-architecture={arch}"),
        "--std=c++17".into(),
        "--fmad=true".into(),
    ]
}

/// Compiles (or reads from `cache_dir`) the kernels for `arch` under `driver`.
pub fn compile(arch: &str, driver: i32, cache_dir: Option<&Path>) -> anyhow::Result<Ptxs> {
    compile_source(SOURCE, "tensor.cu", arch, driver, cache_dir).map_err(|e| anyhow::anyhow!(e))
}

/// Compiles (or reads from `cache_dir`) CUDA C `source` for `arch` under
/// `driver`; the error is NVRTC's log.
pub fn compile_source(
    source: &str,
    name: &str,
    arch: &str,
    driver: i32,
    cache_dir: Option<&Path>,
) -> Result<Ptxs, String> {
    let mut span = Span::root("kernel-compile");
    span.set_str("kernel.module", name);
    let opts = options(arch);
    let mut h = blake3::Hasher::new();
    h.update(source.as_bytes());
    for o in &opts {
        h.update(o.as_bytes());
        h.update(b"\0");
    }
    h.update(arch.as_bytes());
    h.update(&driver.to_le_bytes());
    let key = h.finalize().to_hex();
    let path: Option<PathBuf> = cache_dir.map(|d| d.join("kernels").join(format!("{key}.ptx")));
    if let Some(p) = &path
        && let Ok(ptx) = std::fs::read_to_string(p)
    {
        span.set("cached", true);
        return Ok(Ptxs {
            ptx,
            origin: format!("cache {}", p.display()),
        });
    }
    let started = std::time::Instant::now();
    let compiled = cudarc::nvrtc::compile_ptx_with_opts(
        source,
        CompileOptions {
            options: opts,
            name: Some(name.into()),
            ..Default::default()
        },
    )
    .map_err(|e| match e {
        cudarc::nvrtc::CompileError::CompileError { log, .. } => {
            format!("NVRTC could not compile {name}: {}", log.to_string_lossy())
        }
        other => format!("NVRTC failed on {name}: {other:?}"),
    })?;
    crate::platform::metrics::compiled("kernel", started.elapsed().as_secs_f64());
    let ptx = compiled.to_src();
    if let Some(p) = &path {
        let tmp = p.with_extension("tmp");
        let written = p
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|_| std::fs::write(&tmp, &ptx))
            .and_then(|_| std::fs::rename(&tmp, p));
        if let Err(e) = written {
            tracing::warn!("cannot cache compiled kernels at {}: {e}", p.display());
        }
    }
    Ok(Ptxs {
        ptx,
        origin: format!("compiled in {:.2?}", started.elapsed()),
    })
}

/// The kernels loaded into one context, functions looked up once each.
pub struct Kernels {
    module: Arc<CudaModule>,
    functions: Mutex<HashMap<String, CudaFunction>>,
}

impl Kernels {
    /// Loads `ptx` into `ctx`.
    pub fn load(ctx: &Arc<CudaContext>, ptx: &Ptxs) -> anyhow::Result<Self> {
        let module = ctx
            .load_module(Ptx::from_src(ptx.ptx.clone()))
            .map_err(|e| anyhow::anyhow!("loading the tensor kernels: {e:?}"))?;
        Ok(Self {
            module,
            functions: Mutex::new(HashMap::new()),
        })
    }

    /// The kernel called `name`.
    pub fn get(&self, name: &str) -> Result<CudaFunction, String> {
        let mut map = self.functions.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = map.get(name) {
            return Ok(f.clone());
        }
        let f = self
            .module
            .load_function(name)
            .map_err(|e| format!("kernel {name}: {e:?}"))?;
        map.insert(name.to_string(), f.clone());
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tensor kernels compile (NVRTC needs no GPU): a kernel that does
    /// not would otherwise show only on a GPU machine, where it stops the
    /// server at start. `scripts/test.sh` installs NVRTC from PyPI and runs
    /// this with TENSOR_WASM_REQUIRE_NVRTC=1; elsewhere it skips, saying so,
    /// when NVRTC is not on the library path.
    #[test]
    fn the_tensor_kernels_compile_with_nvrtc() {
        // SAFETY: only tries to open the library.
        if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            assert!(
                std::env::var_os("TENSOR_WASM_REQUIRE_NVRTC").is_none(),
                "TENSOR_WASM_REQUIRE_NVRTC is set but NVRTC (libnvrtc.so.13) is not on the library path"
            );
            eprintln!("skipped: NVRTC is not on the library path (scripts/test.sh installs it)");
            return;
        }
        let ptx =
            compile_source(SOURCE, "tensor.cu", "sm_90", 0, None).unwrap_or_else(|e| panic!("{e}"));
        for dtype in ["f32", "f16", "bf16"] {
            for kernel in [
                "binary",
                "norm",
                "add_norm",
                "decode_write",
                "decode_put",
                "decode_attend",
                "softmax_axis_rows",
                "l2norm_rows",
                "matvec_t",
                "matmul_t",
            ] {
                let entry = format!(".entry {kernel}_{dtype}(");
                assert!(ptx.ptx.contains(&entry), "no {entry} in the PTX");
            }
        }
        for dtype in ["f32", "f16", "bf16", "i32", "i64", "u8"] {
            let entry = format!(".entry argmax_rows_{dtype}(");
            assert!(ptx.ptx.contains(&entry), "no {entry} in the PTX");
        }
    }
}
