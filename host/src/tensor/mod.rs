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
use crate::platform::metrics::TenantLabel;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use wasmtime::component::{HasData, Linker, ResourceTable};

/// Server-wide tensor state: the backend, tenant quotas, loaded weights.
pub struct TensorHost {
    device: Arc<device::Device>,
    quotas: quota::Quotas,
    weights: weights::WeightsCache,
    bytes: Family<TenantLabel, Gauge>,
}

impl TensorHost {
    /// Tensor state on `device`, reporting tenant bytes through `bytes`.
    pub fn new(device: Arc<device::Device>, bytes: Family<TenantLabel, Gauge>) -> Self {
        Self {
            device,
            quotas: quota::Quotas::default(),
            weights: weights::WeightsCache::default(),
            bytes,
        }
    }

    /// The backend's name.
    pub fn backend_name(&self) -> String {
        self.device.describe()
    }

    /// A deployment's tensor state: `tenant`'s quota of `limit` bytes and the
    /// granted weights (`name → file`), loaded now.
    pub fn tenant(
        &self,
        tenant: &str,
        limit: u64,
        granted: &BTreeMap<String, PathBuf>,
    ) -> anyhow::Result<Arc<TenantTensors>> {
        let quota = self.quotas.get(tenant, limit, || {
            self.bytes
                .get_or_create(&TenantLabel {
                    tenant: tenant.to_string(),
                })
                .clone()
        })?;
        let backend = self.device.backend(tenant)?;
        let mut weights = BTreeMap::new();
        for (name, path) in granted {
            let w = self
                .weights
                .get(path, &backend)
                .map_err(|e| anyhow::anyhow!("weights `{name}`: {e:#}"))?;
            weights.insert(name.clone(), w);
        }
        Ok(Arc::new(TenantTensors {
            tensors: ops::Tensors::new(backend, quota.clone()),
            quota,
            weights,
        }))
    }
}

impl Capability for TensorHost {
    type Deployment = Arc<TenantTensors>;
    type Instance = TensorCtx;

    fn new(env: &ServerEnv) -> anyhow::Result<Self> {
        Ok(TensorHost::new(
            env.device.clone(),
            env.metrics.tensor_bytes.clone(),
        ))
    }

    fn add_to_linker(linker: &mut Linker<InstanceState>) -> anyhow::Result<()> {
        add_to_linker(linker)
    }

    fn deployment(&self, env: &DeploymentEnv) -> anyhow::Result<Arc<TenantTensors>> {
        self.tenant(env.tenant, env.limits.tensor_memory, &env.grants.weights)
    }

    fn instance(shared: &Arc<TenantTensors>, _: &InstanceEnv) -> anyhow::Result<TensorCtx> {
        Ok(TensorCtx::new(shared.clone()))
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
    tensors: ops::Tensors,
    quota: Arc<quota::Quota>,
    weights: BTreeMap<String, Arc<weights::WeightsFile>>,
}

impl TenantTensors {
    /// Bytes the tenant holds now.
    pub fn bytes_in_use(&self) -> u64 {
        self.quota.used()
    }

    /// Where this deployment's tensors compute: `cpu` or `cuda:N`.
    pub fn device_name(&self) -> String {
        self.tensors.backend().name()
    }
}

/// Per-instance tensor state kept in the `Store`.
pub struct TensorCtx {
    shared: Arc<TenantTensors>,
    tensors: ops::Tensors,
    usage: usage::Usage,
}

impl TensorCtx {
    /// State for one instance of a deployment (on a GPU, with a stream of
    /// its own from the tenant's pool).
    pub fn new(shared: Arc<TenantTensors>) -> Self {
        let tensors = shared.tensors.for_instance();
        Self {
            shared,
            tensors,
            usage: usage::Usage::default(),
        }
    }

    /// The instance's tensor operations.
    pub fn tensors(&self) -> &ops::Tensors {
        &self.tensors
    }

    /// What the instance did with `wasi:tensor` so far.
    pub fn usage(&self) -> usage::Totals {
        self.usage.totals()
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
