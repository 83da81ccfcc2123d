//! Which backend computes tensor ops: `--device auto|cpu|cuda[:N]`. The CPU
//! backend is shared by every tenant; on CUDA each tenant gets its own
//! backend (its own context) the first time one of its deployments starts.

use super::backend::Backend;
use super::cpu::CpuBackend;
use super::cuda::{self, CudaBackend, CudaDevice};
use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

/// What `--device` asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    /// A GPU when a CUDA driver and device are present, else the CPU.
    Auto,
    /// The CPU backend.
    Cpu,
    /// CUDA device N (an error when it cannot be opened).
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| format!("expected auto, cpu, cuda or cuda:N, got `{s}`")),
        }
    }
}

/// The device tensor ops run on.
pub enum Device {
    /// Host memory, one backend for all.
    Cpu(Arc<CpuBackend>),
    /// A CUDA device, one backend (context) per tenant.
    Cuda {
        /// The device.
        gpu: Arc<CudaDevice>,
        /// Backends by tenant.
        tenants: Mutex<HashMap<String, Arc<CudaBackend>>>,
    },
}

impl Device {
    /// Opens what `spec` asks for; `cache_dir` keeps compiled kernels.
    pub fn open(spec: DeviceSpec, cache_dir: Option<PathBuf>, tf32: bool) -> anyhow::Result<Self> {
        let cuda = |n| -> anyhow::Result<Self> {
            Ok(Self::Cuda {
                gpu: Arc::new(CudaDevice::open(n, cache_dir.clone(), tf32)?),
                tenants: Mutex::new(HashMap::new()),
            })
        };
        match spec {
            DeviceSpec::Cpu => Ok(Self::cpu()),
            DeviceSpec::Cuda(n) => cuda(n).map_err(|e| e.context(format!("--device cuda:{n}"))),
            DeviceSpec::Auto if !cuda::driver_present() => Ok(Self::cpu()),
            DeviceSpec::Auto => cuda(0).or_else(|e| {
                tracing::warn!("CUDA driver present but unusable ({e:#}); using the CPU");
                Ok(Self::cpu())
            }),
        }
    }

    /// The CPU backend.
    pub fn cpu() -> Self {
        Self::Cpu(Arc::new(CpuBackend))
    }

    /// One line for the start-up log.
    pub fn describe(&self) -> String {
        match self {
            Self::Cpu(_) => "cpu".into(),
            Self::Cuda { gpu, .. } => gpu.describe(),
        }
    }

    /// What computes: `cpu`, or the GPU, its architecture, memory and
    /// driver (stable across restarts, unlike [`Device::describe`]).
    pub fn hardware(&self) -> String {
        match self {
            Self::Cpu(_) => "cpu".into(),
            Self::Cuda { gpu, .. } => gpu.hardware(),
        }
    }

    /// Where tensors compute, as guests are told: `cpu` or `cuda:N`.
    pub fn name(&self) -> String {
        match self {
            Self::Cpu(_) => "cpu".into(),
            Self::Cuda { gpu, .. } => format!("cuda:{}", gpu.ordinal()),
        }
    }

    /// The backend `tenant`'s tensors live on.
    pub fn backend(&self, tenant: &str) -> anyhow::Result<DeviceHandle> {
        match self {
            Self::Cpu(b) => Ok(DeviceHandle::Cpu(b.clone())),
            Self::Cuda { gpu, tenants } => {
                let mut map = tenants.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(b) = map.get(tenant) {
                    return Ok(DeviceHandle::Cuda(b.clone()));
                }
                let b = gpu.tenant_backend()?;
                map.insert(tenant.to_string(), b.clone());
                Ok(DeviceHandle::Cuda(b))
            }
        }
    }
}

/// The backend a tenant (or one instance) computes on: the trait every op
/// goes through, and on a GPU the CUDA backend itself, which `wasi:cuda`
/// issues on (same context, same lane as the instance's tensor ops).
#[derive(Clone)]
pub enum DeviceHandle {
    /// The shared CPU backend.
    Cpu(Arc<CpuBackend>),
    /// A tenant's CUDA context, on one lane.
    Cuda(Arc<CudaBackend>),
}

impl DeviceHandle {
    /// The backend, for tensor ops.
    pub fn backend(&self) -> &dyn Backend {
        match self {
            Self::Cpu(b) => b.as_ref(),
            Self::Cuda(b) => b.as_ref(),
        }
    }

    /// The CUDA backend, `None` on the CPU.
    pub fn cuda(&self) -> Option<&CudaBackend> {
        match self {
            Self::Cpu(_) => None,
            Self::Cuda(b) => Some(b),
        }
    }

    /// The handle one instance issues its work on: on a GPU, the same
    /// tenant context with a lane of the instance's own, returned to the
    /// tenant's pool when the instance ends.
    pub fn for_instance(&self) -> Self {
        match self {
            Self::Cpu(b) => Self::Cpu(b.clone()),
            Self::Cuda(b) => Self::Cuda(Arc::new(b.lease())),
        }
    }

    /// Identifies the backend's storage (weights are shared per key).
    pub fn key(&self) -> usize {
        match self {
            Self::Cpu(b) => Arc::as_ptr(b) as usize,
            Self::Cuda(b) => Arc::as_ptr(b) as usize,
        }
    }
}
