//! Operator metrics, in Prometheus text format on the admin listener.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of per-deployment series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeploymentLabel {
    /// Deployment name.
    pub deployment: String,
}

/// Label of per-tenant metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabel {
    /// Tenant name.
    pub tenant: String,
}

/// Labels of the request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Deployment name (`none` when no route matched).
    pub deployment: String,
    /// HTTP status code sent.
    pub status: u16,
}

/// Labels of the instance-discard counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DiscardLabels {
    /// Deployment name.
    pub deployment: String,
    /// Why the instance was dropped (`serving/instances.rs`).
    pub reason: &'static str,
}

/// Labels of the batch-size histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BatchLabels {
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
    /// Time to response headers, seconds.
    pub latency: Family<DeploymentLabel, Histogram>,
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
    /// Requests (embeddings) or sequences (generation) per batched model call.
    pub batch_size: Family<BatchLabels, Histogram>,
    /// Sequences in a deployment's generation batch now.
    pub batch_sequences: Family<DeploymentLabel, Gauge>,
}

fn batch_histogram() -> Histogram {
    // 1 .. 256
    Histogram::new(exponential_buckets(1.0, 2.0, 9))
}

fn latency_histogram() -> Histogram {
    // 50 µs .. ~26 s
    Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
}

fn instantiation_histogram() -> Histogram {
    // 5 µs .. ~0.65 s
    Histogram::new(exponential_buckets(0.000_005, 2.0, 18))
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("tensorwasm");
        Self {
            requests: add(
                &mut r,
                "requests",
                "HTTP requests by deployment and status",
                Family::default(),
            ),
            latency: add(
                &mut r,
                "request_duration_seconds",
                "Time from request to response headers",
                Family::new_with_constructor(latency_histogram as fn() -> Histogram),
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
            batch_size: add(
                &mut r,
                "inference_batch_size",
                "Requests or sequences served by one batched model call",
                Family::new_with_constructor(batch_histogram as fn() -> Histogram),
            ),
            batch_sequences: add(
                &mut r,
                "inference_sequences",
                "Sequences in a generation batch (admitted, not yet ended or released)",
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

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
