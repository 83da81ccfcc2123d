//! Operator metrics, in OpenMetrics text format on the admin listener.
//! Per-deployment series carry `tenant` and `deployment`; process-wide ones
//! (artifact cache, compiles, keyvalue commits) are statics, so the code that
//! observes them needs no handle. docs/OPERATIONS.md lists them all.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::LazyLock;
use std::sync::atomic::AtomicU64;

/// Labels of per-deployment series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeploymentLabel {
    /// Tenant the deployment runs for.
    pub tenant: String,
    /// Deployment name.
    pub deployment: String,
}

impl DeploymentLabel {
    /// The labels of `tenant`'s deployment `name`.
    pub fn new(tenant: &str, name: &str) -> Self {
        Self {
            tenant: tenant.to_string(),
            deployment: name.to_string(),
        }
    }
}

/// Labels of per-op series: the deployment and the `wasi:tensor` op.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabel {
    /// Tenant the deployment runs for.
    pub tenant: String,
    /// Deployment name.
    pub deployment: String,
    /// The op, as the WIT names it (`matmul`, `decode-attention`, ...).
    pub op: &'static str,
}

/// The exemplar of a latency bucket: a sampled request's trace.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TraceLabel {
    /// W3C trace id (32 hex digits).
    pub trace_id: String,
}

/// What was compiled.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CompileLabel {
    /// `component` (wasmtime, Cranelift) or `kernel` (NVRTC).
    pub kind: &'static str,
}

/// A counter of seconds.
pub type Seconds = Counter<f64, AtomicU64>;

/// Compiled components found in the artifact cache.
pub static ARTIFACT_CACHE_HITS: LazyLock<Counter> = LazyLock::new(Counter::default);
/// Components compiled because the cache had no (valid) entry.
pub static ARTIFACT_CACHE_MISSES: LazyLock<Counter> = LazyLock::new(Counter::default);
/// Compile times of components and kernels, seconds.
pub static COMPILES: LazyLock<Family<CompileLabel, Histogram>> =
    LazyLock::new(|| Family::new_with_constructor(compile_histogram as fn() -> Histogram));
/// Durable keyvalue transactions (one per group of writes), seconds.
pub static KEYVALUE_COMMITS: LazyLock<Histogram> = LazyLock::new(write_histogram);

/// Records a compile of `kind` that took `secs`.
pub fn compiled(kind: &'static str, secs: f64) {
    COMPILES.get_or_create(&CompileLabel { kind }).observe(secs);
}

/// Label of per-tenant metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabel {
    /// Tenant name.
    pub tenant: String,
}

/// Label of per-GPU metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GpuLabel {
    /// `cuda:N`.
    pub gpu: String,
}

/// Labels of the request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Tenant (`none` when no route matched).
    pub tenant: String,
    /// Deployment name (`none` when no route matched).
    pub deployment: String,
    /// HTTP status code sent.
    pub status: u16,
}

/// Labels of the instance-discard counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DiscardLabels {
    /// Tenant.
    pub tenant: String,
    /// Deployment name.
    pub deployment: String,
    /// Why the instance was dropped (`serving/instances.rs`).
    pub reason: &'static str,
}

/// Labels of the batch-size histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BatchLabels {
    /// Tenant.
    pub tenant: String,
    /// Deployment name.
    pub deployment: String,
    /// `embeddings` or `generation`.
    pub kind: &'static str,
}

/// All of the host's metrics.
pub struct Metrics {
    registry: Registry,
    /// Requests by deployment and status.
    pub requests: Family<RequestLabels, Counter>,
    /// Connections open, and closed by the server, per listener.
    pub connections: crate::serving::connections::ConnectionMetrics,
    /// Time to response headers, seconds; a bucket's exemplar names the
    /// trace of a sampled request that fell in it.
    pub latency: Family<DeploymentLabel, HistogramWithExemplars<TraceLabel>>,
    /// Time to instantiate a component, seconds (its count: instantiations).
    pub instantiation: Family<DeploymentLabel, Histogram>,
    /// Requests served by an instance that had served one before.
    pub reuses: Family<DeploymentLabel, Counter>,
    /// Instances of reusing deployments dropped, by reason.
    pub discards: Family<DiscardLabels, Counter>,
    /// Instances waiting for their next request.
    pub idle_instances: Family<DeploymentLabel, Gauge>,
    /// Requests being handled now.
    pub in_flight: Family<DeploymentLabel, Gauge>,
    /// Guests that trapped (any cause, deadline and memory kills included).
    pub traps: Family<DeploymentLabel, Counter>,
    /// Guests stopped because their wall-clock budget ran out.
    pub deadline_kills: Family<DeploymentLabel, Counter>,
    /// Guests that died after hitting their memory cap.
    pub memory_cap_kills: Family<DeploymentLabel, Counter>,
    /// Tensor bytes each tenant holds (returns to 0 when its requests end).
    pub tensor_bytes: Family<TenantLabel, Gauge>,
    /// Each tenant's tensor-memory quota, bytes.
    pub tensor_quota: Family<TenantLabel, Gauge>,
    /// Model weights resident, by the tenant whose deployment loaded them.
    pub weights_bytes: Family<TenantLabel, Gauge>,
    /// `wasi:tensor` ops queued, by op.
    pub tensor_ops: Family<OpLabel, Counter>,
    /// Time inside those ops (queueing them; a GPU runs them later), by op,
    /// seconds.
    pub tensor_op_seconds: Family<OpLabel, Seconds>,
    /// `wasi:tensor` read-backs.
    pub tensor_reads: Family<DeploymentLabel, Counter>,
    /// Time inside read-backs (waiting for the queued work), seconds.
    pub tensor_read_seconds: Family<DeploymentLabel, Seconds>,
    /// Other `wasi:tensor` calls: uploads, reshapes, shapes, drops.
    pub tensor_calls: Family<DeploymentLabel, Counter>,
    /// Time inside them, seconds.
    pub tensor_call_seconds: Family<DeploymentLabel, Seconds>,
    /// Recorded tensor steps launched as CUDA graphs.
    pub tensor_recorded_steps: Family<DeploymentLabel, Counter>,
    /// Of those, launched from a graph kept from an earlier step.
    pub tensor_recorded_updates: Family<DeploymentLabel, Counter>,
    /// `wasi:cuda` kernel launches.
    pub cuda_launches: Family<DeploymentLabel, Counter>,
    /// Time a guest waited for a durable `wasi:keyvalue` write, seconds.
    pub keyvalue_writes: Family<DeploymentLabel, Histogram>,
    /// Time a guest waited for an audit record (a durable write to its
    /// `audit` bucket), seconds.
    pub audit_writes: Family<DeploymentLabel, Histogram>,
    /// Requests waiting for a concurrency slot.
    pub queued: Family<DeploymentLabel, Gauge>,
    /// A deployment's concurrency limit (absent: unlimited).
    pub concurrency_limit: Family<DeploymentLabel, Gauge>,
    /// Requests (embeddings) or sequences (generation) per batched model call.
    pub batch_size: Family<BatchLabels, Histogram>,
    /// Wall time of each batched model call (an embeddings batch, a
    /// generation step), seconds.
    pub batch_seconds: Family<BatchLabels, Histogram>,
    /// Sequences in a deployment's generation batch now.
    pub batch_sequences: Family<DeploymentLabel, Gauge>,
    /// 1 while a GPU passes its health checks, 0 once taken out.
    pub gpu_up: Family<GpuLabel, Gauge>,
    /// A GPU's memory, bytes.
    pub gpu_memory: Family<GpuLabel, Gauge>,
    /// A GPU's memory in use by every process, bytes (at the last check).
    pub gpu_memory_used: Family<GpuLabel, Gauge>,
    /// Tenants' tensor-memory quotas reserved on a GPU, bytes.
    pub gpu_reserved: Family<GpuLabel, Gauge>,
    /// Tenants with a context on a GPU.
    pub gpu_tenants: Family<GpuLabel, Gauge>,
    /// Tenants' contexts on a GPU that faulted (until replaced).
    pub gpu_faulted_contexts: Family<GpuLabel, Gauge>,
}

fn batch_histogram() -> Histogram {
    // 1 .. 256
    Histogram::new(exponential_buckets(1.0, 2.0, 9))
}

/// Request-latency bucket bounds, seconds: 1-2.5-5 steps, so that latency
/// objectives (docs/SLO.md) fall on a bound.
pub const LATENCY_BUCKETS: [f64; 19] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 25.0, 60.0,
];

fn latency_histogram() -> HistogramWithExemplars<TraceLabel> {
    HistogramWithExemplars::new(LATENCY_BUCKETS.into_iter())
}

fn compile_histogram() -> Histogram {
    // 1 ms .. ~65 s
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

fn write_histogram() -> Histogram {
    // 50 µs .. ~3.3 s
    Histogram::new(exponential_buckets(0.000_05, 2.0, 17))
}

fn instantiation_histogram() -> Histogram {
    // 5 µs .. ~0.65 s
    Histogram::new(exponential_buckets(0.000_005, 2.0, 18))
}

impl Metrics {
    /// Creates and registers every metric; `(backend, hardware)` (the
    /// tensor device: `cuda:0` and what it is) go into `tensorwasm_build_info`.
    pub fn new((backend, hardware): (&str, &str)) -> Self {
        let mut r = Registry::with_prefix("tensorwasm");
        r.register(
            "build",
            "The server's version and tensor backend",
            prometheus_client::metrics::info::Info::new(vec![
                ("version", env!("CARGO_PKG_VERSION").to_string()),
                ("backend", backend.to_string()),
                ("device", hardware.to_string()),
            ]),
        );
        Self {
            requests: add(
                &mut r,
                "requests",
                "HTTP requests by deployment and status",
                Family::default(),
            ),
            connections: crate::serving::connections::ConnectionMetrics {
                open: add(
                    &mut r,
                    "connections",
                    "Client connections open, per listener",
                    Family::default(),
                ),
                closed: add(
                    &mut r,
                    "connections_closed",
                    "Connections the server closed: slow request heads, idle past the timeout, \
                     the longest-idle one of a full listener, new ones refused while all were busy, \
                     idle ones at shutdown",
                    Family::default(),
                ),
            },
            latency: add(
                &mut r,
                "request_duration_seconds",
                "Time from request to response headers",
                Family::new_with_constructor(
                    latency_histogram as fn() -> HistogramWithExemplars<TraceLabel>,
                ),
            ),
            instantiation: add(
                &mut r,
                "instantiation_duration_seconds",
                "Time to instantiate a component",
                Family::new_with_constructor(instantiation_histogram as fn() -> Histogram),
            ),
            reuses: add(
                &mut r,
                "instance_reuses",
                "Requests served by an instance that had served a request before",
                Family::default(),
            ),
            discards: add(
                &mut r,
                "instance_discards",
                "Instances of reusing deployments dropped, by reason",
                Family::default(),
            ),
            idle_instances: add(
                &mut r,
                "idle_instances",
                "Instances waiting for their next request",
                Family::default(),
            ),
            in_flight: add(
                &mut r,
                "in_flight_requests",
                "Requests being handled",
                Family::default(),
            ),
            traps: add(
                &mut r,
                "guest_traps",
                "Guests that trapped",
                Family::default(),
            ),
            deadline_kills: add(
                &mut r,
                "deadline_kills",
                "Guests stopped at their wall-clock deadline",
                Family::default(),
            ),
            memory_cap_kills: add(
                &mut r,
                "memory_cap_kills",
                "Guests that died after hitting their memory cap",
                Family::default(),
            ),
            tensor_bytes: add(
                &mut r,
                "tensor_bytes",
                "Tensor memory held by each tenant, in bytes",
                Family::default(),
            ),
            tensor_quota: add(
                &mut r,
                "tensor_quota_bytes",
                "Each tenant's tensor-memory quota, in bytes",
                Family::default(),
            ),
            weights_bytes: add(
                &mut r,
                "weights_bytes",
                "Model weights resident on the device, by the tenant whose deployment loaded them",
                Family::default(),
            ),
            tensor_ops: add(
                &mut r,
                "tensor_ops",
                "wasi:tensor operations queued, by op",
                Family::default(),
            ),
            tensor_op_seconds: add(
                &mut r,
                "tensor_op_seconds",
                "Time spent inside wasi:tensor operations (queueing them on a GPU), by op",
                Family::default(),
            ),
            tensor_reads: add(
                &mut r,
                "tensor_reads",
                "wasi:tensor read-backs to guest memory",
                Family::default(),
            ),
            tensor_read_seconds: add(
                &mut r,
                "tensor_read_seconds",
                "Time spent inside read-backs (waiting for queued work)",
                Family::default(),
            ),
            tensor_calls: add(
                &mut r,
                "tensor_calls",
                "Other wasi:tensor calls: uploads, reshapes, shapes, handle drops",
                Family::default(),
            ),
            tensor_call_seconds: add(
                &mut r,
                "tensor_call_seconds",
                "Time spent inside the other wasi:tensor calls",
                Family::default(),
            ),
            tensor_recorded_steps: add(
                &mut r,
                "tensor_recorded_steps",
                "Recorded wasi:tensor steps (or parts of steps) launched as CUDA graphs",
                Family::default(),
            ),
            tensor_recorded_updates: add(
                &mut r,
                "tensor_recorded_updates",
                "Recorded steps launched from a graph kept from an earlier step of the same key",
                Family::default(),
            ),
            cuda_launches: add(
                &mut r,
                "cuda_launches",
                "wasi:cuda kernel launches",
                Family::default(),
            ),
            keyvalue_writes: add(
                &mut r,
                "keyvalue_write_duration_seconds",
                "Time a guest waited for a durable wasi:keyvalue write to commit",
                Family::new_with_constructor(write_histogram as fn() -> Histogram),
            ),
            audit_writes: add(
                &mut r,
                "audit_write_duration_seconds",
                "Time a guest waited for a durable write to its `audit` bucket",
                Family::new_with_constructor(write_histogram as fn() -> Histogram),
            ),
            queued: add(
                &mut r,
                "queued_requests",
                "Requests waiting for one of the deployment's concurrency slots",
                Family::default(),
            ),
            concurrency_limit: add(
                &mut r,
                "concurrency_limit",
                "A deployment's concurrency limit (no series: unlimited)",
                Family::default(),
            ),
            batch_size: add(
                &mut r,
                "inference_batch_size",
                "Requests or sequences served by one batched model call",
                Family::new_with_constructor(batch_histogram as fn() -> Histogram),
            ),
            batch_seconds: add(
                &mut r,
                "inference_batch_seconds",
                "Wall time of one batched model call (an embeddings batch, a generation step)",
                Family::new_with_constructor(write_histogram as fn() -> Histogram),
            ),
            batch_sequences: add(
                &mut r,
                "inference_sequences",
                "Sequences in a generation batch (admitted, not yet ended or released)",
                Family::default(),
            ),
            gpu_up: add(
                &mut r,
                "gpu_up",
                "1 while a GPU passes its health checks, 0 once it is taken out",
                Family::default(),
            ),
            gpu_memory: add(
                &mut r,
                "gpu_memory_bytes",
                "A GPU's memory, in bytes",
                Family::default(),
            ),
            gpu_memory_used: add(
                &mut r,
                "gpu_memory_used_bytes",
                "A GPU's memory in use by every process at its last health check, in bytes",
                Family::default(),
            ),
            gpu_reserved: add(
                &mut r,
                "gpu_reserved_bytes",
                "Tenants' tensor-memory quotas reserved on a GPU, in bytes",
                Family::default(),
            ),
            gpu_tenants: add(
                &mut r,
                "gpu_tenants",
                "Tenants with a context on a GPU",
                Family::default(),
            ),
            gpu_faulted_contexts: add(
                &mut r,
                "gpu_faulted_contexts",
                "Tenants' contexts on a GPU that faulted (an illegal address, a hardware error) and are not yet replaced",
                Family::default(),
            ),
            registry: {
                use super::telemetry::{SPANS_DROPPED, SPANS_ENDED, SPANS_EXPORTED};
                for (name, help, counter) in [
                    (
                        "trace_spans_ended",
                        "Trace spans handed to the exporter",
                        &SPANS_ENDED,
                    ),
                    (
                        "trace_spans_exported",
                        "Trace spans the collector accepted",
                        &SPANS_EXPORTED,
                    ),
                    (
                        "trace_spans_dropped",
                        "Trace spans dropped because their export failed",
                        &SPANS_DROPPED,
                    ),
                ] {
                    add(&mut r, name, help, (**counter).clone());
                }
                add(
                    &mut r,
                    "artifact_cache_hits",
                    "Compiled components loaded from the artifact cache",
                    ARTIFACT_CACHE_HITS.clone(),
                );
                add(
                    &mut r,
                    "artifact_cache_misses",
                    "Components compiled because the artifact cache had no valid entry",
                    ARTIFACT_CACHE_MISSES.clone(),
                );
                add(
                    &mut r,
                    "compile_duration_seconds",
                    "Compile times of components (Cranelift) and kernels (NVRTC)",
                    COMPILES.clone(),
                );
                add(
                    &mut r,
                    "keyvalue_commit_duration_seconds",
                    "Durable keyvalue transactions, each carrying a group of writes",
                    KEYVALUE_COMMITS.clone(),
                );
                r
            },
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Registers `metric` under `name` and hands it back.
fn add<M: prometheus_client::registry::Metric + Clone>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    metric: M,
) -> M {
    registry.register(name, help, metric.clone());
    metric
}
