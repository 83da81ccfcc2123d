//! Traces: OpenTelemetry spans ([`Span`]) exported over OTLP —
//! HTTP/protobuf or gRPC — in batches from a thread of their own, so a
//! slow or dead collector never holds a request: its spans are only counted
//! as dropped. Off unless `--otlp-endpoint` or the standard
//! `OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT` is set; `OTEL_SERVICE_NAME`,
//! `OTEL_TRACES_SAMPLER[_ARG]`, `OTEL_BSP_*` and `OTEL_EXPORTER_OTLP_*` are
//! read as the OpenTelemetry SDK reads them.
//!
//! W3C trace context: a request's `traceparent`/`tracestate` make its span a
//! child of the client's; the world sees a `traceparent` naming the host's
//! request span (so a guest forwarding headers continues the trace), outgoing
//! `wasi:http` requests carry one, and the response names the trace.

mod export;
mod otlp;
mod span;

pub use span::{
    Cx, Entered, Labels, Span, current, labels, parse_traceparent, with_current, within,
};

use anyhow::{Context as _, Result, bail};
use opentelemetry::trace::TraceState;
use prometheus_client::metrics::counter::Counter;
use std::borrow::Cow;
use std::sync::LazyLock;

/// Spans ended, exported, and dropped (their export failed — a dead or
/// refusing collector — or they found the queue full). Ended − exported −
/// dropped: still queued.
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

/// The running exporter; dropping it sends what is queued.
pub struct Tracing {
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Tracing {
    fn drop(&mut self) {
        if let Some(queue) = span::QUEUE.get() {
            queue.close();
        }
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::warn!("traces: the export thread failed at exit");
        }
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Starts the exporter when `options` or the environment name a collector
/// (once per process; `None` when traces stay off).
pub fn start(options: &TraceOptions) -> Result<Option<Tracing>> {
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
    let sender = otlp::Sender::new(protocol, options.endpoint.as_deref())?;
    let mut resource = opentelemetry_sdk::Resource::builder().with_attribute(
        opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
    );
    if env("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("tensor-wasm");
    }
    let fixed = otlp::Fixed::new(&resource.build());
    let sampling = Sampling::from_env()?;
    let (queue, thread) = export::start(fixed.room(), move |batch| sender.send(fixed.seal(batch)))
        .context("traces: starting the export thread")?;
    if span::QUEUE.set(queue).is_err() {
        bail!("traces: started twice");
    }
    SAMPLING.set(sampling).ok();
    span::VERBOSE.store(options.tensor_ops, std::sync::atomic::Ordering::Relaxed);
    Ok(Some(Tracing {
        thread: Some(thread),
    }))
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

    /// Whether to trace a request whose `traceparent` reads `parent`.
    fn decide(&self, parent: Option<(u128, u64, bool)>) -> bool {
        if self.parent_based
            && let Some((_, _, sampled)) = parent
        {
            return sampled;
        }
        self.ratio >= 1.0 || (self.ratio > 0.0 && rand::random::<f64>() < self.ratio)
    }
}

/// The span of one request (OTel HTTP server conventions), a child of the
/// client's trace when it names one; nothing when traces are off or
/// [`Sampling`] leaves the request out (a client's `traceparent` still
/// reaches the world and outgoing calls then).
/// Routing and serving fill in the rest ([`served_by`], [`finish`]).
pub fn request_span<B>(req: &http::Request<B>, client: &http::HeaderValue) -> Span {
    let Some(sampling) = SAMPLING.get() else {
        return Span::none();
    };
    let headers = req.headers();
    let parent = headers
        .get(&PARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_traceparent);
    if !sampling.decide(parent) {
        return Span::none();
    }
    // A well-formed `tracestate` is passed on as the client sent it.
    let state = match (parent, headers.get(&STATE)) {
        (Some(_), Some(s)) => s
            .to_str()
            .ok()
            .filter(|s| {
                s.parse::<TraceState>()
                    .is_ok_and(|t| !t.header().is_empty())
            })
            .map(Box::from),
        _ => None,
    };
    let method = req.method().as_str();
    let (address, port) = client
        .to_str()
        .ok()
        .and_then(|c| c.rsplit_once(':'))
        .unwrap_or_default();
    // The standard methods' names need no copy.
    let method: Cow<'static, str> = match method {
        "GET" => "GET".into(),
        "POST" => "POST".into(),
        "PUT" => "PUT".into(),
        "DELETE" => "DELETE".into(),
        "HEAD" => "HEAD".into(),
        "OPTIONS" => "OPTIONS".into(),
        "PATCH" => "PATCH".into(),
        other => other.to_string().into(),
    };
    let span = Span::server(method.clone(), parent.map(|(t, s, _)| (t, s)), state);
    let mut span = span
        .with_str("http.request.method", &method)
        .with_str("url.path", req.uri().path())
        .with_str("url.scheme", "http")
        .with_str("client.address", address.trim_matches(['[', ']']))
        .with("client.port", port.parse::<i64>().unwrap_or(0));
    if let Some(agent) = headers
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
    {
        span.set_str("user_agent.original", agent);
    }
    span
}

/// Records on the request's span which deployment serves it (its
/// `labels`, which the spans made under it inherit), under which route
/// (which also names the span), and the request id.
pub fn served_by(span: &mut Span, method: &http::Method, labels: &Labels, route: &str, id: &str) {
    if !span.is_recording() {
        return;
    }
    span.rename(format!("{method} {route}"));
    span.label(labels.clone());
    span.set_str("http.route", route);
    span.set_str("request_id", id);
}

/// Records the response's status on the request's span and names the trace
/// in the response's `traceparent`.
pub fn finish<B>(span: &mut Span, response: &mut http::Response<B>) {
    if !span.is_recording() {
        return;
    }
    let status = response.status();
    span.set("http.response.status_code", i64::from(status.as_u16()));
    if status.is_server_error() {
        span.fail();
    }
    stamp(span, response.headers_mut());
}

/// Writes `span`'s `traceparent` (and `tracestate`) into `headers`,
/// replacing any; nothing when it is not recorded.
pub fn stamp(span: &Span, headers: &mut http::HeaderMap) {
    if let Some((parent, state)) = span.traceparent() {
        headers.insert(PARENT, parent);
        match state {
            Some(s) => headers.insert(STATE, s),
            None => headers.remove(STATE),
        };
    }
}

/// The W3C trace-context headers (constants: a `&str` key is parsed on
/// every lookup).
pub const PARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
const STATE: http::HeaderName = http::HeaderName::from_static("tracestate");

/// The trace id (32 hex digits) a request's `traceparent` names, for logs.
pub fn trace_id(headers: &http::HeaderMap) -> Option<&str> {
    trace_id_of(headers.get(&PARENT)?.to_str().ok()?)
}

fn trace_id_of(traceparent: &str) -> Option<&str> {
    parse_traceparent(traceparent)?;
    traceparent.trim().split('-').nth(1)
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
        let never = s(Some("parentbased_traceidratio"), Some("0"));
        assert!(!never.decide(None));
        let sampled = Some((1, 2, true));
        assert!(never.decide(sampled), "a sampled parent decides");
        assert!(
            !s(Some("traceidratio"), Some("0")).decide(sampled),
            "not parent-based"
        );
        assert!(
            !s(None, None).decide(Some((1, 2, false))),
            "an unsampled parent decides"
        );
        let half = s(Some("traceidratio"), Some("0.5"));
        let n = (0..2000).filter(|_| half.decide(None)).count();
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
