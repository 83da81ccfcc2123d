//! Which backend computes tensor ops: `--device auto|cpu|cuda[:N|:all|:N,M]`,
//! and where a deployment's tensors live on it ([`Placement`]). The CPU
//! backend is shared by every tenant; on CUDA each tenant gets its own
//! context on each GPU it is placed on (`super::gpus`).

use super::backend::Backend;
use super::cpu::CpuBackend;
use super::cuda::{self, CudaBackend, CudaDevice};
use super::gpus::{Gpu, Gpus, Hold};
use crate::platform::metrics::Metrics;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// What `--device`, or a deployment's `device`, asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceSpec {
    /// The server: every GPU when a CUDA driver and device are present,
    /// else the CPU. A deployment: its tenant's GPU (placement by quota).
    Auto,
    /// The CPU backend.
    Cpu,
    /// Every CUDA device of the host (`cuda:all`).
    AllGpus,
    /// These CUDA devices (`cuda`, `cuda:N`, `cuda:0,1`).
    Gpus(Vec<usize>),
}

impl FromStr for DeviceSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad =
            || format!("expected auto, cpu, cuda, cuda:N, cuda:N,M,... or cuda:all, got `{s}`");
        match s {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Gpus(vec![0])),
            "cuda:all" => Ok(Self::AllGpus),
            other => {
                let list = other.strip_prefix("cuda:").ok_or_else(bad)?;
                let mut ordinals = Vec::new();
                for n in list.split(',') {
                    let n: usize = n.trim().parse().map_err(|_| bad())?;
                    if ordinals.contains(&n) {
                        return Err(format!("`{s}` names cuda:{n} twice"));
                    }
                    ordinals.push(n);
                }
                Ok(Self::Gpus(ordinals))
            }
        }
    }
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Cpu => f.write_str("cpu"),
            Self::AllGpus => f.write_str("cuda:all"),
            Self::Gpus(list) => {
                let list: Vec<String> = list.iter().map(|n| n.to_string()).collect();
                write!(f, "cuda:{}", list.join(","))
            }
        }
    }
}

/// The device tensor ops run on.
pub enum Device {
    /// Host memory, one backend for all.
    Cpu(Arc<CpuBackend>),
    /// CUDA devices, one context per tenant on each (and the CPU backend,
    /// for deployments that ask for it).
    Cuda {
        /// The GPUs.
        gpus: Gpus,
        /// The CPU backend.
        cpu: Arc<CpuBackend>,
    },
}

impl Device {
    /// Opens what `spec` asks for; `cache_dir` keeps compiled kernels.
    pub fn open(spec: &DeviceSpec, cache_dir: Option<PathBuf>, tf32: bool) -> anyhow::Result<Self> {
        let open = |ordinals: Vec<usize>| -> anyhow::Result<Self> {
            let mut list = Vec::new();
            for n in ordinals {
                let gpu = CudaDevice::open(n, cache_dir.clone(), tf32).map_err(|e| match spec {
                    DeviceSpec::Gpus(one) if one.len() == 1 => {
                        e.context(format!("--device {spec}"))
                    }
                    _ => e.context(format!("--device {spec}: cuda:{n}")),
                })?;
                list.push(Gpu::new(gpu));
            }
            Ok(Self::Cuda {
                gpus: Gpus::new(list),
                cpu: Arc::new(CpuBackend),
            })
        };
        let all = || -> anyhow::Result<Vec<usize>> {
            let n = cuda::device_count()?;
            if n == 0 {
                anyhow::bail!("the CUDA driver sees no device");
            }
            Ok((0..n).collect())
        };
        match spec {
            DeviceSpec::Cpu => Ok(Self::cpu()),
            DeviceSpec::Gpus(list) => open(list.clone()),
            DeviceSpec::AllGpus => open(all().map_err(|e| e.context("--device cuda:all"))?),
            DeviceSpec::Auto if !cuda::driver_present() => Ok(Self::cpu()),
            DeviceSpec::Auto => all().and_then(open).or_else(|e| {
                tracing::warn!("CUDA driver present but unusable ({e:#}); using the CPU");
                Ok(Self::cpu())
            }),
        }
    }

    /// The CPU backend.
    pub fn cpu() -> Self {
        Self::Cpu(Arc::new(CpuBackend))
    }

    /// Starts the GPUs' health checks, reporting through `metrics`.
    pub fn watch(&self, metrics: &Arc<Metrics>) {
        if let Self::Cuda { gpus, .. } = self {
            gpus.watch(metrics);
        }
    }

    /// The GPUs, if any.
    pub fn gpus(&self) -> &[Arc<Gpu>] {
        match self {
            Self::Cpu(_) => &[],
            Self::Cuda { gpus, .. } => gpus.list(),
        }
    }

    /// One line for the start-up log.
    pub fn describe(&self) -> String {
        match self {
            Self::Cpu(_) => "cpu".into(),
            Self::Cuda { gpus, .. } => {
                let each: Vec<String> = gpus.list().iter().map(|g| g.device().describe()).collect();
                each.join("; ")
            }
        }
    }

    /// What computes: `cpu`, or the GPUs, their architecture, memory and
    /// driver (stable across restarts, unlike [`Device::describe`]).
    pub fn hardware(&self) -> String {
        match self {
            Self::Cpu(_) => "cpu".into(),
            Self::Cuda { gpus, .. } => {
                let mut each: Vec<String> =
                    gpus.list().iter().map(|g| g.device().hardware()).collect();
                each.dedup();
                match (each.len(), gpus.list().len()) {
                    (1, 1) => each.remove(0),
                    (1, n) => format!("{n}x {}", each[0]),
                    _ => each.join("; "),
                }
            }
        }
    }

    /// Where tensors compute: `cpu`, `cuda:0` or `cuda:0,1`.
    pub fn name(&self) -> String {
        match self {
            Self::Cpu(_) => "cpu".into(),
            Self::Cuda { gpus, .. } => gpus.names(),
        }
    }

    /// Where `tenant`'s deployment computes: what it asks for (`want`), or
    /// its tenant's GPU; `quota` (its tensor-memory) is reserved on each GPU;
    /// `own_kernels`: it runs kernels of its own (`cuda-source`).
    pub fn place(
        &self,
        tenant: &str,
        want: &DeviceSpec,
        quota: u64,
        own_kernels: bool,
    ) -> anyhow::Result<Placement> {
        let (gpus, cpu) = match self {
            Self::Cpu(cpu) => match want {
                DeviceSpec::Auto | DeviceSpec::Cpu => return Ok(Placement::cpu(cpu)),
                _ => anyhow::bail!(
                    "`device = \"{want}\"`: this server computes on the CPU (start it with --device cuda:all on a GPU host)"
                ),
            },
            Self::Cuda { gpus, cpu } => (gpus, cpu),
        };
        let chosen: Vec<&Arc<Gpu>> = match want {
            DeviceSpec::Cpu => return Ok(Placement::cpu(cpu)),
            DeviceSpec::Auto => vec![gpus.choose(tenant, quota)?],
            DeviceSpec::AllGpus => gpus.list().iter().collect(),
            DeviceSpec::Gpus(list) => list
                .iter()
                .map(|&n| gpus.get(n))
                .collect::<Result<_, _>>()?,
        };
        let mut slots = Vec::new();
        for gpu in chosen {
            let (backend, hold) = gpu.backend(tenant, quota, own_kernels)?;
            slots.push(Slot {
                handle: DeviceHandle::Cuda(backend),
                gpu: Some(hold),
            });
        }
        let ordinals = slots
            .iter()
            .filter_map(|s| s.gpu.as_ref())
            .map(|h| h.gpu().device().ordinal())
            .collect();
        Ok(Placement {
            name: DeviceSpec::Gpus(ordinals).to_string(),
            slots,
            next: AtomicUsize::new(0),
        })
    }
}

/// Where one deployment's tensors live: the CPU, or one or more GPUs (its
/// weights resident on each, its instances spread over them in turn).
pub struct Placement {
    name: String,
    slots: Vec<Slot>,
    next: AtomicUsize,
}

struct Slot {
    handle: DeviceHandle,
    /// On a GPU: the tenant's hold on its context and reservation there.
    gpu: Option<Hold>,
}

impl Placement {
    /// On the CPU backend.
    pub fn cpu(cpu: &Arc<CpuBackend>) -> Self {
        Self {
            name: "cpu".into(),
            slots: vec![Slot {
                handle: DeviceHandle::Cpu(cpu.clone()),
                gpu: None,
            }],
            next: AtomicUsize::new(0),
        }
    }

    /// `cpu`, `cuda:1` or `cuda:0,1`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The backends, one per GPU (one for the CPU).
    pub fn handles(&self) -> impl Iterator<Item = &DeviceHandle> {
        self.slots.iter().map(|s| &s.handle)
    }

    /// Why slot `i` cannot compute now: its GPU was taken out, or the
    /// tenant's context there faulted.
    pub fn down(&self, i: usize) -> Option<String> {
        let slot = &self.slots[i];
        let gpu = slot.gpu.as_ref()?.gpu();
        if let Some(why) = gpu.failed() {
            return Some(format!("{} was taken out ({why})", gpu.name()));
        }
        let fault = slot.handle.cuda()?.tenant().fault()?;
        Some(format!(
            "this tenant's context on {} faulted ({fault}); redeploy to recover",
            gpu.name()
        ))
    }

    /// Why nothing of the deployment can compute, if so (every slot down).
    pub fn unavailable(&self) -> Option<String> {
        let mut first = None;
        for i in 0..self.slots.len() {
            match self.down(i) {
                None => return None,
                Some(why) => {
                    first.get_or_insert(why);
                }
            }
        }
        first
    }

    /// The slot the next instance computes on: the next working one in turn.
    pub fn pick(&self) -> usize {
        let n = self.slots.len();
        if n == 1 {
            return 0;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| self.down(i).is_none())
            .unwrap_or(start % n)
    }

    /// How many slots (GPUs; 1 on the CPU).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether it has no slot (never: placement makes at least one).
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Slot `i`'s backend.
    pub fn handle(&self, i: usize) -> &DeviceHandle {
        &self.slots[i.min(self.slots.len() - 1)].handle
    }
}

/// What [`DeviceHandle::key`] returns: (on a GPU, address or id).
pub type BackendKey = (bool, u64);

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

    /// Identifies the backend's storage (weights are shared per key): the
    /// CPU backend's address (it lives as long as the server), or the CUDA
    /// context's id (a replaced context's address may be reused).
    pub fn key(&self) -> BackendKey {
        match self {
            Self::Cpu(b) => (false, Arc::as_ptr(b) as usize as u64),
            Self::Cuda(b) => (true, b.tenant().id()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{DeviceHandle, DeviceSpec, Placement, Slot};
    use crate::tensor::cpu::CpuBackend;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn instances_take_a_placement_s_slots_in_turn() {
        let cpu = Arc::new(CpuBackend);
        let slot = || Slot {
            handle: DeviceHandle::Cpu(cpu.clone()),
            gpu: None,
        };
        let two = Placement {
            name: "two".into(),
            slots: vec![slot(), slot()],
            next: AtomicUsize::new(0),
        };
        let picks: Vec<usize> = (0..5).map(|_| two.pick()).collect();
        assert_eq!(picks, [0, 1, 0, 1, 0]);
        assert!(two.unavailable().is_none());
        let one = Placement::cpu(&cpu);
        assert_eq!((one.pick(), one.pick(), one.name()), (0, 0, "cpu"));
    }

    #[test]
    fn device_specs_parse_and_print_back() {
        for (text, spec) in [
            ("auto", DeviceSpec::Auto),
            ("cpu", DeviceSpec::Cpu),
            ("cuda", DeviceSpec::Gpus(vec![0])),
            ("cuda:1", DeviceSpec::Gpus(vec![1])),
            ("cuda:0,1", DeviceSpec::Gpus(vec![0, 1])),
            ("cuda:all", DeviceSpec::AllGpus),
        ] {
            assert_eq!(text.parse::<DeviceSpec>().unwrap(), spec, "{text}");
        }
        assert_eq!(DeviceSpec::Gpus(vec![2, 0]).to_string(), "cuda:2,0");
        assert!(
            "cuda:0,0"
                .parse::<DeviceSpec>()
                .unwrap_err()
                .contains("twice")
        );
        for bad in ["gpu", "cuda:", "cuda:x", "cuda:0,", "cuda:-1", "cuda:all,1"] {
            assert!(bad.parse::<DeviceSpec>().is_err(), "{bad}");
        }
    }
}
