//! `wasi:config@0.2.0-rc.1` (wasmtime-wasi-config): a deployment's granted
//! config values and secrets, plus the values the host sets for every
//! deployment (keys under [`RESERVED_CONFIG_PREFIX`], which a deployment cannot
//! set): `tensorwasm.tenant`, `tensorwasm.deployment` and
//! `tensorwasm.tensor-device` (where the deployment's `wasi:tensor`
//! computes: `cpu`, `cuda:N` or `cuda:N,M`, so a model can pick its
//! batching for the device).

use crate::assembly::capabilities::{
    Capability, DeploymentEnv, InstanceEnv, InstanceState, ServerEnv,
};
use crate::assembly::spec::RESERVED_CONFIG_PREFIX;
use anyhow::Result;
use std::sync::Arc;
use wasmtime::component::Linker;
use wasmtime_wasi_config::{WasiConfig, WasiConfigVariables};

/// The config capability (no server-wide state).
pub struct Config;

impl Capability for Config {
    type Deployment = Arc<WasiConfigVariables>;
    type Instance = Arc<WasiConfigVariables>;

    fn new(_: &ServerEnv) -> Result<Self> {
        Ok(Config)
    }

    fn add_to_linker(linker: &mut Linker<InstanceState>) -> Result<()> {
        wasmtime_wasi_config::add_to_linker(linker, |s: &mut InstanceState| {
            // Called as each `wasi:config` call starts; the look-up that
            // follows is a map read, so the span marks when it happened.
            drop(crate::platform::telemetry::Span::child("wasi:config get"));
            WasiConfig::new(&s.caps.config)
        })
        .map_err(anyhow::Error::from)
    }

    fn deployment(&self, env: &DeploymentEnv) -> Result<Arc<WasiConfigVariables>> {
        let grants = env.grants;
        let platform = [
            ("tenant", env.tenant.to_string()),
            ("deployment", env.name.to_string()),
            ("tensor-device", env.placement.name().to_string()),
        ]
        .map(|(k, v)| (format!("{RESERVED_CONFIG_PREFIX}{k}"), v));
        Ok(Arc::new(
            grants
                .config
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .chain(
                    grants
                        .secrets
                        .iter()
                        .map(|(k, v)| (k.clone(), v.expose().to_string())),
                )
                .chain(platform)
                .collect(),
        ))
    }

    fn instance(config: &Arc<WasiConfigVariables>, _: &InstanceEnv) -> Result<Self::Instance> {
        Ok(config.clone())
    }
}
