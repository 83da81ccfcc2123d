//! Traces: OpenTelemetry spans made from our `tracing` spans of target
//! `otel` (the log never shows those; the exporter sees nothing else),
//! exported over OTLP — HTTP/protobuf or gRPC — in batches from a thread of
//! their own, so a slow or dead collector never holds a request: its spans
//! are only counted as dropped. Off unless `--otlp-endpoint` or the standard
//! `OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT` is set; `OTEL_SERVICE_NAME`,
//! `OTEL_TRACES_SAMPLER[_ARG]`, `OTEL_BSP_*` and `OTEL_EXPORTER_OTLP_*` are
//! read as the OpenTelemetry SDK reads them.
//!
//! W3C trace context: a request's `traceparent`/`tracestate` make its span a
//! child of the client's; the world sees a `traceparent` naming the host's
//! request span (so a guest forwarding headers continues the trace), outgoing
//! `wasi:http` requests carry one, and the response names the trace.

use anyhow::{Context as _, Result, bail};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use prometheus_client::metrics::counter::Counter;
use std::sync::LazyLock;
use std::time::Duration;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Spans ended, exported, and dropped because their export failed (a dead
/// or refusing collector). Ended − exported − dropped: still queued, or
/// dropped at a full queue (the SDK logs that count at shutdown).
pub static SPANS_ENDED: LazyLock<Counter> = LazyLock::new(Counter::default);
/// See [`SPANS_ENDED`].
pub static SPANS_EXPORTED: LazyLock<Counter> = LazyLock::new(Counter::default);
/// See [`SPANS_ENDED`].
pub static SPANS_DROPPED: LazyLock<Counter> = LazyLock::new(Counter::default);

/// The OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// OTLP over gRPC (collectors listen on 4317).
    Grpc,
    /// OTLP over HTTP with protobuf bodies (collectors listen on 4318).
    #[value(name = "http/protobuf")]
    HttpProtobuf,
}

/// What `serve` asks of tracing.
#[derive(Debug, Clone, Default)]
pub struct TraceOptions {
    /// The collector's base URL (`/v1/traces` is added for HTTP).
    pub endpoint: Option<String>,
    /// The transport (else `OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL`, else HTTP).
    pub protocol: Option<Protocol>,
    /// One span per `wasi:tensor` op, not only the per-request summary.
    pub tensor_ops: bool,
}

/// The running exporter; dropping it flushes what is queued.
pub struct Tracing {
    provider: SdkTracerProvider,
    /// Drives the gRPC client's connection (HTTP needs no runtime).
    _runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Tracing {
    fn drop(&mut self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!("traces: flushing at exit failed: {e}");
        }
    }
}

/// The `tracing` layer sending our spans to the exporter.
pub type Layer = Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync>;

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Starts the exporter when `options` or the environment name a collector;
/// returns it with the layer to install (at `TRACE` level with
/// `options.tensor_ops`, else `INFO`).
pub fn start(options: &TraceOptions) -> Result<Option<(Tracing, Layer)>> {
    let from_env =
        env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT"));
    if options.endpoint.is_none() && from_env.is_none()
        || env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
    {
        return Ok(None);
    }
    let protocol = match options.protocol {
        Some(p) => p,
        None => match env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL"))
            .as_deref()
        {
            None | Some("http/protobuf") => Protocol::HttpProtobuf,
            Some("grpc") => Protocol::Grpc,
            Some(other) => bail!(
                "OTEL_EXPORTER_OTLP_PROTOCOL={other:?} is not supported: use `grpc` or `http/protobuf`"
            ),
        },
    };
    let timeout = Duration::from_secs(10);
    let (exporter, runtime) = match protocol {
        Protocol::HttpProtobuf => {
            // The HTTP client's TLS (for https:// collectors) uses ring, as
            // the registry's OCI client does.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let mut b = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_timeout(timeout);
            if let Some(base) = &options.endpoint {
                b = b.with_endpoint(format!("{}/v1/traces", base.trim_end_matches('/')));
            }
            (b.build(), None)
        }
        Protocol::Grpc => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("otlp-grpc")
                .enable_all()
                .build()
                .context("traces: starting the gRPC client's runtime")?;
            let exporter = rt.block_on(async {
                let mut b = opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_timeout(timeout);
                if let Some(url) = &options.endpoint {
                    b = b.with_endpoint(url.clone());
                }
                b.build()
            });
            (exporter, Some(rt))
        }
    };
    let exporter = exporter.context("traces: the OTLP exporter")?;
    let mut resource = opentelemetry_sdk::Resource::builder().with_attribute(
        opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
    );
    if env("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("tensor-wasm");
    }
    let sampling = Sampling::from_env()?;
    SAMPLING.set(sampling).ok();
    let provider = SdkTracerProvider::builder()
        .with_resource(resource.build())
        // Requests are sampled before their span is made ([`Sampling`]).
        .with_sampler(opentelemetry_sdk::trace::Sampler::AlwaysOn)
        .with_batch_exporter(Counted(exporter))
        .build();
    let tracer = provider.tracer("tensor-wasm");
    let level = if options.tensor_ops {
        tracing::Level::TRACE
    } else {
        tracing::Level::INFO
    };
    use tracing_subscriber::Layer as _;
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_target(false)
        .with_tracked_inactivity(false)
        .with_context_activation(false)
        .with_filter(Sampled { level })
        .boxed();
    Ok(Some((
        Tracing {
            provider,
            _runtime: runtime,
        },
        layer,
    )))
}

/// Our spans (target `otel`, up to `level`): a span is made under a
/// request's span, or at the top for the few kinds that start a trace of
/// their own ([`ROOTS`]). A request left out by [`Sampling`] has no span
/// ([`request_span`]), so nothing is made under it either.
struct Sampled {
    level: tracing::Level,
}

/// The spans that may start a trace: requests, and the weights loads and
/// kernel compiles done when deployments start.
const ROOTS: [&str; 3] = ["request", "weights-load", "kernel-compile"];

impl<S> tracing_subscriber::layer::Filter<S> for Sampled
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn enabled(
        &self,
        meta: &tracing::Metadata<'_>,
        cx: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        meta.target() == "otel"
            && *meta.level() <= self.level
            && (ROOTS.contains(&meta.name()) || cx.lookup_current().is_some())
    }

    fn callsite_enabled(
        &self,
        meta: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        if meta.target() == "otel" && *meta.level() <= self.level {
            tracing::subscriber::Interest::sometimes()
        } else {
            tracing::subscriber::Interest::never()
        }
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(self.level.into())
    }
}

/// Which requests are traced, read from `OTEL_TRACES_SAMPLER[_ARG]` as the
/// SDK reads them, but decided before a request's span is made, so that a
/// request left out costs one random draw and nothing else.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Sampling {
    /// Share of requests that start a trace.
    ratio: f64,
    /// Whether a client's `traceparent` decides (its sampled flag).
    parent_based: bool,
}

static SAMPLING: std::sync::OnceLock<Sampling> = std::sync::OnceLock::new();

impl Sampling {
    fn from_env() -> Result<Sampling> {
        Sampling::parse(
            env("OTEL_TRACES_SAMPLER").as_deref(),
            env("OTEL_TRACES_SAMPLER_ARG").as_deref(),
        )
    }

    fn parse(sampler: Option<&str>, arg: Option<&str>) -> Result<Sampling> {
        let ratio = || -> Result<f64> {
            match arg {
                None => Ok(1.0),
                Some(a) => match a.trim().parse::<f64>() {
                    Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
                    _ => bail!("OTEL_TRACES_SAMPLER_ARG={a:?} is not a ratio between 0 and 1"),
                },
            }
        };
        let (ratio, parent_based) = match sampler.unwrap_or("parentbased_always_on") {
            "always_on" => (1.0, false),
            "always_off" => (0.0, false),
            "traceidratio" => (ratio()?, false),
            "parentbased_always_on" => (1.0, true),
            "parentbased_always_off" => (0.0, true),
            "parentbased_traceidratio" => (ratio()?, true),
            other => bail!(
                "OTEL_TRACES_SAMPLER={other:?} is not supported: use always_on, always_off, \
                 traceidratio or their parentbased_ forms"
            ),
        };
        Ok(Sampling {
            ratio,
            parent_based,
        })
    }

    /// Whether to trace a request with these headers.
    fn decide(&self, headers: &http::HeaderMap) -> bool {
        if self.parent_based
            && let Some(flags) = headers
                .get("traceparent")
                .and_then(|v| v.to_str().ok())
                .filter(|v| trace_id_of(v).is_some())
                .and_then(|v| v.rsplit('-').next())
                .and_then(|f| u8::from_str_radix(f, 16).ok())
        {
            return flags & 1 == 1;
        }
        self.ratio >= 1.0 || (self.ratio > 0.0 && rand::random::<f64>() < self.ratio)
    }
}

/// Counts what the exporter sends and what it fails to send.
#[derive(Debug)]
struct Counted<E>(E);

impl<E: SpanExporter> SpanExporter for Counted<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len() as u64;
        SPANS_ENDED.inc_by(n);
        let result = self.0.export(batch).await;
        match &result {
            Ok(()) => SPANS_EXPORTED.inc_by(n),
            Err(_) => SPANS_DROPPED.inc_by(n),
        };
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.0.set_resource(resource)
    }
}

/// The span of one request (OTel HTTP server conventions), a child of the
/// client's trace when it names one; disabled when traces are off or
/// [`Sampling`] leaves the request out.
/// Routing and serving fill in the rest ([`served_by`], [`finish`]).
pub fn request_span<B>(req: &http::Request<B>, client: &http::HeaderValue) -> tracing::Span {
    use tracing::field::Empty;
    // Traces off, or this request not sampled: no span, nothing under it
    // (a client's traceparent still reaches the world and outgoing calls).
    if !SAMPLING.get().is_some_and(|s| s.decide(req.headers())) {
        return tracing::Span::none();
    }
    let method = req.method().as_str();
    let (address, port) = client
        .to_str()
        .ok()
        .and_then(|c| c.rsplit_once(':'))
        .unwrap_or_default();
    let span = tracing::info_span!(
        target: "otel",
        "request",
        otel.name = method,
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = method,
        url.path = req.uri().path(),
        url.scheme = "http",
        client.address = address.trim_matches(['[', ']']),
        client.port = port,
        user_agent.original = req
            .headers()
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok()),
        http.route = Empty,
        http.response.status_code = Empty,
        tenant = Empty,
        deployment = Empty,
        request_id = Empty,
    );
    adopt(&span, req.headers());
    span
}

/// Records on the request's span which deployment serves it (and under
/// which route, which also names the span), and the request id.
pub fn served_by(
    span: &tracing::Span,
    method: &http::Method,
    (tenant, deployment): (&str, &str),
    route: &str,
    id: &str,
) {
    if span.is_disabled() {
        return;
    }
    // The span has started (routing made a child of it): rename it in place.
    span.context()
        .span()
        .update_name(format!("{method} {route}"));
    span.record("tenant", tenant)
        .record("deployment", deployment)
        .record("http.route", route)
        .record("request_id", id);
}

/// Records the response's status on the request's span and names the trace
/// in the response's `traceparent`.
pub fn finish<B>(span: &tracing::Span, response: &mut http::Response<B>) {
    if span.is_disabled() {
        return;
    }
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    stamp(span, response.headers_mut());
}

/// Makes `span` a child of the trace the request's `traceparent` (and
/// `tracestate`) name, if any.
pub fn adopt(span: &tracing::Span, headers: &http::HeaderMap) {
    if span.is_disabled() || !headers.contains_key("traceparent") {
        return;
    }
    let parent =
        TraceContextPropagator::new().extract(&opentelemetry_http::HeaderExtractor(headers));
    // A malformed header yields an empty context: the span starts a trace.
    let _ = span.set_parent(parent);
}

/// Writes `span`'s `traceparent` (and `tracestate`) into `headers`,
/// replacing any; nothing when it is not exported.
pub fn stamp(span: &tracing::Span, headers: &mut http::HeaderMap) {
    if span.is_disabled() {
        return;
    }
    let cx = span.context();
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new()
            .inject_context(&cx, &mut opentelemetry_http::HeaderInjector(headers));
    }
}

/// The trace id (32 hex digits) a request's `traceparent` names, for logs.
pub fn trace_id(headers: &http::HeaderMap) -> Option<&str> {
    trace_id_of(headers.get("traceparent")?.to_str().ok()?)
}

fn trace_id_of(traceparent: &str) -> Option<&str> {
    let id = traceparent.split('-').nth(1)?;
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) && id != "0".repeat(32))
        .then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_follows_the_otel_variables() {
        let s = |a, b| Sampling::parse(a, b).unwrap();
        assert_eq!(
            s(None, None),
            Sampling {
                ratio: 1.0,
                parent_based: true
            }
        );
        assert_eq!(
            s(Some("traceidratio"), Some("0.01")),
            Sampling {
                ratio: 0.01,
                parent_based: false
            }
        );
        assert_eq!(s(Some("parentbased_always_off"), None).ratio, 0.0);
        assert!(Sampling::parse(Some("traceidratio"), Some("2")).is_err());
        assert!(Sampling::parse(Some("jaeger_remote"), None).is_err());
        let mut h = http::HeaderMap::new();
        let never = s(Some("parentbased_traceidratio"), Some("0"));
        assert!(!never.decide(&h));
        h.insert(
            "traceparent",
            http::HeaderValue::from_static(
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
        );
        assert!(never.decide(&h), "a sampled parent decides");
        assert!(
            !s(Some("traceidratio"), Some("0")).decide(&h),
            "not parent-based"
        );
        h.insert(
            "traceparent",
            http::HeaderValue::from_static(
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
            ),
        );
        assert!(!s(None, None).decide(&h), "an unsampled parent decides");
        let half = s(Some("traceidratio"), Some("0.5"));
        let n = (0..2000)
            .filter(|_| half.decide(&http::HeaderMap::new()))
            .count();
        assert!((800..1200).contains(&n), "{n}");
    }

    #[test]
    fn trace_ids_come_only_from_well_formed_headers() {
        let mut h = http::HeaderMap::new();
        assert_eq!(trace_id(&h), None);
        h.insert(
            "traceparent",
            http::HeaderValue::from_static(
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
        );
        assert_eq!(trace_id(&h), Some("0af7651916cd43dd8448eb211c80319c"));
        for bad in [
            "00-zzz-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "garbage",
        ] {
            h.insert("traceparent", http::HeaderValue::from_static(bad));
            assert_eq!(trace_id(&h), None, "{bad}");
        }
    }
}
