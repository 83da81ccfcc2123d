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
        let mut registry = Registry::with_prefix("tensorwasm");
        let requests = Family::default();
        let latency: Family<DeploymentLabel, Histogram> =
            Family::new_with_constructor(latency_histogram);
        let instantiation: Family<DeploymentLabel, Histogram> =
            Family::new_with_constructor(instantiation_histogram);
        let in_flight = Family::default();
        let reuses = Family::default();
        let discards = Family::default();
        let idle_instances = Family::default();
        let traps = Family::default();
        let deadline_kills = Family::default();
        let memory_cap_kills = Family::default();
        let tensor_bytes = Family::default();
        registry.register(
            "requests",
            "HTTP requests by deployment and status",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from request to response headers",
            latency.clone(),
        );
        registry.register(
            "instantiation_duration_seconds",
            "Time to instantiate a component",
            instantiation.clone(),
        );
        registry.register(
            "instance_reuses",
            "Requests served by an instance that had served a request before",
            reuses.clone(),
        );
        registry.register(
            "instance_discards",
            "Instances of reusing deployments dropped, by reason",
            discards.clone(),
        );
        registry.register(
            "idle_instances",
            "Instances waiting for their next request",
            idle_instances.clone(),
        );
        registry.register(
            "in_flight_requests",
            "Requests being handled",
            in_flight.clone(),
        );
        registry.register("guest_traps", "Guests that trapped", traps.clone());
        registry.register(
            "deadline_kills",
            "Guests stopped at their wall-clock deadline",
            deadline_kills.clone(),
        );
        registry.register(
            "memory_cap_kills",
            "Guests that died after hitting their memory cap",
            memory_cap_kills.clone(),
        );
        registry.register(
            "tensor_bytes",
            "Tensor memory held by each tenant, in bytes",
            tensor_bytes.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            instantiation,
            reuses,
            discards,
            idle_instances,
            in_flight,
            traps,
            deadline_kills,
            memory_cap_kills,
            tensor_bytes,
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

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
