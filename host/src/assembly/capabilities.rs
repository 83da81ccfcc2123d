//! The host capabilities and their one lifecycle (Spin's "factors", kept
//! smaller): each is built once per server, once per deployment (from its
//! spec and grants), and once per instance (kept in the instance's `Store`),
//! and adds its interfaces to the linker once per engine.
//!
//! A new capability is a module that implements [`Capability`] plus one line
//! in the [`capabilities!`] list below; the list's order is the linker's
//! (full WASI first: Rust std guests import `wasi:cli/*`). Requests, jobs
//! and deploy-time initializers all run in an [`InstanceState`].

use super::spec::{Grants, Limits};
use crate::platform::limiter::MemoryLimiter;
use crate::platform::metrics::Metrics;
use crate::tensor::device::Device;
use anyhow::Result;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::component::{Linker, ResourceTable};

/// What a capability's server-wide state is built from.
pub struct ServerEnv {
    /// Where durable data lives; `None` for a job (no durable keyvalue).
    pub data_dir: Option<PathBuf>,
    /// The device tensors compute on.
    pub device: Arc<Device>,
    /// Operator metrics.
    pub metrics: Arc<Metrics>,
    /// The trust policy (registry kernels are checked against it).
    pub policy: registry::Policy,
}

/// What a capability's deployment state is built from.
pub struct DeploymentEnv<'a> {
    /// The deployment's name.
    pub name: &'a str,
    /// The tenant its instances run for.
    pub tenant: &'a str,
    /// What its guests may touch.
    pub grants: &'a Grants,
    /// Its limits.
    pub limits: &'a Limits,
    /// Whether it runs signed artifacts only (`require-signed`).
    pub require_signed: bool,
    /// Where its keyvalue buckets live, when not in the embedded store.
    pub keyvalue: Option<&'a crate::assembly::spec::KeyvalueBackend>,
    /// For a headless job: its argv and stdio.
    pub job: Option<&'a crate::wasi::JobIo>,
    /// Where its tensors compute.
    pub placement: &'a Arc<crate::tensor::device::Placement>,
}

/// What a capability's instance state is built from.
pub struct InstanceEnv {
    /// When the instance's request (or job) started.
    pub started: Instant,
    /// Its wall-clock budget from `started`, if any.
    pub budget: Option<Duration>,
    /// A fixed seed for `wasi:random` (deploy-time pre-initialization, so
    /// that the same inputs snapshot to the same bytes); `None`: the OS's.
    pub random_seed: Option<u64>,
    /// Which of the deployment's GPUs the instance computes on (a model
    /// instance is pinned to one); `None`: the next working one in turn.
    pub slot: Option<usize>,
}

/// Host state of one instance.
pub struct InstanceState {
    /// Guest handles of every capability; freed with the instance.
    pub table: ResourceTable,
    /// The tenant's linear-memory cap for this instance.
    pub limiter: MemoryLimiter,
    /// Each capability's state.
    pub caps: InstanceCapabilities,
}

impl Drop for InstanceState {
    fn drop(&mut self) {
        // Before the table's handles are dropped.
        self.caps.end();
    }
}

impl InstanceState {
    /// Fresh state for one instance of a deployment with `caps`, capping
    /// linear memory at `max_memory` bytes.
    pub fn new(
        caps: &DeploymentCapabilities,
        max_memory: u64,
        env: &InstanceEnv,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            table: ResourceTable::new(),
            limiter: MemoryLimiter::new(max_memory),
            caps: caps.instance(env)?,
        })
    }

    /// Readies a reused instance's state for its next request, started as
    /// `env` says (`serving/instances.rs`).
    pub fn renew(&mut self, env: &InstanceEnv) {
        self.caps.renew(env);
    }

    /// Whether the last request left host objects behind that rule out
    /// reusing the instance (tensor memory, CUDA objects): dropping the
    /// instance frees them.
    pub fn left_behind(&mut self) -> bool {
        InstanceCapabilities::left_behind(&mut self.table)
    }
}

/// One host capability's lifecycle. `Self` is its server-wide state.
pub trait Capability: Sized + Send + Sync + 'static {
    /// Per-deployment state, shared by the deployment's instances.
    type Deployment: Send + Sync;
    /// Per-instance state, kept in the instance's `Store`.
    type Instance: Send;
    /// Builds the server-wide state (once per server or job).
    fn new(env: &ServerEnv) -> Result<Self>;
    /// Adds the capability's interfaces to `linker` (once per engine).
    fn add_to_linker(linker: &mut Linker<InstanceState>) -> Result<()>;
    /// Validates a deployment's grants and builds its state.
    fn deployment(&self, env: &DeploymentEnv) -> Result<Self::Deployment>;
    /// The state of one instance of a deployment.
    fn instance(deployment: &Self::Deployment, env: &InstanceEnv) -> Result<Self::Instance>;
    /// Readies a reused instance's state for its next request (nothing to
    /// do unless the state is per request).
    fn renew(_instance: &mut Self::Instance, _env: &InstanceEnv) {}
    /// Whether `table` holds handles of this capability that must not
    /// outlive a request (none unless they hold memory or device objects).
    fn left_behind(_table: &mut ResourceTable) -> bool {
        false
    }
    /// The instance is ending, its handles not yet dropped (nothing to do
    /// unless work in flight must stop first).
    fn end(_instance: &mut Self::Instance) {}
}

/// Declares the capability list: the server, deployment and instance
/// structs hold one field per capability, built in the list's order.
macro_rules! capabilities {
    ($($field:ident: $ty:ty),* $(,)?) => {
        /// Every capability's server-wide state.
        pub struct ServerCapabilities {
            $(
                #[doc = concat!("`", stringify!($field), "`'s.")]
                pub $field: $ty,
            )*
        }

        /// Every capability's state for one deployment.
        pub struct DeploymentCapabilities {
            $(
                #[doc = concat!("`", stringify!($field), "`'s.")]
                pub $field: <$ty as Capability>::Deployment,
            )*
        }

        /// Every capability's state for one instance.
        pub struct InstanceCapabilities {
            $(
                #[doc = concat!("`", stringify!($field), "`'s.")]
                pub $field: <$ty as Capability>::Instance,
            )*
        }

        impl ServerCapabilities {
            /// Builds every capability's server-wide state.
            pub fn new(env: &ServerEnv) -> Result<Self> {
                Ok(Self { $($field: <$ty as Capability>::new(env)?,)* })
            }

            /// Adds every capability's interfaces to `linker`.
            pub fn add_to_linker(linker: &mut Linker<InstanceState>) -> Result<()> {
                $(<$ty as Capability>::add_to_linker(linker)?;)*
                Ok(())
            }

            /// Every capability's state for the deployment `env` describes.
            pub fn deployment(&self, env: &DeploymentEnv) -> Result<DeploymentCapabilities> {
                Ok(DeploymentCapabilities {
                    $($field: self.$field.deployment(env)?,)*
                })
            }
        }

        impl DeploymentCapabilities {
            /// Every capability's state for one instance.
            pub fn instance(&self, env: &InstanceEnv) -> Result<InstanceCapabilities> {
                Ok(InstanceCapabilities {
                    $($field: <$ty as Capability>::instance(&self.$field, env)?,)*
                })
            }
        }

        impl InstanceCapabilities {
            /// Readies every capability's state for the instance's next request.
            pub fn renew(&mut self, env: &InstanceEnv) {
                $(<$ty as Capability>::renew(&mut self.$field, env);)*
            }

            /// Whether any capability's handles in `table` must not outlive a request.
            pub fn left_behind(table: &mut ResourceTable) -> bool {
                $(<$ty as Capability>::left_behind(table) ||)* false
            }

            /// Tells every capability that the instance is ending.
            pub fn end(&mut self) {
                $(<$ty as Capability>::end(&mut self.$field);)*
            }
        }
    };
}

capabilities! {
    wasi: crate::wasi::Wasi,
    outgoing: crate::outgoing::Outgoing,
    config: crate::config::Config,
    keyvalue: crate::keyvalue::Keyvalue,
    tensor: crate::tensor::TensorHost,
    cuda: crate::cuda::Cuda,
    scheduler: crate::scheduler::Scheduler,
    inference: crate::inference::Inference,
}
