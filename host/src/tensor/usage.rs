//! What one instance did with `wasi:tensor`: op, read-back and other call
//! counts and the wall time spent inside them (ops also by op, for the
//! deployment's per-op series), logged at debug level when the instance
//! ends (`TENSOR_WASM_LOG=info,tensor_wasm::tensor=debug`). The rest of the instance's
//! lifetime is the guest's own work and the host's HTTP handling.

use crate::platform::metrics::{DeploymentLabel, OpLabel, Seconds};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Counters for one instance (atomics: host calls hold `&self` across awaits).
#[derive(Debug)]
pub struct Usage {
    born: Instant,
    ops: AtomicU64,
    op_nanos: AtomicU64,
    reads: AtomicU64,
    read_nanos: AtomicU64,
    read_bytes: AtomicU64,
    calls: AtomicU64,
    call_nanos: AtomicU64,
    /// Per op since the last [`Usage::take_by_op`]: name, count, ns.
    by_op: Mutex<Vec<(&'static str, u64, u64)>>,
}

impl Default for Usage {
    fn default() -> Self {
        Self {
            born: Instant::now(),
            ops: AtomicU64::new(0),
            op_nanos: AtomicU64::new(0),
            reads: AtomicU64::new(0),
            read_nanos: AtomicU64::new(0),
            read_bytes: AtomicU64::new(0),
            calls: AtomicU64::new(0),
            call_nanos: AtomicU64::new(0),
            by_op: Mutex::default(),
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Usage {
    /// Records the op `name` that started at `since`.
    pub fn op(&self, name: &'static str, since: Instant) {
        let ns = nanos(since.elapsed());
        self.ops.fetch_add(1, Ordering::Relaxed);
        self.op_nanos.fetch_add(ns, Ordering::Relaxed);
        let mut by_op = self.by_op.lock().unwrap_or_else(|e| e.into_inner());
        match by_op.iter_mut().find(|(n, ..)| *n == name) {
            Some((_, count, total)) => {
                *count += 1;
                *total += ns;
            }
            None => by_op.push((name, 1, ns)),
        }
    }

    /// Each op's count and ns since the last call, and starts again.
    pub fn take_by_op(&self) -> Vec<(&'static str, u64, u64)> {
        std::mem::take(&mut *self.by_op.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Records a read-back of `bytes` (which waits for the queued work)
    /// that started at `since`.
    pub fn read(&self, since: Instant, bytes: u64) {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.read_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.read_nanos
            .fetch_add(nanos(since.elapsed()), Ordering::Relaxed);
    }
}

/// Op and read-back counts and their time so far (for a request's span:
/// the difference between two of these).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Ops queued.
    pub ops: u64,
    /// Time inside them, ns.
    pub op_nanos: u64,
    /// Read-backs.
    pub reads: u64,
    /// Time inside them (waiting for the queued work), ns.
    pub read_nanos: u64,
    /// Bytes they copied back to the guest.
    pub read_bytes: u64,
    /// Other calls (uploads, reshapes, shapes, drops, weights look-ups).
    pub calls: u64,
    /// Time inside them, ns.
    pub call_nanos: u64,
}

impl Totals {
    /// What happened between `earlier` and `self`.
    pub fn since(self, earlier: Totals) -> Totals {
        Totals {
            ops: self.ops.saturating_sub(earlier.ops),
            op_nanos: self.op_nanos.saturating_sub(earlier.op_nanos),
            reads: self.reads.saturating_sub(earlier.reads),
            read_nanos: self.read_nanos.saturating_sub(earlier.read_nanos),
            read_bytes: self.read_bytes.saturating_sub(earlier.read_bytes),
            calls: self.calls.saturating_sub(earlier.calls),
            call_nanos: self.call_nanos.saturating_sub(earlier.call_nanos),
        }
    }
}

impl Usage {
    /// The counts so far.
    pub fn totals(&self) -> Totals {
        Totals {
            ops: self.ops.load(Ordering::Relaxed),
            op_nanos: self.op_nanos.load(Ordering::Relaxed),
            reads: self.reads.load(Ordering::Relaxed),
            read_nanos: self.read_nanos.load(Ordering::Relaxed),
            read_bytes: self.read_bytes.load(Ordering::Relaxed),
            calls: self.calls.load(Ordering::Relaxed),
            call_nanos: self.call_nanos.load(Ordering::Relaxed),
        }
    }

    /// Records another call (an upload, a reshape, a drop, a weights
    /// look-up) that started at `since`.
    pub fn call(&self, since: Instant) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.call_nanos
            .fetch_add(nanos(since.elapsed()), Ordering::Relaxed);
    }
}

/// A deployment's `wasi:tensor` series (`tensorwasm_tensor_*_total`), added
/// to once per request (or model call) from its instance's [`Usage`], not per
/// op: the series are shared by every thread.
#[derive(Debug, Clone)]
pub struct Counters {
    /// The deployment the per-op series are labelled with.
    pub deployment: DeploymentLabel,
    /// Ops queued, by op.
    pub ops: Family<OpLabel, Counter>,
    /// Time inside them, by op, seconds.
    pub op_seconds: Family<OpLabel, Seconds>,
    /// Read-backs.
    pub reads: Counter,
    /// Time inside them, seconds.
    pub read_seconds: Seconds,
    /// Other calls (uploads, reshapes, shapes, drops).
    pub calls: Counter,
    /// Time inside them, seconds.
    pub call_seconds: Seconds,
    /// Recorded steps launched as CUDA graphs.
    pub steps: Counter,
    /// Of those, from a kept graph brought up to date.
    pub step_updates: Counter,
}

impl Counters {
    /// Adds `by_op` (from [`Usage::take_by_op`]) and `d`'s read-backs and
    /// other calls.
    pub fn add(&self, by_op: &[(&'static str, u64, u64)], d: Totals) {
        for &(op, count, ns) in by_op {
            let label = OpLabel {
                tenant: self.deployment.tenant.clone(),
                deployment: self.deployment.deployment.clone(),
                op,
            };
            self.ops.get_or_create(&label).inc_by(count);
            self.op_seconds
                .get_or_create(&label)
                .inc_by(ns as f64 * 1e-9);
        }
        if d.reads > 0 {
            self.reads.inc_by(d.reads);
            self.read_seconds.inc_by(d.read_nanos as f64 * 1e-9);
        }
        if d.calls > 0 {
            self.calls.inc_by(d.calls);
            self.call_seconds.inc_by(d.call_nanos as f64 * 1e-9);
        }
    }
}

impl Drop for Usage {
    fn drop(&mut self) {
        let ops = *self.ops.get_mut();
        let reads = *self.reads.get_mut();
        if ops + reads == 0 {
            return;
        }
        let ms = |n: u64| n as f64 / 1e6;
        tracing::debug!(
            ops,
            op_ms = ms(*self.op_nanos.get_mut()),
            reads,
            read_ms = ms(*self.read_nanos.get_mut()),
            calls = *self.calls.get_mut(),
            call_ms = ms(*self.call_nanos.get_mut()),
            lifetime_ms = ms(nanos(self.born.elapsed())),
            "tensor use of one instance"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_are_counted_by_op_and_taken_once() {
        let u = Usage::default();
        let t = Instant::now();
        u.op("matmul", t);
        u.op("swiglu", t);
        u.op("matmul", t);
        let mut by_op = u.take_by_op();
        by_op.sort();
        let counts: Vec<(&str, u64)> = by_op.iter().map(|&(n, c, _)| (n, c)).collect();
        assert_eq!(counts, [("matmul", 2), ("swiglu", 1)]);
        // The totals keep every op; the split starts again.
        assert_eq!(u.totals().ops, 3);
        assert!(u.take_by_op().is_empty());
        let nanos: u64 = by_op.iter().map(|&(_, _, ns)| ns).sum();
        assert_eq!(nanos, u.totals().op_nanos);
    }
}
