//! `tensor-wasm compose`, `compile` and `inspect`: a component or world as
//! written (never pre-initialized), composed, compiled to an artifact, or
//! listed.

use super::args::EngineArgs;
use crate::platform::cache::{self, ArtifactCache};
use crate::platform::compose;
use crate::platform::engine::{self, EngineOptions};
use crate::platform::load;
use anyhow::Result;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use wasmtime::component::types::ComponentItem;

/// Runs `tensor-wasm compose`.
pub fn compose(world: &Path, output: &Path, deps: &BTreeMap<String, PathBuf>) -> Result<()> {
    let bytes = compose::compose_file(world, deps, &compose::unchanged)?;
    load::check_component_bytes(&world.display().to_string(), &bytes)?;
    std::fs::write(output, &bytes)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", output.display()))?;
    eprintln!(
        "composed {} into {} ({} bytes)",
        world.display(),
        output.display(),
        bytes.len()
    );
    Ok(())
}

/// Loads `path` (and its `deps`) as written, not pre-initialized, on an
/// engine with `opts` and no artifact cache: what `compile` and `inspect` see.
fn load_unchanged(
    opts: &EngineOptions,
    path: &Path,
    deps: &BTreeMap<String, PathBuf>,
) -> Result<(wasmtime::Engine, wasmtime::component::Component)> {
    let engine = engine::build(opts)?;
    let loaded = load::load_path(
        &engine,
        &ArtifactCache::new(None),
        path,
        deps,
        &compose::unchanged,
    )?;
    Ok((engine, loaded))
}

/// Runs `tensor-wasm compile`.
pub fn compile(
    input: &Path,
    output: &Path,
    deps: &BTreeMap<String, PathBuf>,
    args: &EngineArgs,
) -> Result<()> {
    let (_, loaded) = load_unchanged(
        &EngineOptions {
            max_memory: args.max_memory,
            max_instances: args.max_instances,
        },
        input,
        deps,
    )?;
    cache::write_artifact(&loaded, None, output)?;
    eprintln!("compiled {} into {}", input.display(), output.display());
    Ok(())
}

/// Runs `tensor-wasm inspect`.
pub fn inspect(path: &Path, deps: &BTreeMap<String, PathBuf>) -> Result<()> {
    let (engine, loaded) = load_unchanged(
        &EngineOptions {
            max_memory: 256 << 20,
            max_instances: 1,
        },
        path,
        deps,
    )?;
    let ty = loaded.component_type();
    println!("{}", path.display());
    println!("imports:");
    for (name, ext) in ty.imports(&engine) {
        println!("  {name} ({})", describe(&ext.ty));
    }
    println!("exports:");
    for (name, ext) in ty.exports(&engine) {
        println!("  {name} ({})", describe(&ext.ty));
    }
    Ok(())
}

fn describe(item: &ComponentItem) -> &'static str {
    match item {
        ComponentItem::ComponentFunc(_) => "function",
        ComponentItem::CoreFunc(_) => "core function",
        ComponentItem::Module(_) => "core module",
        ComponentItem::Component(_) => "component",
        ComponentItem::ComponentInstance(_) => "instance",
        ComponentItem::Type(_) => "type",
        _ => "resource",
    }
}
