//! The wasmtime engine every component runs on: component model, epoch
//! interruption for wall-clock budgets, and the pooling instance allocator
//! with copy-on-write memories so a fresh instance per request is cheap.

use anyhow::Result;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch ticker advances: running guests check their deadline
/// and yield to other requests at this granularity.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Epoch ticks a guest runs before yielding to the async runtime.
pub const YIELD_TICKS: u64 = 2;

/// Makes a store's guest yield to the async runtime every [`YIELD_TICKS`]
/// epoch ticks, so a spinning guest cannot starve other work, and stop (a
/// trap) once `deadline` has passed; with no deadline it only yields.
pub fn set_wall_deadline<T: 'static>(
    store: &mut wasmtime::Store<T>,
    deadline: Option<std::time::Instant>,
) {
    store.set_epoch_deadline(YIELD_TICKS);
    store.epoch_deadline_callback(move |_| match deadline {
        Some(d) if std::time::Instant::now() >= d => Ok(wasmtime::UpdateDeadline::Interrupt),
        _ => Ok(wasmtime::UpdateDeadline::Yield(YIELD_TICKS)),
    });
}

/// Engine settings chosen on the command line.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Largest linear memory any one instance may grow to, in bytes.
    pub max_memory: u64,
    /// Component instances alive at once (the pool's size).
    pub max_instances: u32,
}

/// Builds the engine. The pool reserves slots for `max_instances` component
/// instances, each with room for several core instances and memories
/// (composed worlds hold one per component).
pub fn build(opts: &EngineOptions) -> Result<Engine> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    // Guests are WASI 0.2 components, called one request at a time per
    // instance (serving/instances.rs); without the component-model-async
    // machinery every host call skips its task bookkeeping.
    config.concurrency_support(false);
    config.epoch_interruption(true);
    let n = opts.max_instances.max(1);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(n)
        .total_core_instances(n.saturating_mul(16))
        .total_memories(n.saturating_mul(8))
        .total_tables(n.saturating_mul(8))
        .total_stacks(n)
        .max_memories_per_component(16)
        .max_tables_per_component(16)
        .max_core_instances_per_component(64)
        .max_memory_size(opts.max_memory as usize)
        .table_keep_resident(1 << 16);
    if pagemap_scan_supported() {
        // Reset memories by scanning for dirty pages and rewriting just those
        // (up to 1 MiB) instead of madvise: no TLB shootdowns, no page
        // faults on the next request. Measured: ~1.6x requests/s for hello
        // (docs/PERFORMANCE.md). Without PAGEMAP_SCAN a blind 1 MiB memset
        // would cost more than it saves, so wasmtime's default stays.
        pool.pagemap_scan(Enabled::Auto)
            .linear_memory_keep_resident(1 << 20);
    }
    if std::env::var_os("TENSOR_WASM_NO_POOL").is_some() {
        // Diagnostics: instances allocated on demand with small address
        // space reservations, so the server runs under valgrind (which
        // cannot map the pool); slower, and guest code gets explicit bounds
        // checks (docs/OPERATIONS.md, `benches/count/run.sh`).
        config.memory_reservation(64 << 20);
        config.memory_guard_size(64 << 10);
    } else {
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    // Diagnostics: name guest functions in `perf` (docs/OPERATIONS.md).
    if std::env::var_os("TENSOR_WASM_PERFMAP").is_some() {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    let engine = Engine::new(&config)
        .map_err(|e| anyhow::anyhow!("cannot create the wasmtime engine: {e}"))?;
    Ok(engine)
}

/// Advances the engine's epoch every [`EPOCH_TICK`] on one thread until dropped.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    /// Starts the ticker thread for `engine`.
    pub fn start(engine: &Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (engine, flag) = (engine.clone(), stop.clone());
        std::thread::Builder::new()
            .name("epoch-ticker".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .expect("spawning the epoch ticker thread");
        Self { stop }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Whether the kernel has the `PAGEMAP_SCAN` ioctl (Linux 6.7 and later).
fn pagemap_scan_supported() -> bool {
    let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease") else {
        return false;
    };
    let mut parts = release.trim().split(|c: char| !c.is_ascii_digit());
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (major, minor) >= (6, 7)
}
