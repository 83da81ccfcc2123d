//! From a deployment spec to a ready deployment, in one place: the
//! [`Assembly`] owns what every deployment shares (engine, linker, artifact
//! cache, each capability's server-wide state, metrics) and turns a
//! [`spec::DeploymentSpec`] into a [`Deployment`] — models granted, each
//! capability's deployment state built, the component loaded (composed,
//! pre-initialized, compiled) and pre-instantiated. `serve` and `run` call
//! it; so will anything that deploys while the server runs.

mod batching;
pub mod capabilities;
pub mod default_world;
pub mod models;
pub mod signed;
pub mod spec;

use crate::platform::cache::ArtifactCache;
use crate::platform::compose;
use crate::platform::engine::{self, EngineOptions, EpochTicker};
use crate::platform::load;
use crate::platform::metrics::Metrics;
use crate::platform::preinit::Preinit;
use crate::serving::deployment::Deployment;
use crate::serving::instances::Pools;
use crate::tensor::device::{Device, DeviceSpec};
use anyhow::{Context, Result};
use capabilities::{
    DeploymentCapabilities, DeploymentEnv, InstanceEnv, InstanceState, ServerCapabilities,
    ServerEnv,
};
use spec::{DeploymentSpec, Source};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

/// The export a job must have.
pub const JOB_EXPORT: &str = "wasi:cli/run";

/// What an [`Assembly`] is built with.
pub struct Options {
    /// Engine settings (the largest memory cap of any deployment).
    pub engine: EngineOptions,
    /// Where compiled artifacts and kernels are cached; `None`: nowhere.
    pub cache_dir: Option<PathBuf>,
    /// Durable data (the keyvalue store); `None`: none (a job).
    pub data_dir: Option<PathBuf>,
    /// `--models-dir`, looked up only when a deployment grants models.
    pub models_dir: Option<PathBuf>,
    /// The tensor device to open.
    pub device: DeviceSpec,
    /// Whether float32 matrix products may use TF32 on the GPU.
    pub tf32: bool,
    /// The trust policy ([`signed::policy`]).
    pub policy: registry::Policy,
}

/// Everything deployments share, and the one way to assemble one.
pub struct Assembly {
    engine: Engine,
    linker: Linker<InstanceState>,
    cache: ArtifactCache,
    caps: ServerCapabilities,
    metrics: Arc<Metrics>,
    /// Reusing deployments' idle instances.
    pools: Arc<Pools>,
    models_dir: Option<PathBuf>,
    /// Started before any deployment loads: pre-initializers run under
    /// deadlines.
    _ticker: EpochTicker,
}

impl Assembly {
    /// Opens the engine, the device and every capability's server state.
    pub fn new(opts: Options) -> Result<Self> {
        let engine = engine::build(&opts.engine)?;
        let device = Device::open(&opts.device, opts.cache_dir.clone(), opts.tf32)?;
        tracing::info!("tensor backend: {}", device.describe());
        let metrics = Arc::new(Metrics::new((&device.name(), &device.hardware())));
        device.watch(&metrics);
        let caps = ServerCapabilities::new(&ServerEnv {
            data_dir: opts.data_dir,
            device: Arc::new(device),
            metrics: metrics.clone(),
            policy: opts.policy,
        })?;
        let mut linker = Linker::new(&engine);
        ServerCapabilities::add_to_linker(&mut linker)?;
        Ok(Self {
            _ticker: EpochTicker::start(&engine),
            engine,
            linker,
            cache: ArtifactCache::new(opts.cache_dir),
            caps,
            metrics,
            pools: Arc::default(),
            models_dir: opts.models_dir,
        })
    }

    /// The engine every instance runs on.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Why no GPU can compute, when the server has GPUs and every one was
    /// taken out.
    pub fn gpus_out(&self) -> Option<String> {
        self.caps.tensor.gpus_out()
    }

    /// Operator metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Writes an audit `record` (JSON) at `key` in `tenant`'s `audit`
    /// bucket, durably, where `tensor-wasm audit` reads the gateway's.
    pub async fn audit(&self, tenant: &str, key: String, record: Vec<u8>) -> Result<()> {
        self.caps
            .keyvalue
            .record(tenant, "audit", key, record)
            .await
    }

    /// While the guard lives, deployments built from the same component
    /// (after pre-initialization) share one compiled copy of it.
    pub fn sharing_components(&self) -> crate::platform::cache::Sharing<'_> {
        self.cache.sharing()
    }

    /// Assembles `spec` into a deployment ready to serve.
    pub fn for_deployment(&self, mut spec: DeploymentSpec) -> Result<Deployment> {
        if !spec.grants.models.is_empty() {
            let dir = crate::platform::dirs::models_dir(self.models_dir.as_ref())?;
            models::grant(&mut spec.grants, &dir, &spec.name);
        }
        let caps = Arc::new(self.capabilities(&spec, None)?);
        let (origin, component) = self.load(&spec, &caps)?;
        self.check_inference(&spec, &component)?;
        let pre = load::prepare(&self.engine, &self.linker, &origin, &component)?;
        if let Some(inference) = &spec.inference {
            caps.inference.set(self.batchers(&spec, inference, &caps)?);
        }
        let uses_keyvalue = component
            .component_type()
            .imports(&self.engine)
            .any(|(name, _)| name.starts_with("wasi:keyvalue/"));
        if uses_keyvalue {
            self.caps.keyvalue.open_durable()?;
        }
        let reuse = match spec.instances {
            i if i.reused() => format!(
                ", instances reused for up to {} requests, dropped after {} idle",
                i.reuse,
                humantime::format_duration(i.idle)
            ),
            _ => String::new(),
        };
        let batching = match &spec.inference {
            Some(i) => format!(
                ", batching across requests (up to {} per model call)",
                i.max_batch
            ),
            None => String::new(),
        };
        tracing::info!(
            "deployment `{}` (tenant `{}`): {} on {}{}{reuse}{batching}",
            spec.name,
            spec.tenant,
            origin,
            spec.route.host.as_deref().unwrap_or("*"),
            spec.route.path.as_deref().unwrap_or("/")
        );
        Ok(Deployment::new(
            spec,
            pre,
            self.metrics.clone(),
            caps,
            &self.pools,
        ))
    }

    /// Assembles a headless job (`tensor-wasm run`, the jobs API): its
    /// component, loaded as written and exporting [`JOB_EXPORT`] (unless the
    /// task calls an export), and the state of its one instance, started now
    /// with `budget` and with `job`'s argv and stdio.
    pub fn for_job(
        &self,
        spec: &DeploymentSpec,
        job: &crate::wasi::JobIo,
        budget: Option<Duration>,
        task: &crate::jobs::run::Task,
    ) -> Result<(Component, InstanceState)> {
        let any_export = matches!(task, crate::jobs::run::Task::Invoke(_));
        let Source::Component(path) = &spec.source else {
            anyhow::bail!("a job is one component");
        };
        let component = load::load_path(
            &self.engine,
            &self.cache,
            path,
            &BTreeMap::new(),
            &compose::unchanged,
        )?;
        let exports_run = component
            .component_type()
            .exports(&self.engine)
            .any(|(name, _)| name.starts_with(JOB_EXPORT));
        if !exports_run && !any_export {
            anyhow::bail!(
                "{}: does not export {JOB_EXPORT}; a job is a command component (build a Rust `bin` for wasm32-wasip2)",
                path.display()
            );
        }
        let caps = self.capabilities(spec, Some(job))?;
        let env = InstanceEnv {
            started: Instant::now(),
            budget,
            random_seed: None,
            slot: None,
        };
        let state = InstanceState::new(&caps, spec.limits.memory, &env)?;
        Ok((component, state))
    }

    /// The linker jobs instantiate with.
    pub fn linker(&self) -> &Linker<InstanceState> {
        &self.linker
    }

    fn capabilities(
        &self,
        spec: &DeploymentSpec,
        job: Option<&crate::wasi::JobIo>,
    ) -> Result<DeploymentCapabilities> {
        let placement = self
            .caps
            .tensor
            .place(
                &spec.tenant,
                &spec.device,
                spec.limits.tensor_memory,
                spec.grants.cuda_source,
            )
            .with_context(|| format!("deployment `{}`", spec.name))?;
        self.caps.deployment(&DeploymentEnv {
            placement: &Arc::new(placement),
            name: &spec.name,
            tenant: &spec.tenant,
            grants: &spec.grants,
            limits: &spec.limits,
            require_signed: spec.require_signed,
            keyvalue: spec.keyvalue.as_ref(),
            job,
        })
    }

    /// Pre-initializes packages under `spec`'s limits and its capabilities.
    fn preinit<'a>(
        &'a self,
        spec: &'a DeploymentSpec,
        caps: &'a DeploymentCapabilities,
    ) -> Preinit<'a> {
        Preinit {
            engine: &self.engine,
            linker: &self.linker,
            cache: &self.cache,
            caps,
            limits: &spec.limits,
        }
    }

    /// Loads the spec's component or world, pre-initializing each package
    /// that asks for it under the deployment's own capabilities.
    fn load(
        &self,
        spec: &DeploymentSpec,
        caps: &DeploymentCapabilities,
    ) -> Result<(String, Component)> {
        let preinit = self.preinit(spec, caps);
        let prepare = |name: &str, bytes: Vec<u8>| preinit.apply(name, bytes);
        let (origin, component) = match &spec.source {
            Source::Embedded(name) => {
                let origin = format!("embedded world `{name}`");
                let world = compose::EMBEDDED_WORLDS
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, w)| *w)
                    .ok_or_else(|| anyhow::anyhow!("no {origin}"))?;
                let bytes = compose::compose(
                    &origin,
                    world,
                    &compose::PackageSources::default(),
                    &prepare,
                )?;
                let component = load::compile(&self.engine, &self.cache, &origin, &bytes)?;
                (origin, component)
            }
            Source::World(path, deps) => (
                path.display().to_string(),
                load::load_path(&self.engine, &self.cache, path, deps, &prepare)?,
            ),
            Source::Component(path) => (
                path.display().to_string(),
                load::load_path(&self.engine, &self.cache, path, &BTreeMap::new(), &prepare)?,
            ),
        };
        Ok((origin, component))
    }
}
