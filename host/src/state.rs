//! What each request's `Store` carries: the WASI and wasi:http contexts built
//! from the deployment's grants, the tenant's memory limiter, the
//! outgoing-HTTP policy, and the state of our own capabilities (tensor,
//! cuda, scheduler).

use crate::cuda::{CudaCtx, CudaStateView, CudaView};
use crate::deploy::Grants;
use crate::keyvalue::{KeyvalueCtx, KeyvalueStateView, KeyvalueView};
use crate::scheduler::{SchedulerCtx, SchedulerStateView};
use crate::tensor::{TenantTensors, TensorCtx, TensorStateView, TensorView};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_config::WasiConfigVariables;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

/// Host state of one request's instance.
pub struct RequestState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    /// The tenant's linear-memory cap for this instance.
    pub limiter: MemoryLimiter,
    policy: OutgoingPolicy,
    config: Arc<WasiConfigVariables>,
    keyvalue: KeyvalueCtx,
    tensor: TensorCtx,
    cuda: CudaCtx,
    scheduler: SchedulerCtx,
}

/// The parts of a deployment's grants that are shared by all its requests.
pub struct GrantSet {
    grants: Grants,
    config: Arc<WasiConfigVariables>,
    outgoing: Arc<[String]>,
    tensors: Arc<TenantTensors>,
    keyvalue: KeyvalueCtx,
    job_args: Option<Vec<String>>,
}

/// The seed of `wasi:random` while a component pre-initializes.
const INIT_SEED: u64 = 0x7465_6e73_6f72_7761;

/// Config keys the host sets for every deployment (a deployment cannot set them).
pub const RESERVED_CONFIG_PREFIX: &str = "tensorwasm.";

impl GrantSet {
    /// Prepares `grants` (and the deployment's tensor and keyvalue state) for
    /// per-request use. `wasi:config` sees the granted config and secrets,
    /// plus `tensorwasm.tenant`, `tensorwasm.deployment` and
    /// `tensorwasm.tensor-device` (where `wasi:tensor` computes: `cpu` or
    /// `cuda:N`, so a model can pick its batching for the device).
    pub fn new(
        grants: Grants,
        tensors: Arc<TenantTensors>,
        keyvalue: KeyvalueCtx,
        deployment: &str,
    ) -> Self {
        let platform = [
            (
                "tensorwasm.tenant".to_string(),
                keyvalue.tenant().to_string(),
            ),
            ("tensorwasm.deployment".to_string(), deployment.to_string()),
            (
                "tensorwasm.tensor-device".to_string(),
                tensors.device_name(),
            ),
        ];
        let config = Arc::new(
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
        );
        let outgoing = grants
            .outgoing_hosts
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect();
        Self {
            grants,
            config,
            outgoing,
            tensors,
            keyvalue,
            job_args: None,
        }
    }

    /// Makes instances headless jobs: they see `args` (the first being the
    /// program name) and the host's stdin, stdout and stderr.
    pub fn for_job(mut self, args: Vec<String>) -> Self {
        self.job_args = Some(args);
        self
    }
}

impl RequestState {
    /// Fresh state for one request under `grants`, capping memory at
    /// `max_memory` bytes, with `budget` (if any) to run from `started`.
    pub fn new(
        grants: &GrantSet,
        max_memory: u64,
        started: Instant,
        budget: Option<Duration>,
    ) -> anyhow::Result<Self> {
        Self::build(grants, max_memory, started, budget, WasiCtxBuilder::new())
    }

    /// State for a component's deploy-time initializer (`crate::preinit`):
    /// the same grants, with `wasi:random` seeded by a constant, so that the
    /// same component and inputs snapshot to the same bytes.
    pub fn for_initialization(grants: &GrantSet, max_memory: u64) -> anyhow::Result<Self> {
        use rand::SeedableRng;
        let mut builder = WasiCtxBuilder::new();
        builder
            .secure_random(rand::rngs::StdRng::seed_from_u64(INIT_SEED))
            .insecure_random(rand::rngs::StdRng::seed_from_u64(INIT_SEED ^ 1))
            .insecure_random_seed(u128::from(INIT_SEED));
        Self::build(grants, max_memory, Instant::now(), None, builder)
    }

    fn build(
        grants: &GrantSet,
        max_memory: u64,
        started: Instant,
        budget: Option<Duration>,
        mut builder: WasiCtxBuilder,
    ) -> anyhow::Result<Self> {
        if let Some(args) = &grants.job_args {
            builder.args(args).inherit_stdio();
        }
        for (k, v) in &grants.grants.env {
            builder.env(k, v);
        }
        for dir in &grants.grants.dirs {
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
        Ok(Self {
            wasi: builder.build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            limiter: MemoryLimiter::new(max_memory),
            policy: OutgoingPolicy {
                allowed: grants.outgoing.clone(),
            },
            config: grants.config.clone(),
            keyvalue: grants.keyvalue.clone(),
            tensor: TensorCtx::new(grants.tensors.clone()),
            cuda: CudaCtx::new(grants.grants.cuda_source),
            scheduler: match budget {
                Some(b) => SchedulerCtx::new(started, b),
                None => SchedulerCtx::unbounded(),
            },
        })
    }

    /// The `wasi:config` view of this request's granted values.
    pub fn config(&mut self) -> wasmtime_wasi_config::WasiConfig<'_> {
        wasmtime_wasi_config::WasiConfig::new(&self.config)
    }
}

impl TensorStateView for RequestState {
    fn tensor(&mut self) -> TensorView<'_> {
        TensorView {
            ctx: &self.tensor,
            table: &mut self.table,
        }
    }
}

impl KeyvalueStateView for RequestState {
    fn keyvalue(&mut self) -> KeyvalueView<'_> {
        KeyvalueView {
            table: &mut self.table,
            ctx: &self.keyvalue,
        }
    }
}

impl CudaStateView for RequestState {
    fn cuda(&mut self) -> CudaView<'_> {
        CudaView {
            table: &mut self.table,
            tensors: self.tensor.tensors(),
            ctx: &mut self.cuda,
        }
    }
}

impl SchedulerStateView for RequestState {
    fn scheduler(&mut self) -> &mut SchedulerCtx {
        &mut self.scheduler
    }
}

impl WasiView for RequestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for RequestState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.policy,
        }
    }
}

/// Caps the sum of all linear memories of one instance and remembers
/// whether the cap was hit, so a trap that follows is counted as a
/// memory-cap kill.
pub struct MemoryLimiter {
    cap: u64,
    used: u64,
    /// Set when a growth was refused because of the cap.
    pub hit: bool,
}

impl MemoryLimiter {
    fn new(cap: u64) -> Self {
        Self {
            cap,
            used: 0,
            hit: false,
        }
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let grow = desired.saturating_sub(current) as u64;
        if self.used.saturating_add(grow) > self.cap {
            self.hit = true;
            return Ok(false);
        }
        self.used += grow;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// Outgoing HTTP: denied unless the host is granted.
struct OutgoingPolicy {
    allowed: Arc<[String]>,
}

impl WasiHttpHooks for OutgoingPolicy {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        http::Response<wasmtime_wasi_http::WasiBody>,
                        Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                    ),
                    wasmtime_wasi_http::Error,
                >,
            > + Send,
    > {
        drop(fut);
        let uri = request.uri();
        let host = uri.host().unwrap_or("").to_ascii_lowercase();
        let with_port = uri.port_u16().map(|p| format!("{host}:{p}"));
        let granted = self
            .allowed
            .iter()
            .any(|a| *a == host || with_port.as_deref() == Some(a.as_str()));
        if !granted {
            tracing::info!(%host, "outgoing request denied: host not granted");
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        Box::new(async move {
            use http_body_util::BodyExt;
            let (res, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                res.map(BodyExt::boxed_unsync),
                Box::new(io)
                    as Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
            ))
        })
    }
}
