//! The host's directories, looked up one way: the command-line flag, else
//! the environment variable (an empty one counts as unset), else the
//! platform's per-user default.

use std::path::PathBuf;

/// Durable data (the keyvalue database, the default world's token):
/// `--data-dir`, `$TENSOR_WASM_DATA_DIR`, `~/.local/share/tensor-wasm`.
pub fn data_dir(flag: Option<&PathBuf>) -> anyhow::Result<PathBuf> {
    lookup(flag, "TENSOR_WASM_DATA_DIR", dirs::data_dir(), "")
        .ok_or_else(|| anyhow::anyhow!("no home directory to keep data in: pass --data-dir"))
}

/// Models fetched by `scripts/fetch-models.sh`: `--models-dir`,
/// `$TENSOR_WASM_MODELS_DIR`, `~/.cache/tensor-wasm/models`.
pub fn models_dir(flag: Option<&PathBuf>) -> anyhow::Result<PathBuf> {
    lookup(flag, "TENSOR_WASM_MODELS_DIR", dirs::cache_dir(), "models")
        .ok_or_else(|| anyhow::anyhow!("no home directory to find models in: pass --models-dir"))
}

/// Compiled artifacts and kernels: `--cache-dir`, `$TENSOR_WASM_CACHE_DIR`,
/// `~/.cache/tensor-wasm`; `None` (no cache) without a home directory.
pub fn cache_dir(flag: Option<&PathBuf>) -> Option<PathBuf> {
    lookup(flag, "TENSOR_WASM_CACHE_DIR", dirs::cache_dir(), "")
}

fn lookup(flag: Option<&PathBuf>, var: &str, base: Option<PathBuf>, sub: &str) -> Option<PathBuf> {
    if let Some(dir) = flag {
        return Some(dir.clone());
    }
    if let Some(dir) = std::env::var_os(var).filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    let dir = base?.join("tensor-wasm");
    Some(if sub.is_empty() { dir } else { dir.join(sub) })
}
