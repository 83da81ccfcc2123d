//! Composition of `.wac` worlds into one component, in process, with
//! wac-parser and wac-graph.
//!
//! A world names the components it instantiates as packages
//! (`new tensorwasm:hello { ... }`). Each package is found, in order:
//! 1. in explicit dependencies (`--dep NAME=PATH`, or a deployment's `deps`);
//! 2. as `deps/<namespace>/<name>.wasm` next to the `.wac` file (wac's layout);
//! 3. among the components built into the binary (`tensorwasm:hello`,
//!    `tensorwasm:guard`, and the gateway's `tensorwasm:router`, `auth`,
//!    `ratelimit` and `audit`).

use anyhow::{Context, Result, anyhow, bail};
use indexmap::IndexMap;
use miette::Diagnostic;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use wac_graph::EncodeOptions;
use wac_parser::Document;
use wac_types::BorrowedPackageKey;

/// The guest components built into the host binary, by package name.
pub const BUILTIN_PACKAGES: &[(&str, &[u8])] = &[
    (
        "tensorwasm:hello",
        include_bytes!(concat!(env!("TW_GUEST_DIR"), "/hello.wasm")),
    ),
    (
        "tensorwasm:guard",
        include_bytes!(concat!(env!("TW_GUEST_DIR"), "/guard.wasm")),
    ),
    (
        "tensorwasm:router",
        include_bytes!(concat!(env!("TW_GUEST_DIR"), "/router.wasm")),
    ),
    (
        "tensorwasm:auth",
        include_bytes!(concat!(env!("TW_GUEST_DIR"), "/auth.wasm")),
    ),
    (
        "tensorwasm:ratelimit",
        include_bytes!(concat!(env!("TW_GUEST_DIR"), "/ratelimit.wasm")),
    ),
    (
        "tensorwasm:audit",
        include_bytes!(concat!(env!("TW_GUEST_DIR"), "/audit.wasm")),
    ),
    (
        "tensorwasm:openai",
        include_bytes!(concat!(env!("TW_GUEST_DIR"), "/openai.wasm")),
    ),
    (
        "tensorwasm:minilm",
        include_bytes!(concat!(env!("TW_GUEST_DIR"), "/minilm.wasm")),
    ),
    (
        "tensorwasm:smollm",
        include_bytes!(concat!(env!("TW_GUEST_DIR"), "/smollm.wasm")),
    ),
];

/// The worlds embedded in the binary, by name: `default`
/// (`worlds/gateway.wac`, served by `tensor-wasm serve` with no path) and
/// `openai` (`worlds/openai.wac`, mounted at `/v1` beside it).
pub const EMBEDDED_WORLDS: &[(&str, &str)] = &[
    ("default", include_str!("../../../worlds/gateway.wac")),
    ("openai", include_str!("../../../worlds/openai.wac")),
];

/// Where packages named by a world come from.
#[derive(Debug, Clone, Default)]
pub struct PackageSources {
    /// Explicit package name → component file.
    pub deps: BTreeMap<String, PathBuf>,
    /// The directory holding the `.wac` file (for its `deps/` folder).
    pub base_dir: Option<PathBuf>,
}

impl PackageSources {
    /// Finds the bytes of package `name` (e.g. `tensorwasm:hello`).
    pub fn find(&self, name: &str) -> Result<Option<Vec<u8>>> {
        if let Some(path) = self.deps.get(name) {
            let bytes = std::fs::read(path)
                .with_context(|| format!("cannot read package `{name}` from {}", path.display()))?;
            return Ok(Some(bytes));
        }
        if let (Some(base), Some((ns, pkg))) = (&self.base_dir, name.split_once(':')) {
            let path = base.join("deps").join(ns).join(format!("{pkg}.wasm"));
            if path.is_file() {
                let bytes = std::fs::read(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                return Ok(Some(bytes));
            }
        }
        Ok(BUILTIN_PACKAGES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, bytes)| bytes.to_vec()))
    }
}

/// What happens to each package's bytes before they are composed: deploy-time
/// pre-initialization (`crate::platform::preinit`) when serving, [`unchanged`] elsewhere.
pub type Prepare<'a> = &'a dyn Fn(&str, Vec<u8>) -> Result<Vec<u8>>;

/// The [`Prepare`] that leaves packages as they are.
pub fn unchanged(_name: &str, bytes: Vec<u8>) -> Result<Vec<u8>> {
    Ok(bytes)
}

/// Composes the world in `source` (read from `origin`, used in errors) into
/// a component's bytes, each package passed through `prepare` first.
pub fn compose(
    origin: &str,
    source: &str,
    sources: &PackageSources,
    prepare: Prepare<'_>,
) -> Result<Vec<u8>> {
    // wac-parser asserts on some malformed inputs; a bad file must give an
    // error, never a panic.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        compose_inner(origin, source, sources, prepare)
    }));
    match result {
        Ok(r) => r,
        Err(_) => bail!("{origin}: the world could not be parsed (the WAC parser rejected it)"),
    }
}

fn compose_inner(
    origin: &str,
    source: &str,
    sources: &PackageSources,
    prepare: Prepare<'_>,
) -> Result<Vec<u8>> {
    let doc = Document::parse(source).map_err(|e| located(origin, source, &e))?;
    let mut packages: IndexMap<BorrowedPackageKey<'_>, Vec<u8>> = IndexMap::new();
    loop {
        match doc.resolve(packages.clone()) {
            Ok(resolution) => {
                return resolution
                    .encode(EncodeOptions::default())
                    .map_err(|e| located(origin, source, &e));
            }
            Err(wac_parser::resolution::Error::UnknownPackage { name, span }) => {
                let bytes = sources.find(&name)?.ok_or_else(|| {
                    anyhow!(
                        "{}: unknown package `{name}`: pass --dep {name}=PATH, put it at \
                         deps/{}.wasm beside the world, or use a built-in ({})",
                        position(origin, source, span.offset()),
                        name.replace(':', "/"),
                        builtin_names()
                    )
                })?;
                // Borrow the package name from the source text so it lives as long
                // as the document.
                let text = &source[span.offset()..span.offset() + span.len()];
                let key = BorrowedPackageKey::from_name_and_version(
                    text.split('@').next().unwrap_or(text),
                    None,
                );
                if packages.contains_key(&key) {
                    bail!(
                        "{}: package `{name}` could not be resolved",
                        position(origin, source, span.offset())
                    );
                }
                packages.insert(key, prepare(&name, bytes)?);
            }
            Err(e) => return Err(located(origin, source, &e)),
        }
    }
}

fn builtin_names() -> String {
    BUILTIN_PACKAGES
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

/// An error with the file, line and column of its primary label.
fn located(
    origin: &str,
    source: &str,
    e: &(dyn Diagnostic + Send + Sync + 'static),
) -> anyhow::Error {
    let offset = e.labels().and_then(|mut l| l.next()).map(|l| l.offset());
    let mut message = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        message.push_str(": ");
        message.push_str(&c.to_string());
        cause = c.source();
    }
    match offset {
        Some(o) => anyhow!("{}: {message}", position(origin, source, o)),
        None => anyhow!("{origin}: {message}"),
    }
}

fn position(origin: &str, source: &str, offset: usize) -> String {
    let before = &source[..offset.min(source.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    format!("{origin}:{line}:{col}")
}

/// Reads and composes the `.wac` file at `path`.
pub fn compose_file(
    path: &Path,
    deps: &BTreeMap<String, PathBuf>,
    prepare: Prepare<'_>,
) -> Result<Vec<u8>> {
    let source =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let sources = PackageSources {
        deps: deps.clone(),
        base_dir: path.parent().map(Path::to_path_buf),
    };
    compose(&path.display().to_string(), &source, &sources, prepare)
}
