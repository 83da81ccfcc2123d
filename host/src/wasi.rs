//! WASI 0.2 (wasmtime-wasi) as a deployment grants it: environment
//! variables, preopened directories (read-only unless granted writable), and
//! for a headless job its argv and stdio (the terminal's, or captured for
//! the jobs API). Nothing else of the host (no inherited environment, no
//! sockets beyond wasi:http) is visible.

use crate::assembly::capabilities::{
    Capability, DeploymentEnv, InstanceEnv, InstanceState, ServerEnv,
};
use crate::assembly::spec::DirGrant;
use crate::jobs::output::Captured;
use anyhow::Result;
use std::collections::BTreeMap;
use wasmtime::component::Linker;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// The WASI capability (no server-wide state).
pub struct Wasi;

/// What a deployment grants of WASI.
pub struct WasiGrants {
    env: BTreeMap<String, String>,
    dirs: Vec<DirGrant>,
    job: Option<JobIo>,
}

/// A headless job's argv (program name first) and where its output goes.
#[derive(Clone)]
pub struct JobIo {
    /// Its argv.
    pub args: Vec<String>,
    /// Its stdout and stderr, kept; `None`: the terminal's stdio.
    pub captured: Option<(Captured, Captured)>,
}

impl JobIo {
    /// A job on the terminal (`tensor-wasm run`).
    pub fn terminal(args: Vec<String>) -> Self {
        Self {
            args,
            captured: None,
        }
    }
}

impl Capability for Wasi {
    type Deployment = WasiGrants;
    type Instance = WasiCtx;

    fn new(_: &ServerEnv) -> Result<Self> {
        Ok(Wasi)
    }

    fn add_to_linker(linker: &mut Linker<InstanceState>) -> Result<()> {
        wasmtime_wasi::p2::add_to_linker_async(linker).map_err(anyhow::Error::from)
    }

    fn deployment(&self, env: &DeploymentEnv) -> Result<WasiGrants> {
        Ok(WasiGrants {
            env: env.grants.env.clone(),
            dirs: env.grants.dirs.clone(),
            job: env.job.cloned(),
        })
    }

    fn instance(grants: &WasiGrants, env: &InstanceEnv) -> Result<WasiCtx> {
        let mut builder = WasiCtxBuilder::new();
        if let Some(seed) = env.random_seed {
            use rand::SeedableRng;
            builder
                .secure_random(rand::rngs::StdRng::seed_from_u64(seed))
                .insecure_random(rand::rngs::StdRng::seed_from_u64(seed ^ 1))
                .insecure_random_seed(u128::from(seed));
        }
        match &grants.job {
            Some(JobIo {
                args,
                captured: None,
            }) => {
                builder.args(args).inherit_stdio();
            }
            Some(JobIo {
                args,
                captured: Some((out, err)),
            }) => {
                builder.args(args).stdout(out.clone()).stderr(err.clone());
            }
            None => {}
        }
        for (k, v) in &grants.env {
            builder.env(k, v);
        }
        for dir in &grants.dirs {
            let perms = if dir.writable {
                FsPerms::ReadWrite
            } else {
                FsPerms::ReadOnly
            };
            builder
                .preopened_dir(&dir.host, &dir.guest, perms)
                .map_err(|e| {
                    anyhow::anyhow!("cannot open granted directory {}: {e}", dir.host.display())
                })?;
        }
        Ok(builder.build())
    }
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.caps.wasi,
            table: &mut self.table,
        }
    }
}
