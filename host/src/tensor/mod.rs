//! `wasi:tensor@0.1.0`: immutable tensors held by the host, operations on
//! them through one backend trait (the CPU, or a CUDA device), model weights
//! shared by all instances, and per-tenant memory accounting.
//!
//! Lifecycle (`crate::assembly::capabilities`): [`TensorHost`] is built once
//! per server, [`TenantTensors`] once per deployment (its quota and granted
//! weights), and a [`TensorCtx`] per instance, kept in the `Store`; guest
//! handles live in the instance's `ResourceTable` and are freed with it.

pub mod backend;
#[allow(missing_docs)]
pub mod bindings;
pub mod cpu;
pub mod cuda;
pub mod device;
pub mod dtype;
pub mod error;
pub mod fused;
mod fused_impl;
pub mod gguf;
pub mod gpus;
pub mod layout;
pub mod loaded;
pub mod ops;
pub mod quota;
pub mod storage;
pub mod types;
mod types_impl;
pub mod usage;
pub mod weights;

pub use dtype::DType;
pub use error::TensorError;
pub use types::Tensor;

use crate::assembly::capabilities::{
    Capability, DeploymentEnv, InstanceEnv, InstanceState, ServerEnv,
};
use crate::platform::metrics::{DeploymentLabel, Metrics, TenantLabel};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use wasmtime::component::{HasData, Linker, ResourceTable};

/// Server-wide tensor state: the backend, tenant quotas, loaded weights.
pub struct TensorHost {
    device: Arc<device::Device>,
    quotas: quota::Quotas,
    weights: weights::WeightsCache,
    metrics: Arc<Metrics>,
}

impl TensorHost {
    /// Tensor state on `device`, reporting tenants' bytes, quotas and
    /// weights through `metrics`.
    pub fn new(device: Arc<device::Device>, metrics: Arc<Metrics>) -> Self {
        Self {
            device,
            quotas: quota::Quotas::default(),
            weights: weights::WeightsCache::default(),
            metrics,
        }
    }

    /// The backend's name.
    pub fn backend_name(&self) -> String {
        self.device.describe()
    }

    /// Why no GPU can compute, when the server has GPUs and every one was
    /// taken out.
    pub fn gpus_out(&self) -> Option<String> {
        let gpus = self.device.gpus();
        let out: Vec<String> = gpus
            .iter()
            .filter_map(|g| Some(format!("{} ({})", g.name(), g.failed()?)))
            .collect();
        (!gpus.is_empty() && out.len() == gpus.len())
            .then(|| format!("every GPU was taken out: {}", out.join(", ")))
    }

    /// Where `tenant`'s deployment computes (`device::Device::place`).
    pub fn place(
        &self,
        tenant: &str,
        want: &device::DeviceSpec,
        quota: u64,
        own_kernels: bool,
    ) -> anyhow::Result<device::Placement> {
        self.device.place(tenant, want, quota, own_kernels)
    }

    /// Deployment `name`'s tensor state on `placement`: `tenant`'s quota of
    /// `limit` bytes, the granted weights (`name → file`), loaded now on
    /// each of its GPUs, and its counters.
    pub fn tenant(
        &self,
        (tenant, name): (&str, &str),
        limit: u64,
        granted: &BTreeMap<String, PathBuf>,
        placement: &Arc<device::Placement>,
    ) -> anyhow::Result<Arc<TenantTensors>> {
        let label = TenantLabel {
            tenant: tenant.to_string(),
        };
        let quota = self.quotas.get(tenant, limit, || {
            let m = &self.metrics;
            m.tensor_quota
                .get_or_create(&label)
                .set(i64::try_from(limit).unwrap_or(i64::MAX));
            // At 0 until a deployment of the tenant loads weights.
            drop(m.weights_bytes.get_or_create(&label));
            m.tensor_bytes.get_or_create(&label).clone()
        })?;
        let mut slots = Vec::new();
        for backend in placement.handles() {
            let mut weights = BTreeMap::new();
            for (name, path) in granted {
                let w = self
                    .weights
                    .get(path, backend, || {
                        self.metrics.weights_bytes.get_or_create(&label).clone()
                    })
                    .map_err(|e| anyhow::anyhow!("weights `{name}`: {e:#}"))?;
                weights.insert(name.clone(), w);
            }
            slots.push(Slot {
                tensors: ops::Tensors::new(backend.clone(), quota.clone()),
                weights,
            });
        }
        let label = DeploymentLabel::new(tenant, name);
        let m = &self.metrics;
        let counters = usage::Counters {
            deployment: label.clone(),
            ops: m.tensor_ops.clone(),
            op_seconds: m.tensor_op_seconds.clone(),
            reads: m.tensor_reads.get_or_create(&label).clone(),
            read_seconds: m.tensor_read_seconds.get_or_create(&label).clone(),
            calls: m.tensor_calls.get_or_create(&label).clone(),
            call_seconds: m.tensor_call_seconds.get_or_create(&label).clone(),
            steps: m.tensor_recorded_steps.get_or_create(&label).clone(),
            step_updates: m.tensor_recorded_updates.get_or_create(&label).clone(),
        };
        Ok(Arc::new(TenantTensors {
            slots,
            placement: placement.clone(),
            quota,
            counters,
        }))
    }
}

impl Capability for TensorHost {
    type Deployment = Arc<TenantTensors>;
    type Instance = TensorCtx;

    fn new(env: &ServerEnv) -> anyhow::Result<Self> {
        Ok(TensorHost::new(env.device.clone(), env.metrics.clone()))
    }

    fn add_to_linker(linker: &mut Linker<InstanceState>) -> anyhow::Result<()> {
        add_to_linker(linker)
    }

    fn deployment(&self, env: &DeploymentEnv) -> anyhow::Result<Arc<TenantTensors>> {
        self.tenant(
            (env.tenant, env.name),
            env.limits.tensor_memory,
            &env.grants.weights,
            env.placement,
        )
    }

    fn instance(shared: &Arc<TenantTensors>, env: &InstanceEnv) -> anyhow::Result<TensorCtx> {
        let slot = env.slot.unwrap_or_else(|| shared.placement.pick());
        Ok(TensorCtx::new(shared.clone(), slot))
    }

    /// A step still being recorded is dropped before the handles are: a
    /// `wasi:cuda` buffer freed inside a capture would never be freed.
    fn end(instance: &mut TensorCtx) {
        if let Some(gpu) = instance.tensors.cuda() {
            gpu.abandon();
        }
    }

    /// Tensors charged to the tenant's quota; shared weights may stay.
    fn left_behind(table: &mut ResourceTable) -> bool {
        table.iter_mut().any(|entry| {
            entry
                .downcast_ref::<types::Tensor>()
                .is_some_and(|t| t.charged())
        })
    }
}

impl TensorStateView for InstanceState {
    fn tensor(&mut self) -> TensorView<'_> {
        TensorView {
            ctx: &self.caps.tensor,
            table: &mut self.table,
        }
    }
}

/// One deployment's tensor state, shared by its instances.
pub struct TenantTensors {
    /// Per GPU of the placement (one on the CPU): its backend, its weights.
    slots: Vec<Slot>,
    placement: Arc<device::Placement>,
    quota: Arc<quota::Quota>,
    counters: usage::Counters,
}

/// A deployment's tensors on one of its devices.
struct Slot {
    tensors: ops::Tensors,
    weights: BTreeMap<String, Arc<weights::WeightsFile>>,
}

impl TenantTensors {
    /// Bytes the tenant holds now.
    pub fn bytes_in_use(&self) -> u64 {
        self.quota.used()
    }

    /// Where this deployment's tensors compute: `cpu`, `cuda:N`, `cuda:N,M`.
    pub fn device_name(&self) -> &str {
        self.placement.name()
    }

    /// Where the deployment computes.
    pub fn placement(&self) -> &Arc<device::Placement> {
        &self.placement
    }

    /// Why the deployment cannot compute now (every GPU of its placement
    /// taken out, or its contexts faulted): requests get a 503.
    pub fn unavailable(&self) -> Option<String> {
        self.placement.unavailable()
    }
}

/// Per-instance tensor state kept in the `Store`.
pub struct TensorCtx {
    shared: Arc<TenantTensors>,
    slot: usize,
    tensors: ops::Tensors,
    usage: usage::Usage,
    /// What [`TensorCtx::report`] added to the deployment's counters so far.
    reported: usage::Totals,
    /// The lane's recorded steps when last reported (a lane outlives
    /// instances).
    steps: cuda::RecordedSteps,
}

impl TensorCtx {
    /// State for one instance of a deployment on its device `slot` (on a
    /// GPU, with a stream of its own from the tenant's pool).
    pub fn new(shared: Arc<TenantTensors>, slot: usize) -> Self {
        let slot = slot.min(shared.slots.len() - 1);
        let tensors = shared.slots[slot].tensors.for_instance();
        let steps = tensors.cuda().map(|g| g.recorded()).unwrap_or_default();
        Self {
            shared,
            slot,
            tensors,
            usage: usage::Usage::default(),
            reported: usage::Totals::default(),
            steps,
        }
    }

    /// The instance's tensor operations.
    pub fn tensors(&self) -> &ops::Tensors {
        &self.tensors
    }

    /// Whether the instance's device is down (`device::Placement::down`),
    /// or a recorded step of its could not run (its tensors are undefined):
    /// a warm instance then is not reused.
    pub fn down(&self) -> bool {
        let lost = self.tensors.cuda().is_some_and(|g| g.lost());
        lost || self.shared.placement.len() > 1 && self.shared.placement.down(self.slot).is_some()
    }

    /// The weights granted to the deployment, on the instance's device.
    fn weights(&self) -> &BTreeMap<String, Arc<weights::WeightsFile>> {
        &self.shared.slots[self.slot].weights
    }

    /// What the instance did with `wasi:tensor` since the last report,
    /// added now to the deployment's counters.
    pub fn report(&mut self) -> usage::Totals {
        let now = self.usage.totals();
        let d = now.since(self.reported);
        self.reported = now;
        let counters = &self.shared.counters;
        counters.add(&self.usage.take_by_op(), d);
        if let Some(now) = self.tensors.cuda().map(|g| g.recorded()) {
            counters.steps.inc_by(now.launched - self.steps.launched);
            counters
                .step_updates
                .inc_by(now.updated - self.steps.updated);
            self.steps = now;
        }
        d
    }
}

/// What the `wasi:tensor` host functions operate on.
pub struct TensorView<'a> {
    /// The instance's tensor state.
    pub ctx: &'a TensorCtx,
    /// The instance's resource table.
    pub table: &'a mut ResourceTable,
}

/// Types with tensor state in their store data.
pub trait TensorStateView: Send {
    /// The view the host functions use.
    fn tensor(&mut self) -> TensorView<'_>;
}

struct HasTensor;

impl HasData for HasTensor {
    type Data<'a> = TensorView<'a>;
}

/// Adds `wasi:tensor` and `wasi:tensor-fused` to `linker`.
pub fn add_to_linker<T: TensorStateView + 'static>(linker: &mut Linker<T>) -> anyhow::Result<()> {
    bindings::Imports::add_to_linker::<T, HasTensor>(linker, |s| s.tensor())?;
    bindings::fused::wasi::tensor_fused::ops::add_to_linker::<T, HasTensor>(linker, |s| {
        s.tensor()
    })?;
    bindings::fused::wasi::tensor_fused::steps::add_to_linker::<T, HasTensor>(linker, |s| {
        s.tensor()
    })?;
    // The generated `from-bytes` receives a host copy of the guest's bytes;
    // this one reads them in place.
    linker.allow_shadowing(true);
    linker.instance("wasi:tensor/types@0.1.0")?.func_wrap(
        "[static]tensor.from-bytes",
        types_impl::from_guest_bytes::<T>,
    )?;
    linker.allow_shadowing(false);
    Ok(())
}
