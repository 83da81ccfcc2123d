//! Running one job to its end on a new instance, under its memory cap and
//! deadline: its `wasi:cli/run`, or one typed export ([`Call`]). Shared by
//! `tensor-wasm run` and the jobs API.

use super::call::{Call, GuestStopped};
use crate::assembly::Assembly;
use crate::assembly::capabilities::InstanceState;
use crate::platform::load;
use anyhow::{Result, anyhow};
use std::time::{Duration, Instant};
use wasmtime::component::{Component, Val};
use wasmtime::{Store, Trap};
use wasmtime_wasi::p2::bindings::Command;

/// What a job does.
#[derive(Debug, Clone)]
pub enum Task {
    /// Runs its `wasi:cli/run`.
    Run,
    /// Calls one export.
    Invoke(Call),
}

/// How a job ended, when it ended on its own.
pub enum Outcome {
    /// `wasi:cli/run` returned or the guest exited: its exit status.
    Exited(u8),
    /// The call returned these results.
    Returned(Vec<Val>),
}

/// Runs `task` on a new instance of `component`; an error says why the guest
/// did not finish (it could not start, trapped, or hit its deadline or
/// memory cap), naming `origin`.
pub async fn execute(
    assembly: &Assembly,
    component: &Component,
    state: InstanceState,
    task: &Task,
    timeout: Option<Duration>,
    origin: &str,
) -> Result<Outcome> {
    let mut store = Store::new(assembly.engine(), state);
    store.limiter(|s| &mut s.limiter);
    crate::platform::engine::set_wall_deadline(&mut store, timeout.map(|t| Instant::now() + t));
    match task {
        Task::Run => run(assembly, component, store, origin).await,
        Task::Invoke(call) => {
            let export = call.export(assembly.engine(), component)?;
            let instance = assembly
                .linker()
                .instantiate_async(&mut store, component)
                .await
                .map_err(|e| not_instantiated(origin, e))?;
            match call.call(&mut store, &instance, &export).await {
                Ok(results) => Ok(Outcome::Returned(results)),
                Err(e) => match e.downcast_ref::<GuestStopped>() {
                    Some(s) => Err(stopped(&store, s.interrupted, &s.cause, origin)),
                    None => Err(e),
                },
            }
        }
    }
}

async fn run(
    assembly: &Assembly,
    component: &Component,
    mut store: Store<InstanceState>,
    origin: &str,
) -> Result<Outcome> {
    let command = Command::instantiate_async(&mut store, component, assembly.linker())
        .await
        .map_err(|e| not_instantiated(origin, e))?;
    match command.wasi_cli_run().call_run(&mut store).await {
        Ok(Ok(())) => Ok(Outcome::Exited(0)),
        Ok(Err(())) => Ok(Outcome::Exited(1)),
        Err(e) => {
            if let Some(exit) = e.downcast_ref::<wasmtime_wasi::I32Exit>() {
                return Ok(Outcome::Exited(exit.0.clamp(0, 255) as u8));
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
        return anyhow!("{origin}: stopped at its timeout");
    }
    if store.data().limiter.hit {
        return anyhow!("{origin}: exceeded its memory limit");
    }
    anyhow!("{origin}: trapped: {cause}")
}
