//! `tensor-wasm run`: one headless job (a `wasi:cli/run` component) with the
//! same capabilities a served instance gets, and the terminal's stdio.

use crate::cache::ArtifactCache;
use crate::cli::RunArgs;
use crate::deploy::{DirGrant, Grants};
use crate::engine::{self, EngineOptions, EpochTicker};
use crate::load;
use crate::metrics::Metrics;
use crate::state::{GrantSet, RequestState};
use crate::tensor::TensorHost;
use crate::tensor::device::Device;
use anyhow::{Context, Result, anyhow, bail};
use std::collections::BTreeMap;
use std::time::Instant;
use wasmtime::{Store, Trap};
use wasmtime_wasi::p2::bindings::Command;

/// The export a job must have.
const RUN: &str = "wasi:cli/run";

/// Runs the job; returns its exit status.
pub fn run(args: RunArgs) -> Result<u8> {
    let origin = args.path.display().to_string();
    let engine = engine::build(&EngineOptions {
        max_memory: args.engine.max_memory,
        max_instances: args.engine.max_instances,
    })?;
    let cache = ArtifactCache::new(args.cache_dir.clone().or_else(ArtifactCache::default_dir));
    let component = load::load_path(
        &engine,
        &cache,
        &args.path,
        &BTreeMap::new(),
        &crate::compose::unchanged,
    )?;
    let exports_run = component
        .component_type()
        .exports(&engine)
        .any(|(name, _)| name.starts_with(RUN));
    if !exports_run {
        bail!(
            "{origin}: does not export {RUN}; a job is a command component (build a Rust `bin` for wasm32-wasip2)"
        );
    }
    let linker = load::linker(&engine)?;
    let metrics = Metrics::new();
    let device = Device::open(
        args.device.device,
        args.cache_dir.clone().or_else(ArtifactCache::default_dir),
        args.device.tf32,
    )?;
    tracing::info!("tensor backend: {}", device.describe());
    let tensor_host = TensorHost::new(device, metrics.tensor_bytes.clone());
    let weights: BTreeMap<_, _> = args.weights.iter().cloned().collect();
    let tensors = tensor_host.tenant("job", args.tensor_memory, &weights)?;
    let grants = Grants {
        dirs: args
            .dirs
            .iter()
            .map(|(host, guest)| DirGrant {
                host: host.clone(),
                guest: guest.clone(),
                writable: false,
            })
            .collect(),
        env: args.env.iter().cloned().collect(),
        weights,
        ..Grants::default()
    };
    let program = args
        .path
        .file_stem()
        .map_or("job".to_string(), |s| s.to_string_lossy().into_owned());
    let argv = std::iter::once(program)
        .chain(args.args.iter().cloned())
        .collect();
    let keyvalue = crate::keyvalue::KeyvalueCtx::new(None, Default::default(), "job".into());
    let grants = GrantSet::new(grants, tensors, keyvalue, "job").for_job(argv);
    let started = Instant::now();
    let state = RequestState::new(&grants, args.engine.max_memory, started, args.timeout)?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let _ticker = EpochTicker::start(&engine);
    runtime.block_on(async move {
        let mut store = Store::new(&engine, state);
        store.limiter(|s| &mut s.limiter);
        let deadline = args.timeout.map(|t| started + t);
        crate::engine::set_wall_deadline(&mut store, deadline);
        let command = Command::instantiate_async(&mut store, &component, &linker)
            .await
            .map_err(|e| {
                anyhow!(
                    "{origin}: cannot instantiate: {}",
                    load::first_line(&e.into())
                )
            })?;
        match command.wasi_cli_run().call_run(&mut store).await {
            Ok(Ok(())) => Ok(0),
            Ok(Err(())) => Ok(1),
            Err(e) => {
                if let Some(exit) = e.downcast_ref::<wasmtime_wasi::I32Exit>() {
                    return Ok(exit.0.clamp(0, 255) as u8);
                }
                if matches!(e.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
                    bail!("{origin}: stopped at its --timeout");
                }
                if store.data().limiter.hit {
                    bail!("{origin}: exceeded its memory limit (--max-memory)");
                }
                bail!("{origin}: trapped: {}", e.root_cause())
            }
        }
    })
}
