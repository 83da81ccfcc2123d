//! `wasi:cuda@0.1.0`: device memory, vetted kernels and launches.
//!
//! On a CUDA host every resource lives in the tenant's context, and work is
//! issued on the instance's own stream (the one its tensor ops use) unless
//! the guest names a stream it created; on a CPU host every call answers
//! `no-device`. Guests load vetted modules — built in (`kernels/vetted/`)
//! or published to the registry ([`library`]) — by name or digest, each
//! kernel with a declared signature that every launch is
//! checked against (argument kinds, pointer extents, alignment), and launch
//! configurations are checked against the device's limits. Buffers are
//! charged to the tenant's tensor-memory quota.
//!
//! Lifecycle (`crate::assembly::capabilities`): per server the kernel
//! [`Library`], per deployment its [`Kernels`] rules (`cuda-source`,
//! `require-signed`), a [`CudaCtx`] per instance, kept in the `Store`;
//! handles live in the instance's resource table and are freed with it. The
//! device, context and stream are the instance's tensor state's.

mod bindings;
mod error;
mod launch;
pub mod library;
pub mod signature;
mod types;
mod types_impl;
pub mod vetted;

pub use types::{Buffer, Event, Kernel, Module, Stream};

use crate::assembly::capabilities::{
    Capability, DeploymentEnv, InstanceEnv, InstanceState, ServerEnv,
};
use crate::platform::metrics::DeploymentLabel;
use crate::tensor::ops::Tensors;
use cudarc::driver::CudaStream;
use library::Library;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::sync::Arc;
use wasmtime::component::{HasData, Linker, ResourceTable};

/// The `wasi:cuda` capability (its device is the tensor capability's).
pub struct Cuda {
    library: Arc<Library>,
    launches: Family<DeploymentLabel, Counter>,
}

/// A deployment's kernel rules.
#[derive(Clone)]
pub struct Kernels {
    library: Arc<Library>,
    /// Whether guests may compile kernels of their own (`cuda-source`).
    allow_source: bool,
    /// Whether registry kernels must be signed (`require-signed`).
    require_signed: bool,
    /// Its launches (`tensorwasm_cuda_launches_total`).
    launches: Counter,
}

impl Capability for Cuda {
    type Deployment = Kernels;
    type Instance = CudaCtx;

    fn new(env: &ServerEnv) -> anyhow::Result<Self> {
        let library = Library::new(env.data_dir.as_deref(), env.policy.clone())?;
        Ok(Cuda {
            library: Arc::new(library),
            launches: env.metrics.cuda_launches.clone(),
        })
    }

    fn add_to_linker(linker: &mut Linker<InstanceState>) -> anyhow::Result<()> {
        add_to_linker(linker)
    }

    /// Under a trust policy guests run signed kernels only, so a
    /// `cuda-source` grant is refused before the deployment starts.
    fn deployment(&self, env: &DeploymentEnv) -> anyhow::Result<Kernels> {
        let signed_only = env.require_signed || self.library.policy_active();
        if env.grants.cuda_source && signed_only {
            anyhow::bail!(
                "grant `cuda-source = true` lets guests run unsigned kernels, which the trust \
                 policy forbids (publish them with `tensor-wasm kernel publish --sign` instead)"
            );
        }
        Ok(Kernels {
            library: self.library.clone(),
            allow_source: env.grants.cuda_source,
            require_signed: env.require_signed,
            launches: self
                .launches
                .get_or_create(&DeploymentLabel::new(env.tenant, env.name))
                .clone(),
        })
    }

    fn instance(kernels: &Kernels, _: &InstanceEnv) -> anyhow::Result<CudaCtx> {
        Ok(CudaCtx::new(kernels.clone()))
    }

    /// A reused instance holds no CUDA handles (else it is not reused), so
    /// the streams its last request made are done with.
    fn renew(ctx: &mut CudaCtx, _: &InstanceEnv) {
        ctx.streams.clear();
    }

    /// Every CUDA object holds device memory or a device context.
    fn left_behind(table: &mut ResourceTable) -> bool {
        table.iter_mut().any(|entry| {
            entry.is::<Buffer>()
                || entry.is::<Stream>()
                || entry.is::<Event>()
                || entry.is::<Module>()
                || entry.is::<Kernel>()
        })
    }
}

impl CudaStateView for InstanceState {
    fn cuda(&mut self) -> CudaView<'_> {
        CudaView {
            table: &mut self.table,
            tensors: self.caps.tensor.tensors(),
            ctx: &mut self.caps.cuda,
        }
    }
}

/// Per-instance `wasi:cuda` state.
pub struct CudaCtx {
    /// The deployment's kernel rules.
    kernels: Kernels,
    /// Streams the instance created (kept until it ends).
    streams: Vec<Arc<CudaStream>>,
}

impl CudaCtx {
    /// State for one instance of a deployment with `kernels`' rules.
    pub fn new(kernels: Kernels) -> Self {
        Self {
            kernels,
            streams: Vec::new(),
        }
    }
}

/// What the `wasi:cuda` host functions operate on.
pub struct CudaView<'a> {
    /// The instance's resource table.
    pub table: &'a mut ResourceTable,
    /// The instance's tensor operations (its backend, stream and quota).
    pub tensors: &'a Tensors,
    /// The instance's CUDA state.
    pub ctx: &'a mut CudaCtx,
}

/// Types with a resource table for `wasi:cuda`.
pub trait CudaStateView: Send {
    /// The view the host functions use.
    fn cuda(&mut self) -> CudaView<'_>;
}

struct HasCuda;

impl HasData for HasCuda {
    type Data<'a> = CudaView<'a>;
}

/// Adds `wasi:cuda` to `linker`.
pub fn add_to_linker<T: CudaStateView + 'static>(linker: &mut Linker<T>) -> anyhow::Result<()> {
    use bindings::wasi::cuda::{device, kernels, memory, streams, types};
    // Interface by interface: the world would also add `wasi:tensor/types`,
    // which the tensor capability owns.
    types::add_to_linker::<T, HasCuda>(linker, T::cuda)?;
    device::add_to_linker::<T, HasCuda>(linker, T::cuda)?;
    streams::add_to_linker::<T, HasCuda>(linker, T::cuda)?;
    memory::add_to_linker::<T, HasCuda>(linker, T::cuda)?;
    kernels::add_to_linker::<T, HasCuda>(linker, T::cuda)?;
    // The generated `buffer.write` receives a host copy of the guest's
    // bytes; this one copies them to the device in place.
    linker.allow_shadowing(true);
    linker
        .instance("wasi:cuda/memory@0.1.0")?
        .func_wrap("[method]buffer.write", types_impl::write_guest_bytes::<T>)?;
    linker.allow_shadowing(false);
    Ok(())
}
