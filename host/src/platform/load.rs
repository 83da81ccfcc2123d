//! Turning a path into a component the host can serve: read it, tell what it
//! is, compose or compile it (through the artifact cache), and check that it
//! exports `wasi:http/incoming-handler` and imports nothing the host lacks.

use crate::assembly::capabilities::InstanceState;
use crate::platform::cache::{self, ArtifactCache, Origin};
use crate::platform::compose;
use anyhow::{Context, Result, anyhow, bail};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;
use wasmtime::Engine;
use wasmtime::component::{Component, Linker};
use wasmtime_wasi_http::p2::bindings::ProxyPre;

/// The interface every served component must export.
pub const HANDLER: &str = "wasi:http/incoming-handler";

/// What a file holds, judged by extension and first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A WAC world to compose.
    World,
    /// A deployment file.
    Deployments,
    /// A component binary.
    Component,
    /// A tensor-wasm precompiled artifact.
    Artifact,
}

/// Classifies the file at `path`.
pub fn kind_of(path: &Path) -> Result<Kind> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("wac") => return Ok(Kind::World),
        Some("toml") => return Ok(Kind::Deployments),
        _ => {}
    }
    let mut head = [0u8; 8];
    let n = {
        use std::io::Read;
        let mut f =
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        f.read(&mut head)
            .with_context(|| format!("cannot read {}", path.display()))?
    };
    if cache::is_artifact(&head[..n]) {
        Ok(Kind::Artifact)
    } else {
        Ok(Kind::Component)
    }
}

/// Checks that `bytes` are a component (not a core module, not junk).
pub fn check_component_bytes(origin: &str, bytes: &[u8]) -> Result<()> {
    if !bytes.starts_with(b"\0asm") {
        bail!("{origin}: not a WebAssembly file (it does not start with the `\\0asm` header)");
    }
    if wasmparser::Parser::is_core_wasm(bytes) {
        bail!(
            "{origin}: this is a core WebAssembly module, not a component; build it for \
             wasm32-wasip2 (or wrap it with `wasm-tools component new`)"
        );
    }
    if !wasmparser::Parser::is_component(bytes) {
        bail!("{origin}: unsupported WebAssembly binary version (expected a component)");
    }
    Ok(())
}

/// Compiles (or loads from cache) component `bytes`.
pub fn compile(
    engine: &Engine,
    cache: &ArtifactCache,
    origin: &str,
    bytes: &[u8],
) -> Result<Component> {
    check_component_bytes(origin, bytes)?;
    let started = Instant::now();
    let (component, from) = cache
        .load(engine, bytes)
        .map_err(|e| anyhow!("{origin}: invalid component: {}", first_line(&e)))?;
    match from {
        Origin::Cached => tracing::info!("{origin}: loaded from cache in {:?}", started.elapsed()),
        Origin::Compiled => tracing::info!("{origin}: compiled in {:?}", started.elapsed()),
        Origin::Shared => {
            tracing::debug!("{origin}: the component compiled for an earlier deployment")
        }
    }
    Ok(component)
}

/// Loads whatever `path` holds (component, artifact or world) as a component;
/// a component, or each package of a world, passes through `prepare` first.
pub fn load_path(
    engine: &Engine,
    cache: &ArtifactCache,
    path: &Path,
    deps: &BTreeMap<String, PathBuf>,
    prepare: compose::Prepare<'_>,
) -> Result<Component> {
    let origin = path.display().to_string();
    match kind_of(path)? {
        Kind::World => {
            let bytes = compose::compose_file(path, deps, prepare)?;
            compile(engine, cache, &origin, &bytes)
        }
        Kind::Artifact => {
            let component =
                cache::read_artifact(engine, path, None).map_err(|e| anyhow!("{origin}: {e:#}"))?;
            tracing::info!("{origin}: loaded precompiled artifact");
            Ok(component)
        }
        Kind::Component => {
            let bytes = std::fs::read(path).with_context(|| format!("cannot read {origin}"))?;
            check_component_bytes(&origin, &bytes)?;
            let bytes = prepare(&origin, bytes)?;
            compile(engine, cache, &origin, &bytes)
        }
        Kind::Deployments => bail!("{origin}: a deployment file cannot be used here"),
    }
}

/// Checks the component's exports and imports and pre-instantiates it.
pub fn prepare(
    engine: &Engine,
    linker: &Linker<InstanceState>,
    origin: &str,
    component: &Component,
) -> Result<ProxyPre<InstanceState>> {
    let ty = component.component_type();
    let exports: Vec<String> = ty
        .exports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    if !exports.iter().any(|e| e.starts_with(HANDLER)) {
        let listed = if exports.is_empty() {
            "none".to_string()
        } else {
            exports.join(", ")
        };
        bail!(
            "{origin}: does not export {HANDLER} (it exports: {listed}); a served component must be an HTTP handler"
        );
    }
    let pre = linker.instantiate_pre(component).map_err(|e| {
        let msg = first_line(&anyhow::Error::from(e));
        anyhow!("{origin}: has an import this host cannot satisfy: {msg}")
    })?;
    ProxyPre::new(pre).map_err(|e| {
        anyhow!(
            "{origin}: its {HANDLER} export has the wrong shape: {}",
            first_line(&anyhow::Error::from(e))
        )
    })
}

/// The whole error chain on one line.
pub fn first_line(e: &anyhow::Error) -> String {
    format!("{e:#}").replace('\n', " ")
}
