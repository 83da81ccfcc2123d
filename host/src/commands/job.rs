//! `tensor-wasm run`: one headless job (a `wasi:cli/run` component, or with
//! `--invoke` one typed export: [`crate::jobs::call`]) with the same
//! capabilities a served instance gets, and the terminal's stdio.

use super::args::RunArgs;
use crate::assembly::spec::{DeploymentSpec, DirGrant, Grants, Instances, Limits, Source};
use crate::assembly::{Assembly, Options};
use crate::jobs::call::{Call, wave};
use crate::jobs::run::{Outcome, Task, execute};
use crate::platform::dirs;
use crate::platform::engine::EngineOptions;
use crate::tensor::device::DeviceSpec;
use crate::wasi::JobIo;
use anyhow::{Context, Result};
use std::time::Duration;

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
        device: args.device.device.clone(),
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
    let task = match args.invoke.as_deref() {
        Some(text) => Task::Invoke(Call::parse(text)?),
        None => Task::Run,
    };
    let job = JobIo::terminal(argv);
    let (component, state) = assembly.for_job(&spec(&args), &job, args.timeout, &task)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let origin = args.path.display().to_string();
    let outcome = runtime.block_on(execute(
        &assembly,
        &component,
        state,
        &task,
        args.timeout,
        &origin,
    ))?;
    match outcome {
        Outcome::Exited(status) => Ok(status),
        Outcome::Returned(results) => {
            for r in &results {
                println!("{}", wave(r));
            }
            Ok(0)
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
        keyvalue: None,
        require_signed: false,
        device: DeviceSpec::Auto,
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
