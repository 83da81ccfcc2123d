//! The compiled-artifact cache and the precompiled-artifact format.
//!
//! Compiling a component takes from milliseconds to seconds; loading a
//! compiled one takes well under one. Artifacts are stored on disk under a
//! key: BLAKE3 of the component's bytes, the wasmtime version, and the
//! engine's compatibility hash (its settings). Each file carries a header
//! with the BLAKE3 of its payload, so a corrupt or truncated entry is
//! detected, removed and rebuilt, never handed to wasmtime. The same format
//! is what `tensor-wasm compile` writes (`.cwasm`).

use anyhow::{Context, Result, bail};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use wasmtime::Engine;
use wasmtime::component::Component;

const MAGIC: &[u8; 8] = b"TWASMC01";
const HEADER_LEN: usize = MAGIC.len() + 32 + 32;

/// Where compiled artifacts live, if caching is enabled, and the
/// components loaded in the current [`ArtifactCache::sharing`] batch.
#[derive(Debug, Clone, Default)]
pub struct ArtifactCache {
    dir: Option<PathBuf>,
    /// Components by cache key while a batch shares them (`None` outside
    /// one). Only a batch: a component held here for good would outlive
    /// the deployments that use it.
    shared: Arc<Mutex<Option<HashMap<blake3::Hash, Component>>>>,
}

/// While alive, components loaded through the cache with the same key are
/// one compiled component (code loaded once), not one per deployment.
pub struct Sharing<'a>(&'a ArtifactCache);

impl Drop for Sharing<'_> {
    fn drop(&mut self) {
        *self.0.shared.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// Whether a component came from the cache or was compiled now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Loaded from a valid cache entry.
    Cached,
    /// The same component loaded earlier in this [`Sharing`] batch.
    Shared,
    /// Compiled now (and stored, when caching is enabled).
    Compiled,
}

impl ArtifactCache {
    /// A cache in `dir`, or no caching for `None`.
    pub fn new(dir: Option<PathBuf>) -> Self {
        Self {
            dir,
            shared: Arc::default(),
        }
    }

    /// Shares the components loaded until the guard drops (a start-up's
    /// deployments, where one file may name the same component many times).
    pub fn sharing(&self) -> Sharing<'_> {
        *self.shared.lock().unwrap_or_else(|p| p.into_inner()) = Some(HashMap::new());
        Sharing(self)
    }

    /// Returns the compiled component for `bytes`, from the cache when a valid
    /// entry exists, compiling (and storing) it otherwise.
    pub fn load(&self, engine: &Engine, bytes: &[u8]) -> Result<(Component, Origin)> {
        let key = cache_key(engine, bytes);
        let shared = || self.shared.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = shared().as_ref().and_then(|m| m.get(&key)) {
            return Ok((c.clone(), Origin::Shared));
        }
        let (component, origin) = self.load_once(engine, bytes, key)?;
        if let Some(m) = shared().as_mut() {
            m.insert(key, component.clone());
        }
        Ok((component, origin))
    }

    fn load_once(
        &self,
        engine: &Engine,
        bytes: &[u8],
        key: blake3::Hash,
    ) -> Result<(Component, Origin)> {
        let Some(dir) = &self.dir else {
            return Ok((compile(engine, bytes)?, Origin::Compiled));
        };
        let path = dir.join(format!("{}.cwasm", key.to_hex()));
        if path.exists() {
            match read_artifact(engine, &path, Some(&key)) {
                Ok(component) => {
                    super::metrics::ARTIFACT_CACHE_HITS.inc();
                    return Ok((component, Origin::Cached));
                }
                Err(e) => {
                    tracing::warn!("discarding cache entry {}: {e:#}", path.display());
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        super::metrics::ARTIFACT_CACHE_MISSES.inc();
        let component = compile(engine, bytes)?;
        if let Err(e) = write_artifact(&component, Some(&key), &path) {
            tracing::warn!("cannot write cache entry {}: {e:#}", path.display());
        }
        Ok((component, Origin::Compiled))
    }
}

/// Compiles `bytes`, timed into `tensorwasm_compile_duration_seconds`.
fn compile(engine: &Engine, bytes: &[u8]) -> Result<Component> {
    let started = std::time::Instant::now();
    let component = Component::new(engine, bytes)?;
    super::metrics::compiled("component", started.elapsed().as_secs_f64());
    Ok(component)
}

/// The cache key of `bytes` for this engine and wasmtime version.
pub fn cache_key(engine: &Engine, bytes: &[u8]) -> blake3::Hash {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"tensor-wasm artifact\0");
    hasher.update(env!("CARGO_PKG_VERSION").as_bytes());
    hasher.update(b"\0wasmtime=48.0.8\0");
    let mut settings = Blake3Hasher(&mut hasher);
    engine.precompile_compatibility_hash().hash(&mut settings);
    hasher.update(blake3::hash(bytes).as_bytes());
    hasher.finalize()
}

/// Writes `component` as an artifact file at `path` (atomically).
/// `key` is the cache key it was made for; user artifacts have none.
pub fn write_artifact(
    component: &Component,
    key: Option<&blake3::Hash>,
    path: &Path,
) -> Result<()> {
    let payload = component.serialize()?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let mut file = Vec::with_capacity(HEADER_LEN + payload.len());
    file.extend_from_slice(MAGIC);
    file.extend_from_slice(key.map(|k| *k.as_bytes()).unwrap_or([0; 32]).as_slice());
    file.extend_from_slice(blake3::hash(&payload).as_bytes());
    file.extend_from_slice(&payload);
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, &file).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Whether `bytes` start like an artifact written by [`write_artifact`].
pub fn is_artifact(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

/// Reads and verifies an artifact file. With `expected_key`, the entry must
/// have been made for exactly that key; without one (a user's `.cwasm`), the
/// engine's own compatibility check decides.
pub fn read_artifact(
    engine: &Engine,
    path: &Path,
    expected_key: Option<&blake3::Hash>,
) -> Result<Component> {
    let file = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if file.len() < HEADER_LEN || !is_artifact(&file) {
        bail!("not a tensor-wasm precompiled artifact (bad header)");
    }
    let key = &file[MAGIC.len()..MAGIC.len() + 32];
    let digest = &file[MAGIC.len() + 32..HEADER_LEN];
    let payload = &file[HEADER_LEN..];
    if let Some(expected) = expected_key
        && key != expected.as_bytes()
    {
        bail!("cache key mismatch");
    }
    if blake3::hash(payload).as_bytes() != digest {
        bail!("checksum mismatch: the artifact is corrupt or truncated");
    }
    // SAFETY: the payload is byte-for-byte what `Component::serialize` wrote
    // (its BLAKE3 matches the header's), and `deserialize` itself rejects
    // artifacts made by another wasmtime version or engine configuration.
    let component = unsafe { Component::deserialize(engine, payload) }
        .map_err(|e| anyhow::anyhow!("incompatible artifact: {e}"))?;
    Ok(component)
}

/// Feeds `std::hash::Hash` data into a BLAKE3 hasher.
struct Blake3Hasher<'a>(&'a mut blake3::Hasher);

impl Hasher for Blake3Hasher<'_> {
    fn finish(&self) -> u64 {
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}
