//! Warm instances: a deployment that opts in (`instances = { reuse = N }`
//! in a deployment file, `--max-instance-reuse-count N` on the command line)
//! gives an instance whose request ended cleanly its next request, one
//! request at a time, up to N in all; an instance that waits past `idle` for
//! its next request is dropped. By default every request gets a fresh one.
//!
//! What a request can see of earlier requests of the same deployment: the
//! instance's linear memory and globals as the last request left them (a
//! counter in a global grows), and the host handles it kept that hold no
//! memory of their own (files, keyvalue buckets, weights). Nothing of another
//! deployment or tenant: each deployment has its own [`Pool`]. Per-request
//! limits stay per request (the deadline and budget restart, the body cap is
//! the request's); the memory cap is the instance's, so a guest that grows
//! request by request meets it and is dropped. An instance is never reused
//! after a trap or panic, a deadline or memory-cap kill, a request-body error,
//! a host error, or a request that left tensor memory or CUDA objects behind
//! (dropping the instance frees them, so reuse cannot grow a tenant's memory).
//!
//! Why not `wasmtime_wasi_http::handler::ProxyHandler`, which `wasmtime serve
//! --max-instance-reuse-count` runs on: we keep its policy (one request at a
//! time for a WASI 0.2 handler, a cap on requests per instance, an idle
//! timeout, never reuse after an error; the flags are its names) but not its
//! machinery, because
//! - it runs each instance on a worker task of its own and queues requests to
//!   it, so every request crosses tasks (usually threads) there and back; our
//!   request's own task drives its guest inline (`guest.rs`), the main reason
//!   we serve hello at about twice `wasmtime serve`'s requests/s;
//! - it hands the response on once the outparam is set and reports a later
//!   trap only to `WorkerState::drop`, which does not know the request; we
//!   hold the body back (`body.rs`) so a guest that traps or stalls before it
//!   finishes its body still gets its request a clean 500 or 504;
//! - it enforces a request's expiry from inside `run_concurrent`, which its
//!   own comments say busy guests and synchronous host calls starve (wasmtime
//!   #11869, #11870); our deadline is the store's epoch deadline, renewed for
//!   each request, which stops the guest itself;
//! - it knows nothing of the pooling allocator's limit: we drop another
//!   deployment's idle instance to make room for a new one ([`Pools`]).

use crate::assembly::capabilities::InstanceState;
use crate::assembly::spec::Instances;
use crate::platform::metrics::{DeploymentLabel, DiscardLabels, Metrics};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};
use wasmtime::Store;
use wasmtime_wasi_http::p2::bindings::Proxy;

/// How often idle instances are checked for expiry.
const REAP_EVERY: Duration = Duration::from_millis(100);

/// An instantiated component between requests.
pub struct Warm {
    /// Its store (host state, memory cap, resources).
    pub store: Store<InstanceState>,
    /// The instance in `store`.
    pub proxy: Proxy,
    /// Requests it has served.
    pub served: u32,
}

impl Warm {
    /// `proxy` in `store`, having served `served` requests.
    pub fn new(store: Store<InstanceState>, proxy: Proxy, served: u32) -> Self {
        Self {
            store,
            proxy,
            served,
        }
    }
}

/// Why an instance of a reusing deployment was dropped (the `reason` label
/// of `tensorwasm_instance_discards_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Discard {
    /// It served its `reuse` requests.
    Retired,
    /// It waited past `idle` for a request.
    Idle,
    /// The instance pool (`--max-instances`) was full and a new instance
    /// needed its slot (or it is that new instance, after its request).
    Evicted,
    /// Its guest trapped or panicked.
    Trap,
    /// Its guest ran past the request's deadline.
    Deadline,
    /// Its guest died at the memory cap.
    MemoryCap,
    /// The request body went past its cap or broke off.
    Body,
    /// The host failed while serving it.
    HostError,
    /// Its request left tensor memory or CUDA objects behind.
    HandlesLeft,
}

impl Discard {
    /// Every reason, for series that exist (at 0) before the first discard.
    const ALL: [Discard; 9] = [
        Discard::Retired,
        Discard::Idle,
        Discard::Evicted,
        Discard::Trap,
        Discard::Deadline,
        Discard::MemoryCap,
        Discard::Body,
        Discard::HostError,
        Discard::HandlesLeft,
    ];

    fn reason(self) -> &'static str {
        match self {
            Discard::Retired => "retired",
            Discard::Idle => "idle",
            Discard::Evicted => "evicted",
            Discard::Trap => "trap",
            Discard::Deadline => "deadline",
            Discard::MemoryCap => "memory_cap",
            Discard::Body => "body",
            Discard::HostError => "host_error",
            Discard::HandlesLeft => "handles_left",
        }
    }
}

/// One deployment's idle instances, the longest idle first.
pub struct Pool {
    instances: Instances,
    idle: Mutex<Vec<(Warm, Instant)>>,
    reuses: Counter,
    idle_gauge: Gauge,
    label: DeploymentLabel,
    metrics: Arc<Metrics>,
}

impl Pool {
    /// The instance that served a request most recently, if one is waiting.
    pub fn take(&self) -> Option<Warm> {
        let warm = self.lock().pop().map(|(w, _)| w);
        if warm.is_some() {
            self.idle_gauge.dec();
            self.reuses.inc();
        }
        warm
    }

    /// Takes back `warm` after a request it served cleanly, unless it has
    /// served its share.
    pub fn give_back(&self, warm: Warm) {
        if warm.served >= self.instances.reuse {
            self.discard(Discard::Retired);
            return;
        }
        self.lock().push((warm, Instant::now()));
        self.idle_gauge.inc();
    }

    /// How many instances wait for a request now.
    pub fn idle_count(&self) -> usize {
        self.lock().len()
    }

    /// Counts an instance dropped for `why`.
    pub fn discard(&self, why: Discard) {
        self.discard_counter(why).inc();
    }

    fn discard_counter(&self, why: Discard) -> Counter {
        self.metrics
            .discards
            .get_or_create(&DiscardLabels {
                tenant: self.label.tenant.clone(),
                deployment: self.label.deployment.clone(),
                reason: why.reason(),
            })
            .clone()
    }

    /// Removes the instances idle past `idle` (to drop outside the lock).
    fn expired(&self, now: Instant) -> Vec<(Warm, Instant)> {
        let mut idle = self.lock();
        let n = idle
            .iter()
            .take_while(|(_, since)| now.duration_since(*since) >= self.instances.idle)
            .count();
        idle.drain(..n).collect()
    }

    fn drop_all(&self, gone: Vec<(Warm, Instant)>, why: Discard) {
        for _ in &gone {
            self.idle_gauge.dec();
            self.discard(why);
        }
        drop(gone);
    }

    /// When its longest-idle instance went idle.
    fn oldest(&self) -> Option<Instant> {
        self.lock().first().map(|(_, since)| *since)
    }

    fn lock(&self) -> MutexGuard<'_, Vec<(Warm, Instant)>> {
        // A panic elsewhere while holding the lock leaves a valid list.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Every reusing deployment's pool, for the reaper and for making room in
/// the instance pool, and the fresh instances waiting to be torn down.
#[derive(Default)]
pub struct Pools {
    pools: Mutex<Vec<Weak<Pool>>>,
    reaper: std::sync::OnceLock<()>,
    /// Fresh instances whose requests are answered, not yet dropped.
    pending_teardowns: AtomicUsize,
    /// How many of them have been dropped so far.
    teardowns_done: AtomicUsize,
    /// Requests waiting for one to be dropped.
    teardown_waiters: AtomicUsize,
    /// Told when one is dropped while a request waits.
    torn_down: tokio::sync::Notify,
}

/// How long a request that finds the instance pool full waits for an
/// answered request's instance to be dropped (it is, right after its flush,
/// unless its client reads slowly) before it is refused.
const TEARDOWN_WAIT: Duration = Duration::from_millis(100);

/// A fresh instance's store whose response is on its way: dropped (which
/// resets the instance's memory, tens of µs) after the response is flushed
/// (`body::drop_after`), so no client waits for it. Until then it holds
/// its slot in the instance pool; [`Pools::wait_teardown`] waits for it.
pub struct Teardown {
    store: Option<Store<InstanceState>>,
    pools: Arc<Pools>,
}

impl Drop for Teardown {
    fn drop(&mut self) {
        drop(self.store.take());
        let pools = &self.pools;
        pools.pending_teardowns.fetch_sub(1, Ordering::AcqRel);
        // Counted before the waiters are read (and they register before
        // reading the count), so a waiter either sees this drop or is told.
        pools.teardowns_done.fetch_add(1, Ordering::SeqCst);
        if pools.teardown_waiters.load(Ordering::SeqCst) > 0 {
            pools.torn_down.notify_waiters();
        }
    }
}

/// Counts a waiter out when it stops waiting (or its request goes away).
struct Deregister<'a>(&'a AtomicUsize);

impl Drop for Deregister<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Pools {
    /// The pool of the deployment `label` names, or `None` when it takes a
    /// fresh instance per request.
    pub fn pool(
        self: &Arc<Self>,
        label: &DeploymentLabel,
        instances: Instances,
        metrics: &Arc<Metrics>,
    ) -> Option<Arc<Pool>> {
        if !instances.reused() {
            return None;
        }
        let pool = Arc::new(Pool {
            instances,
            idle: Mutex::new(Vec::new()),
            reuses: metrics.reuses.get_or_create(label).clone(),
            idle_gauge: metrics.idle_instances.get_or_create(label).clone(),
            label: label.clone(),
            metrics: metrics.clone(),
        });
        for why in Discard::ALL {
            pool.discard_counter(why);
        }
        self.live().push(Arc::downgrade(&pool));
        let me = Arc::downgrade(self);
        self.reaper.get_or_init(|| {
            std::thread::Builder::new()
                .name("idle-instances".into())
                .spawn(move || reap(me))
                .map(drop)
                .unwrap_or_else(|e| tracing::error!("cannot start the idle-instance reaper: {e}"));
        });
        Some(pool)
    }

    /// `store`, to be dropped once its response is flushed.
    pub fn defer_teardown(self: &Arc<Self>, store: Store<InstanceState>) -> Teardown {
        self.pending_teardowns.fetch_add(1, Ordering::AcqRel);
        Teardown {
            store: Some(store),
            pools: self.clone(),
        }
    }

    /// How many [`Teardown`] stores have been dropped so far (for
    /// [`Pools::wait_teardown`]).
    pub fn teardowns_done(&self) -> usize {
        self.teardowns_done.load(Ordering::Acquire)
    }

    /// Waits (up to [`TEARDOWN_WAIT`]) until a [`Teardown`] store is dropped,
    /// freeing its slot in the instance pool; true at once when one was
    /// since [`Pools::teardowns_done`] said `seen`, false when none was.
    pub async fn wait_teardown(&self, seen: usize) -> bool {
        self.teardown_waiters.fetch_add(1, Ordering::SeqCst);
        let _registered = Deregister(&self.teardown_waiters);
        // Registered before the counts are read: no drop in between is missed.
        let torn_down = self.torn_down.notified();
        if self.teardowns_done.load(Ordering::SeqCst) != seen {
            return true;
        }
        if self.pending_teardowns.load(Ordering::Acquire) == 0 {
            return false;
        }
        tokio::time::timeout(TEARDOWN_WAIT, torn_down).await.is_ok()
    }

    /// Drops the longest-idle instance of any deployment, to free its slot
    /// in the instance pool; false when none is idle.
    pub fn evict_one(&self) -> bool {
        let oldest = self
            .live()
            .iter()
            .filter_map(Weak::upgrade)
            .filter_map(|p| p.oldest().map(|t| (t, p)))
            .min_by_key(|(t, _)| *t);
        let Some((_, pool)) = oldest else {
            return false;
        };
        let gone: Vec<_> = {
            let mut idle = pool.lock();
            if idle.is_empty() {
                return false;
            }
            idle.drain(..1).collect()
        };
        pool.drop_all(gone, Discard::Evicted);
        true
    }

    fn live(&self) -> MutexGuard<'_, Vec<Weak<Pool>>> {
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        pools.retain(|p| p.strong_count() > 0);
        pools
    }
}

/// Drops expired idle instances until the server's pools are gone; it runs
/// on a thread of its own, so resetting their memory costs no request.
fn reap(pools: Weak<Pools>) {
    loop {
        std::thread::sleep(REAP_EVERY);
        let Some(pools) = pools.upgrade() else { return };
        let live: Vec<_> = pools.live().iter().filter_map(Weak::upgrade).collect();
        let now = Instant::now();
        for pool in live {
            let gone = pool.expired(now);
            pool.drop_all(gone, Discard::Idle);
        }
    }
}
