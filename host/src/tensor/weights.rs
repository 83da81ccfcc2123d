//! Model weights granted to a deployment: read once by the host (safetensors,
//! or GGUF dequantized to f32, through a memory map), kept as shared
//! read-only tensors, and handed to every instance without a copy.

use super::backend::Backend;
use super::device::{BackendKey, DeviceHandle};

use super::dtype::DType;
use super::loaded::{LoadedFile, MetaValue};
use super::storage::CpuData;
use super::types::Tensor;
use crate::platform::telemetry::Span;
use anyhow::{Context, Result, bail};
use prometheus_client::metrics::gauge::Gauge;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

/// A loaded weights file.
#[derive(Debug)]
pub struct WeightsFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// Tensor names in file order.
    pub names: Vec<String>,
    tensors: HashMap<String, Tensor>,
    /// Metadata in file order.
    pub metadata: Vec<(String, MetaValue)>,
    /// The gauge its bytes are counted in while it is loaded.
    resident: Option<Gauge>,
}

impl Drop for WeightsFile {
    fn drop(&mut self) {
        if let Some(g) = &self.resident {
            g.dec_by(self.byte_size() as i64);
        }
    }
}

/// The resource a guest's `weights` handle points to.
#[derive(Debug, Clone)]
pub struct WeightsHandle(pub Arc<WeightsFile>);

impl WeightsFile {
    /// The named tensor.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }

    /// Bytes its tensors hold on their device.
    pub fn byte_size(&self) -> u64 {
        self.tensors.values().map(Tensor::byte_size).sum()
    }

    /// Reads a weights file (safetensors, or GGUF by its magic) onto `backend`.
    pub fn load(path: &Path, backend: &dyn Backend) -> Result<Self> {
        let span = Span::root("weights-load");
        let span = match span.is_recording() {
            true => span
                .with("file", path.display().to_string())
                .with("device", backend.name().to_string()),
            false => span,
        };
        let _entered = span.enter();
        let file = std::fs::File::open(path)
            .with_context(|| format!("cannot open weights {}", path.display()))?;
        // SAFETY: the map is read-only and dropped before this function
        // returns; every tensor is copied out of it.
        let map = unsafe { memmap2::Mmap::map(&file) }
            .with_context(|| format!("cannot map weights {}", path.display()))?;
        let (tensors, metadata) = if map.starts_with(b"GGUF") {
            super::gguf::parse(&map)
                .map_err(|e| anyhow::anyhow!("{}: not a valid GGUF file: {e:#}", path.display()))?
        } else {
            read_safetensors(&map).map_err(|e| anyhow::anyhow!("{}: {e:#}", path.display()))?
        };
        let mut names = Vec::with_capacity(tensors.len());
        let mut by_name = HashMap::with_capacity(tensors.len());
        for (name, shape, data) in tensors {
            if shape.iter().any(|&d| d > u32::MAX as usize) {
                anyhow::bail!(
                    "{}: tensor `{name}`: a dimension of {shape:?} exceeds 2^32 - 1",
                    path.display()
                );
            }
            let dtype = data.dtype();
            let stored = backend
                .upload(data)
                .map_err(|e| anyhow::anyhow!("{}: tensor `{name}`: {e}", path.display()))?;
            names.push(name.clone());
            by_name.insert(name, Tensor::new(shape, dtype, stored, None));
        }
        // Instances read weights from streams of their own: the copies must
        // be complete first.
        backend
            .synchronize()
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            names,
            tensors: by_name,
            metadata,
            resident: None,
        })
    }
}

/// The tensors (file order) and `__metadata__` (sorted by key) of a safetensors file.
pub fn read_safetensors(bytes: &[u8]) -> Result<LoadedFile> {
    let bad =
        |e: safetensors::SafeTensorError| anyhow::anyhow!("not a valid safetensors file: {e}");
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).map_err(bad)?;
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(bad)?;
    let mut tensors = Vec::new();
    for name in meta.offset_keys() {
        let view = st.tensor(&name).map_err(bad)?;
        let data =
            convert(view.dtype(), view.data()).with_context(|| format!("tensor `{name}`"))?;
        tensors.push((name, view.shape().to_vec(), data));
    }
    let mut metadata: Vec<(String, MetaValue)> = meta
        .metadata()
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), MetaValue::Text(v.clone())))
        .collect();
    metadata.sort_by(|a, b| a.0.cmp(&b.0));
    Ok((tensors, metadata))
}

/// Converts safetensors elements to a served dtype (wider where ours lacks one).
fn convert(dtype: safetensors::Dtype, bytes: &[u8]) -> Result<CpuData> {
    use safetensors::Dtype as S;
    Ok(match dtype {
        S::F32 => CpuData::from_le_bytes(bytes, DType::F32),
        S::F16 => CpuData::from_le_bytes(bytes, DType::F16),
        S::BF16 => CpuData::from_le_bytes(bytes, DType::BF16),
        S::I32 => CpuData::from_le_bytes(bytes, DType::I32),
        S::I64 => CpuData::from_le_bytes(bytes, DType::I64),
        S::U8 | S::BOOL => CpuData::from_le_bytes(bytes, DType::U8),
        S::F64 => CpuData::F32(
            bytes
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
                .collect(),
        ),
        S::I8 => CpuData::I32(bytes.iter().map(|&b| b as i8 as i32).collect()),
        S::I16 => CpuData::I32(
            bytes
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]) as i32)
                .collect(),
        ),
        S::U16 => CpuData::I32(
            bytes
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]) as i32)
                .collect(),
        ),
        S::U32 => CpuData::I64(
            bytes
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")) as i64)
                .collect(),
        ),
        other => bail!("unsupported safetensors dtype {other:?}"),
    })
}

/// Weights files loaded on this server, by canonical path and backend, so
/// deployments that grant the same file share one copy per backend (one for
/// all tenants on the CPU, one per tenant context on a GPU). The cache does
/// not keep a file: it is freed when the last deployment holding it is
/// removed, and loaded again if one grants it later.
#[derive(Debug, Default)]
pub struct WeightsCache {
    by_path: Mutex<HashMap<(PathBuf, BackendKey), Weak<WeightsFile>>>,
}

impl WeightsCache {
    /// The file at `path`, loading it unless a deployment holds it (its
    /// size is counted in `resident` while it is loaded).
    pub fn get(
        &self,
        path: &Path,
        device: &DeviceHandle,
        resident: impl FnOnce() -> Gauge,
    ) -> Result<Arc<WeightsFile>> {
        let canonical = path
            .canonicalize()
            .with_context(|| format!("weights file {} not found", path.display()))?;
        let key = (canonical, device.key());
        let mut map = self.by_path.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = map.get(&key).and_then(Weak::upgrade) {
            return Ok(w);
        }
        let started = std::time::Instant::now();
        let mut w = WeightsFile::load(&key.0, device.backend())?;
        tracing::info!(
            "weights {} on {}: {} tensors loaded in {:?}",
            key.0.display(),
            device.backend().name(),
            w.names.len(),
            started.elapsed()
        );
        let gauge = resident();
        gauge.inc_by(w.byte_size() as i64);
        w.resident = Some(gauge);
        let w = Arc::new(w);
        map.retain(|_, held| held.strong_count() > 0);
        map.insert(key, Arc::downgrade(&w));
        Ok(w)
    }
}
