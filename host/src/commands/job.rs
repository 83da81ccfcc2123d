//! `tensor-wasm run`: one headless job (a `wasi:cli/run` component, or with
//! `--invoke` one typed export: [`super::invoke`]) with the same
//! capabilities a served instance gets, and the terminal's stdio.

use super::args::RunArgs;
use super::invoke::{Call, GuestStopped};
use crate::assembly::capabilities::InstanceState;
use crate::assembly::spec::{DeploymentSpec, DirGrant, Grants, Instances, Limits, Source};
use crate::assembly::{Assembly, Options};
use crate::platform::dirs;
use crate::platform::engine::EngineOptions;
use crate::platform::load;
use anyhow::{Context, Result, anyhow};
use std::time::{Duration, Instant};
use wasmtime::component::Component;
use wasmtime::{Store, Trap};
use wasmtime_wasi::p2::bindings::Command;

/// Runs the job; returns its exit status.
pub fn run(args: RunArgs) -> Result<u8> {
    let assembly = Assembly::new(Options {
        engine: EngineOptions {
            max_memory: args.engine.max_memory,
            max_instances: args.engine.max_instances,
        },
        cache_dir: dirs::cache_dir(args.cache_dir.as_ref()),
        data_dir: None,
        models_dir: None,
        device: args.device.device,
        tf32: args.device.tf32,
        policy: registry::Policy::default(),
    })?;
    let program = args
        .path
        .file_stem()
        .map_or("job".to_string(), |s| s.to_string_lossy().into_owned());
    let argv: Vec<String> = std::iter::once(program)
        .chain(args.args.iter().cloned())
        .collect();
    let call = args.invoke.as_deref().map(Call::parse).transpose()?;
    let (component, state) = assembly.for_job(&spec(&args), &argv, args.timeout, call.is_some())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let origin = args.path.display().to_string();
    match call {
        Some(call) => runtime.block_on(invoke(
            &assembly,
            &component,
            state,
            &call,
            args.timeout,
            &origin,
        )),
        None => runtime.block_on(execute(&assembly, &component, state, args.timeout, &origin)),
    }
}

/// Calls `call` on a new instance under its budget and prints its results.
async fn invoke(
    assembly: &Assembly,
    component: &Component,
    state: InstanceState,
    call: &Call,
    timeout: Option<Duration>,
    origin: &str,
) -> Result<u8> {
    let export = call.export(assembly.engine(), component)?;
    let mut store = job_store(assembly, state, timeout);
    let instance = assembly
        .linker()
        .instantiate_async(&mut store, component)
        .await
        .map_err(|e| not_instantiated(origin, e))?;
    match call.call(&mut store, &instance, &export).await {
        Ok(results) => {
            for r in results {
                println!("{r}");
            }
            Ok(0)
        }
        Err(e) => match e.downcast_ref::<GuestStopped>() {
            Some(s) => Err(stopped(&store, s.interrupted, &s.cause, origin)),
            None => Err(e),
        },
    }
}

/// The job's store: its memory cap and, with a `timeout`, its deadline.
fn job_store(
    assembly: &Assembly,
    state: InstanceState,
    timeout: Option<Duration>,
) -> Store<InstanceState> {
    let mut store = Store::new(assembly.engine(), state);
    store.limiter(|s| &mut s.limiter);
    crate::platform::engine::set_wall_deadline(&mut store, timeout.map(|t| Instant::now() + t));
    store
}

fn not_instantiated(origin: &str, e: wasmtime::Error) -> anyhow::Error {
    anyhow!(
        "{origin}: cannot instantiate: {}",
        load::first_line(&e.into())
    )
}

/// Why a guest stopped: its deadline, its memory cap, or a trap.
fn stopped(
    store: &Store<InstanceState>,
    interrupted: bool,
    cause: &str,
    origin: &str,
) -> anyhow::Error {
    if interrupted {
        return anyhow!("{origin}: stopped at its --timeout");
    }
    if store.data().limiter.hit {
        return anyhow!("{origin}: exceeded its memory limit (--max-memory)");
    }
    anyhow!("{origin}: trapped: {cause}")
}

/// Runs the job's `wasi:cli/run` under its budget; its exit status.
async fn execute(
    assembly: &Assembly,
    component: &Component,
    state: InstanceState,
    timeout: Option<Duration>,
    origin: &str,
) -> Result<u8> {
    let mut store = job_store(assembly, state, timeout);
    let command = Command::instantiate_async(&mut store, component, assembly.linker())
        .await
        .map_err(|e| not_instantiated(origin, e))?;
    match command.wasi_cli_run().call_run(&mut store).await {
        Ok(Ok(())) => Ok(0),
        Ok(Err(())) => Ok(1),
        Err(e) => {
            if let Some(exit) = e.downcast_ref::<wasmtime_wasi::I32Exit>() {
                return Ok(exit.0.clamp(0, 255) as u8);
            }
            let interrupted = matches!(e.downcast_ref::<Trap>(), Some(Trap::Interrupt));
            Err(stopped(
                &store,
                interrupted,
                &e.root_cause().to_string(),
                origin,
            ))
        }
    }
}

/// The job as a deployment of tenant `job`: its weights, read-only
/// directories and environment; its limits from the flags.
fn spec(args: &RunArgs) -> DeploymentSpec {
    DeploymentSpec {
        name: "job".into(),
        tenant: "job".into(),
        source: Source::Component(args.path.clone()),
        route: Default::default(),
        limits: Limits {
            timeout: args.timeout.unwrap_or(Duration::MAX),
            memory: args.engine.max_memory,
            concurrency: None,
            body: 0,
            tensor_memory: args.tensor_memory,
        },
        instances: Instances::FRESH,
        inference: None,
        require_signed: false,
        grants: Grants {
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
            weights: args.weights.iter().cloned().collect(),
            ..Grants::default()
        },
    }
}
