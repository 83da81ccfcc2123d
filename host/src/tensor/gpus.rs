//! The GPUs of a server (`--device cuda:all`, `cuda:0,1`): where each
//! tenant's contexts live, placement by quota, and each GPU's health.
//!
//! Placement: a tenant's `tensor-memory` quota is reserved on every GPU it
//! gets a context on, and a GPU never reserves more than its memory, so a
//! quota is backed by memory that exists. A deployment names its GPUs
//! (`device = "cuda:1"`, `"cuda:0,1"`, `"cuda:all"`) or takes its tenant's:
//! the GPU the tenant already has a context on, else the working GPU with
//! the most memory left unreserved that fits the quota (least loaded).
//!
//! Health: a thread probes each GPU on the server's own context every
//! [`PROBE_EVERY`], and at once when a tenant's context faults
//! ([`super::cuda::fault`]). A probe that fails takes the GPU out for good
//! (until the server restarts: a GPU that failed needs an operator);
//! deployments whose every GPU is out, or whose contexts faulted, answer
//! 503 while the others keep serving.

use super::cuda::{CudaBackend, CudaDevice, fault};
use crate::platform::metrics::{GpuLabel, Metrics};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// How often a GPU is probed when nothing faulted.
pub const PROBE_EVERY: Duration = Duration::from_secs(5);

/// One GPU of the server.
pub struct Gpu {
    device: Arc<CudaDevice>,
    name: String,
    tenants: Mutex<HashMap<String, Tenant>>,
    failed: OnceLock<String>,
    metrics: OnceLock<Arc<Metrics>>,
}

/// A tenant's context on a GPU, the quota reserved for it there, whether
/// it runs kernels of its own (`cuda-source`), and how many placements
/// hold it.
struct Tenant {
    backend: Arc<CudaBackend>,
    reserved: u64,
    own_kernels: bool,
    holders: usize,
}

/// A deployment's (or job's) hold on its tenant's context and reservation
/// on a GPU: when the last hold drops — the tenant's last deployment there
/// removed — the reservation returns to the GPU and the context is
/// destroyed once its instances and weights are gone.
pub struct Hold {
    gpu: Arc<Gpu>,
    tenant: String,
}

impl Hold {
    /// The GPU.
    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.gpu.release(&self.tenant);
    }
}

impl Gpu {
    /// A GPU, opened.
    pub fn new(device: CudaDevice) -> Self {
        Self {
            name: format!("cuda:{}", device.ordinal()),
            device: Arc::new(device),
            tenants: Mutex::default(),
            failed: OnceLock::new(),
            metrics: OnceLock::new(),
        }
    }

    /// `cuda:N`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The device.
    pub fn device(&self) -> &Arc<CudaDevice> {
        &self.device
    }

    /// Why the GPU was taken out, if it was.
    pub fn failed(&self) -> Option<&str> {
        self.failed.get().map(String::as_str)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Tenant>> {
        self.tenants.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes reserved for tenants' quotas.
    pub fn reserved(&self) -> u64 {
        self.lock().values().map(|t| t.reserved).sum()
    }

    /// Whether `tenant` has a context here.
    fn hosts(&self, tenant: &str) -> bool {
        self.lock().contains_key(tenant)
    }

    /// `tenant`'s context here, made (and `quota` reserved) the first time;
    /// a context that faulted is replaced by a new one (its tensors were
    /// lost with it). `own_kernels`: the deployment runs kernels of its own.
    pub fn backend(
        self: &Arc<Self>,
        tenant: &str,
        quota: u64,
        own_kernels: bool,
    ) -> anyhow::Result<(Arc<CudaBackend>, Hold)> {
        let hold = || Hold {
            gpu: self.clone(),
            tenant: tenant.to_string(),
        };
        if let Some(why) = self.failed() {
            anyhow::bail!("{} was taken out: {why}", self.name);
        }
        let mut tenants = self.lock();
        if let Some(t) = tenants.get_mut(tenant) {
            let newly_own = own_kernels && !t.own_kernels;
            t.own_kernels |= own_kernels;
            let kept = match t.backend.tenant().fault() {
                None => {
                    t.holders += 1;
                    Some(t.backend.clone())
                }
                Some(f) => {
                    tracing::warn!(
                        "{}: tenant `{tenant}`'s context faulted ({f}); making a new one",
                        self.name
                    );
                    None
                }
            };
            if newly_own {
                self.warn_shared(&tenants);
            }
            if let Some(backend) = kept {
                return Ok((backend, hold()));
            }
        }
        let others: u64 = tenants
            .iter()
            .filter(|(name, _)| *name != tenant)
            .map(|(_, t)| t.reserved)
            .sum();
        let memory = self.device.memory();
        if others.saturating_add(quota) > memory {
            anyhow::bail!(
                "{}: tenant `{tenant}`'s tensor-memory ({}) does not fit: {} of its {} are left unreserved",
                self.name,
                gib(quota),
                gib(memory.saturating_sub(others)),
                gib(memory)
            );
        }
        let backend = self.device.tenant_backend()?;
        let before = tenants.get(tenant);
        let own_kernels = own_kernels || before.is_some_and(|t| t.own_kernels);
        let holders = before.map_or(0, |t| t.holders) + 1;
        let new = tenants
            .insert(
                tenant.to_string(),
                Tenant {
                    backend: backend.clone(),
                    reserved: quota,
                    own_kernels,
                    holders,
                },
            )
            .is_none();
        if new {
            self.warn_shared(&tenants);
        }
        drop(tenants);
        self.report();
        Ok((backend, hold()))
    }

    /// Drops one hold of `tenant`'s; the last returns its reservation and
    /// the map's reference to its context.
    fn release(&self, tenant: &str) {
        let mut tenants = self.lock();
        if let Some(t) = tenants.get_mut(tenant)
            && t.holders > 1
        {
            t.holders -= 1;
            return;
        }
        let Some(t) = tenants.remove(tenant) else {
            return;
        };
        drop(tenants);
        tracing::info!(
            "{}: tenant `{tenant}` has no deployment here any more: its {} reservation is returned",
            self.name,
            gib(t.reserved)
        );
        drop(t);
        self.report();
    }

    /// Warns when tenants running kernels of their own share the GPU with
    /// others: one context's fault ends every context of the process on it
    /// (docs/SECURITY.md).
    fn warn_shared(&self, tenants: &HashMap<String, Tenant>) {
        let own: Vec<&str> = tenants
            .iter()
            .filter(|(_, t)| t.own_kernels)
            .map(|(n, _)| n.as_str())
            .collect();
        if tenants.len() > 1 && !own.is_empty() {
            tracing::warn!(
                "{}: tenants {own:?} run kernels of their own (`cuda-source`) on the GPU that {} tenants share: a faulting kernel takes it from all of them (docs/SECURITY.md); give them a server of their own",
                self.name,
                tenants.len()
            );
        }
    }

    /// Sets the GPU's gauges (once metrics exist).
    fn report(&self) {
        let Some(m) = self.metrics.get() else { return };
        let label = GpuLabel {
            gpu: self.name.clone(),
        };
        let tenants = self.lock();
        let reserved: u64 = tenants.values().map(|t| t.reserved).sum();
        let faulted = tenants
            .values()
            .filter(|t| t.backend.tenant().fault().is_some())
            .count();
        m.gpu_tenants
            .get_or_create(&label)
            .set(tenants.len() as i64);
        m.gpu_reserved.get_or_create(&label).set(clamp(reserved));
        m.gpu_faulted_contexts
            .get_or_create(&label)
            .set(faulted as i64);
        m.gpu_up
            .get_or_create(&label)
            .set(self.failed().is_none() as i64);
    }

    /// Probes the GPU (unless already out); takes it out if the probe fails.
    fn check(&self) {
        if self.failed().is_some() {
            return;
        }
        match self.device.probe() {
            Ok((used, total)) => {
                if let Some(m) = self.metrics.get() {
                    let label = GpuLabel {
                        gpu: self.name.clone(),
                    };
                    m.gpu_memory_used.get_or_create(&label).set(clamp(used));
                    m.gpu_memory.get_or_create(&label).set(clamp(total));
                }
            }
            Err(why) => {
                tracing::error!(
                    "{} failed its health check ({why}): taken out; deployments placed only on it answer 503",
                    self.name
                );
                let _ = self.failed.set(why);
            }
        }
        self.report();
    }
}

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn gib(n: u64) -> String {
    format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64)
}

/// Picks the GPU for a tenant that names none: one it is already on, else
/// the working GPU with the most memory left unreserved that fits `quota`
/// (ties: the lowest ordinal). `gpus` gives each GPU's (working, already
/// hosts the tenant, memory, reserved).
pub fn least_loaded(gpus: &[(bool, bool, u64, u64)], quota: u64) -> Option<usize> {
    if let Some(i) = gpus.iter().position(|&(up, hosts, ..)| up && hosts) {
        return Some(i);
    }
    gpus.iter()
        .enumerate()
        .filter(|(_, (up, _, memory, reserved))| *up && reserved.saturating_add(quota) <= *memory)
        .max_by_key(|(i, (_, _, memory, reserved))| (memory - reserved, std::cmp::Reverse(*i)))
        .map(|(i, _)| i)
}

/// The server's GPUs.
pub struct Gpus {
    list: Vec<Arc<Gpu>>,
}

impl Gpus {
    /// The GPUs, opened (at least one).
    pub fn new(list: Vec<Gpu>) -> Self {
        Self {
            list: list.into_iter().map(Arc::new).collect(),
        }
    }

    /// Every GPU, in ordinal order as asked.
    pub fn list(&self) -> &[Arc<Gpu>] {
        &self.list
    }

    /// The GPU named `cuda:N`.
    pub fn get(&self, ordinal: usize) -> anyhow::Result<&Arc<Gpu>> {
        self.list
            .iter()
            .find(|g| g.device.ordinal() == ordinal)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "cuda:{ordinal} is not one of this server's GPUs ({}; see --device)",
                    self.names()
                )
            })
    }

    /// `cuda:0,1`.
    pub fn names(&self) -> String {
        let ordinals = self.list.iter().map(|g| g.device.ordinal()).collect();
        super::device::DeviceSpec::Gpus(ordinals).to_string()
    }

    /// The GPU for `tenant` when its deployment names none.
    pub fn choose(&self, tenant: &str, quota: u64) -> anyhow::Result<&Arc<Gpu>> {
        let view: Vec<_> = self
            .list
            .iter()
            .map(|g| {
                (
                    g.failed().is_none(),
                    g.hosts(tenant),
                    g.device.memory(),
                    g.reserved(),
                )
            })
            .collect();
        match least_loaded(&view, quota) {
            Some(i) => Ok(&self.list[i]),
            None => {
                let each: Vec<String> = self
                    .list
                    .iter()
                    .zip(&view)
                    .map(|(g, (up, _, memory, reserved))| match g.failed() {
                        Some(why) if !up => format!("{} taken out ({why})", g.name),
                        _ => format!("{} {} unreserved", g.name, gib(memory - reserved)),
                    })
                    .collect();
                anyhow::bail!(
                    "no GPU has room for tenant `{tenant}`'s tensor-memory ({}): {}",
                    gib(quota),
                    each.join(", ")
                )
            }
        }
    }

    /// Starts the health checks, reporting through `metrics`.
    pub fn watch(&self, metrics: &Arc<Metrics>) {
        for g in &self.list {
            let _ = g.metrics.set(metrics.clone());
            g.check();
        }
        let list = self.list.clone();
        let spawned = std::thread::Builder::new()
            .name("gpu-health".into())
            .spawn(move || {
                let (count, wake) = &fault::NOTED;
                let mut seen = *count.lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    let guard = count.lock().unwrap_or_else(|e| e.into_inner());
                    let (guard, _) = wake
                        .wait_timeout_while(guard, PROBE_EVERY, |n| *n == seen)
                        .unwrap_or_else(|e| e.into_inner());
                    seen = *guard;
                    drop(guard);
                    for g in &list {
                        g.check();
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("GPU health checks not started: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::least_loaded;

    const G: u64 = 1 << 30;

    #[test]
    fn a_tenant_stays_on_its_gpu() {
        let gpus = [(true, false, 80 * G, 0), (true, true, 80 * G, 70 * G)];
        assert_eq!(least_loaded(&gpus, G), Some(1));
    }

    #[test]
    fn the_least_reserved_gpu_that_fits_is_chosen() {
        let gpus = [
            (true, false, 80 * G, 40 * G),
            (true, false, 80 * G, 10 * G),
            (true, false, 80 * G, 10 * G),
        ];
        assert_eq!(least_loaded(&gpus, G), Some(1), "ties go to the lowest");
        let gpus = [(true, false, 80 * G, 40 * G), (true, false, 80 * G, 79 * G)];
        assert_eq!(least_loaded(&gpus, 2 * G), Some(0));
    }

    #[test]
    fn failed_or_full_gpus_are_skipped() {
        let gpus = [(false, true, 80 * G, 0), (true, false, 80 * G, 60 * G)];
        assert_eq!(least_loaded(&gpus, G), Some(1), "its own GPU failed");
        let gpus = [(false, false, 80 * G, 0), (true, false, 80 * G, 79 * G)];
        assert_eq!(least_loaded(&gpus, 2 * G), None);
    }
}
