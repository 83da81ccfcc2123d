//! Traces as a collector receives them: a real OTLP receiver on 127.0.0.1
//! (HTTP/protobuf and gRPC, the bodies decoded with the OpenTelemetry
//! protobuf definitions) behind `serve --otlp-endpoint`.

use crate::support::*;
use bytes::Bytes;
use http_body_util::BodyExt;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use prost::Message;
use std::collections::{HashMap, VecDeque};
use std::io::Read as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One received span, flattened.
#[derive(Debug, Clone)]
struct Span {
    trace: String,
    id: String,
    parent: String,
    name: String,
    /// OTLP's enum: 2 server, 3 client.
    kind: i32,
    attrs: HashMap<String, String>,
    service: String,
}

impl Span {
    fn attr(&self, key: &str) -> Option<&str> {
        self.attrs.get(key).map(String::as_str)
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Any::StringValue(s)) => s.clone(),
        Some(Any::IntValue(i)) => i.to_string(),
        Some(Any::BoolValue(b)) => b.to_string(),
        Some(Any::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

/// An OTLP trace receiver: HTTP/1.1 `POST /v1/traces` and gRPC
/// `TraceService/Export` on one port.
struct Collector {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<Span>>>,
    /// Exports that came gzip-compressed.
    gzipped: Arc<AtomicUsize>,
}

impl Collector {
    fn start() -> Collector {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let gzipped = Arc::new(AtomicUsize::new(0));
        let sink = (spans.clone(), gzipped.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let Ok((conn, _)) = listener.accept().await else {
                        continue;
                    };
                    let sink = sink.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req| {
                            let (sink, gzipped) = sink.clone();
                            async move {
                                Ok::<_, std::convert::Infallible>(
                                    receive(req, &sink, &gzipped).await,
                                )
                            }
                        });
                        let _ = hyper_util::server::conn::auto::Builder::new(
                            hyper_util::rt::TokioExecutor::new(),
                        )
                        .serve_connection(hyper_util::rt::TokioIo::new(conn), service)
                        .await;
                    });
                }
            });
        });
        Collector {
            addr,
            spans,
            gzipped,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The spans received so far once `done` holds of them (or after 15 s).
    fn wait(&self, done: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        let until = Instant::now() + Duration::from_secs(15);
        loop {
            let spans = self.spans.lock().unwrap().clone();
            if done(&spans) || Instant::now() > until {
                return spans;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A response body of fixed frames (gRPC needs trailers).
struct Frames(VecDeque<http_body::Frame<Bytes>>);

impl http_body::Body for Frames {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.pop_front().map(Ok))
    }
}

async fn receive(
    req: http::Request<hyper::body::Incoming>,
    sink: &Mutex<Vec<Span>>,
    gzipped: &AtomicUsize,
) -> http::Response<Frames> {
    let header = |name: &str, prefix: &[u8]| {
        req.headers()
            .get(name)
            .is_some_and(|v| v.as_bytes().starts_with(prefix))
    };
    let grpc = header("content-type", b"application/grpc");
    let http_gzip = header("content-encoding", b"gzip");
    let body = req.into_body().collect().await.unwrap().to_bytes();
    // gRPC: one message behind a flag byte (1: compressed, by its
    // `grpc-encoding`) and a 4-byte length.
    let (message, gzip) = match grpc {
        true => (body.slice(5..), body[0] == 1),
        false => (body, http_gzip),
    };
    let message = match gzip {
        true => {
            gzipped.fetch_add(1, Ordering::Relaxed);
            let mut plain = Vec::new();
            flate2::read::GzDecoder::new(&message[..])
                .read_to_end(&mut plain)
                .expect("a gzip stream");
            Bytes::from(plain)
        }
        false => message,
    };
    let export = ExportTraceServiceRequest::decode(message).expect("a valid OTLP export");
    let mut got = Vec::new();
    for rs in export.resource_spans {
        let service = rs
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .map(|kv| text(&kv.value))
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for s in ss.spans {
                got.push(Span {
                    trace: hex(&s.trace_id),
                    id: hex(&s.span_id),
                    parent: hex(&s.parent_span_id),
                    name: s.name,
                    kind: s.kind,
                    attrs: s
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), text(&kv.value)))
                        .collect(),
                    service: service.clone(),
                });
            }
        }
    }
    sink.lock().unwrap().extend(got);
    let reply = ExportTraceServiceResponse::default().encode_to_vec();
    let mut frames = VecDeque::new();
    let mut response = http::Response::builder();
    if grpc {
        let mut framed = vec![0u8];
        framed.extend_from_slice(&(reply.len() as u32).to_be_bytes());
        framed.extend_from_slice(&reply);
        frames.push_back(http_body::Frame::data(Bytes::from(framed)));
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        frames.push_back(http_body::Frame::trailers(trailers));
        response = response.header("content-type", "application/grpc");
    } else {
        frames.push_back(http_body::Frame::data(Bytes::from(reply)));
        response = response.header("content-type", "application/x-protobuf");
    }
    response.body(Frames(frames)).unwrap()
}

/// Export every 100 ms, so tests need not wait the SDK's default 5 s.
const FAST_EXPORT: &[(&str, &str)] = &[("OTEL_BSP_SCHEDULE_DELAY", "100")];

const TOKEN: &str = "tok-trace-1";

/// The gateway world with every request audited (a durable keyvalue
/// write per request) and a reader token.
fn gateway(dir: &Path) -> std::path::PathBuf {
    let tokens = format!("tracer {} read", tensor_wasm::platform::token::hash(TOKEN));
    deployment_file(
        dir,
        &format!(
            r#"
[[deployment]]
name = "gw"
tenant = "acme"
world = {world:?}

[deployment.grants]
config = {{ "router.routes" = "* /hello app", "audit.policy" = "all" }}
secrets = {{ "auth.tokens" = "{tokens}" }}
"#,
            world = root().join("worlds/gateway.wac"),
        ),
    )
}

fn children<'a>(spans: &'a [Span], parent: &Span) -> Vec<&'a Span> {
    spans
        .iter()
        .filter(|s| s.trace == parent.trace && s.parent == parent.id)
        .collect()
}

#[test]
fn a_gateway_request_is_one_trace_from_the_clients_span_to_its_keyvalue_writes() {
    let dir = scratch("traces_gateway");
    let data = dir.join("data");
    let collector = Collector::start();
    let file = gateway(&dir);
    let server = Server::start_env(
        &[
            file.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
            "--otlp-endpoint",
            &collector.url(),
            "--access-log",
            "--log-format",
            "json",
        ],
        &dir.join("cache"),
        FAST_EXPORT,
    );
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let auth = format!("Bearer {TOKEN}");
    let traceparent = format!("00-{trace}-{client_span}-01");
    let r = request(
        server.addr,
        "GET",
        "/hello",
        &[
            ("authorization", &auth),
            ("traceparent", &traceparent),
            ("x-request-id", "traced-1"),
        ],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // The response names the trace and the host's request span.
    let answered = r
        .header("traceparent")
        .expect("a traceparent on the response");
    let parts: Vec<&str> = answered.split('-').collect();
    assert_eq!(
        (parts[0], parts[1], parts[3]),
        ("00", trace, "01"),
        "{answered}"
    );
    let server_span = parts[2].to_string();

    let spans = collector.wait(|s| {
        s.iter()
            .any(|s| s.trace == trace && s.name.starts_with("wasi:keyvalue"))
            && s.iter().any(|s| s.id == server_span)
    });
    let request_span = spans
        .iter()
        .find(|s| s.id == server_span)
        .unwrap_or_else(|| panic!("no request span {server_span} in {spans:#?}"));
    assert_eq!(request_span.trace, trace);
    assert_eq!(
        request_span.parent, client_span,
        "the client's span is the parent"
    );
    assert_eq!(request_span.kind, 2, "a server span");
    assert_eq!(request_span.name, "GET /");
    assert_eq!(request_span.service, "tensor-wasm");
    for (key, want) in [
        ("http.request.method", "GET"),
        ("url.path", "/hello"),
        ("http.response.status_code", "200"),
        ("tenant", "acme"),
        ("deployment", "gw"),
        ("request_id", "traced-1"),
        ("client.address", "127.0.0.1"),
    ] {
        assert_eq!(
            request_span.attr(key),
            Some(want),
            "{key} in {request_span:#?}"
        );
    }
    let port = request_span
        .attr("client.port")
        .and_then(|p| p.parse::<u16>().ok());
    assert!(
        port.is_some_and(|p| p > 0),
        "client.port in {request_span:#?}"
    );
    // request → route, instantiate, handler → keyvalue writes (audit), config reads.
    let names = |v: &[&Span]| v.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
    let below = children(&spans, request_span);
    for want in ["route", "instantiate", "wasi:http/incoming-handler.handle"] {
        assert!(
            names(&below).iter().any(|n| n == want),
            "{want} not in {:?}",
            names(&below)
        );
    }
    let handler = below
        .iter()
        .find(|s| s.name == "wasi:http/incoming-handler.handle")
        .unwrap();
    let inside = children(&spans, handler);
    let kv: Vec<_> = inside
        .iter()
        .filter(|s| s.name.starts_with("wasi:keyvalue"))
        .collect();
    assert!(
        kv.iter().any(|s| s.attr("db.operation.name") == Some("set")
            && s.attr("db.system.name") == Some("redb")
            && s.attr("tenant") == Some("acme")
            && s.attr("deployment") == Some("gw")),
        "no durable keyvalue write (with tenant and deployment) under the handler: {:?}",
        names(&inside)
    );
    assert!(
        names(&inside).iter().any(|n| n == "wasi:config get"),
        "{:?}",
        names(&inside)
    );
    // Every span of the request is in the one trace.
    assert!(spans.iter().filter(|s| s.trace == trace).count() >= 6);

    // The audit record and the access log line carry the trace id.
    let records = audit_records(&data, "acme");
    let record = records
        .iter()
        .find(|r| r["request_id"] == "traced-1")
        .unwrap_or_else(|| panic!("{records:?}"));
    assert_eq!(record["trace_id"], trace, "{record}");
    let until = Instant::now() + Duration::from_secs(5);
    while !server.log().contains("\"trace_id\"") && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    let line = server
        .log()
        .lines()
        .find(|l| l.contains("\"target\":\"access\""))
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .expect("an access line");
    assert_eq!(line["trace_id"], trace, "{line}");

    // Without a traceparent the request starts a trace of its own.
    let r = request(
        server.addr,
        "GET",
        "/hello",
        &[("authorization", &auth)],
        b"",
    );
    assert_eq!(r.status, 200);
    let own = response_trace(&r);
    assert_ne!(own, trace);
    let spans = collector.wait(|s| s.iter().any(|s| s.trace == own && s.kind == 2));
    let root = spans
        .iter()
        .find(|s| s.trace == own && s.kind == 2)
        .unwrap();
    assert_eq!(root.parent, "", "a root span");
    assert!(metric_value(&server.metrics(), "tensorwasm_trace_spans_exported_total") > 0.0);
}

/// The trace id a response's `traceparent` names.
fn response_trace(r: &Resp) -> String {
    let header = r
        .header("traceparent")
        .expect("a traceparent on the response");
    header.split('-').nth(1).expect("a trace id").to_string()
}

/// An unlabelled sample's value in metrics text.
fn metric_value(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn grpc_export_and_tensor_work_per_request() {
    let dir = scratch("traces_grpc");
    let collector = Collector::start();
    let probe = guest("tensor_probe");
    let server = Server::start_env(
        &[
            probe.to_str().unwrap(),
            "--otlp-endpoint",
            &collector.url(),
            "--otlp-protocol",
            "grpc",
            "--trace-tensor-ops",
        ],
        &dir,
        &[
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_SERVICE_NAME", "probe-svc"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
        ],
    );
    let r = server.get("/bench/matmul?n=8&reps=2");
    assert_eq!(r.status, 200, "{}", r.text());
    let trace = response_trace(&r);
    let spans = collector.wait(|s| s.iter().any(|s| s.trace == trace && s.name == "matmul"));
    let handler = spans
        .iter()
        .find(|s| s.trace == trace && s.name == "wasi:http/incoming-handler.handle")
        .unwrap_or_else(|| panic!("no handler span in {spans:#?}"));
    assert_eq!(handler.service, "probe-svc");
    let ops: u64 = handler
        .attr("tensor.ops")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(ops >= 2, "the handler sums up its tensor ops: {handler:#?}");
    assert!(handler.attr("tensor.op_us").is_some());
    let read: u64 = handler
        .attr("tensor.read_bytes")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(
        read > 0,
        "each product's element read back is counted: {handler:#?}"
    );
    // With --trace-tensor-ops, each op is a span under the handler.
    let matmuls = children(&spans, handler)
        .into_iter()
        .filter(|s| s.name == "matmul")
        .count();
    assert!(matmuls >= 2, "{:?}", children(&spans, handler));
    assert!(
        collector.gzipped.load(Ordering::Relaxed) > 0,
        "gzip over gRPC"
    );
}

#[test]
fn http_exports_are_gzipped_when_asked_and_a_bad_compression_is_refused() {
    let dir = scratch("traces_gzip");
    let collector = Collector::start();
    let hello = guest("hello");
    let server = Server::start_env(
        &[hello.to_str().unwrap(), "--otlp-endpoint", &collector.url()],
        &dir,
        &[
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "gzip"),
        ],
    );
    let r = server.get("/");
    assert_eq!(r.status, 200);
    let trace = response_trace(&r);
    let spans = collector.wait(|s| s.iter().any(|s| s.trace == trace));
    assert!(spans.iter().any(|s| s.trace == trace), "{spans:#?}");
    assert!(
        collector.gzipped.load(Ordering::Relaxed) > 0,
        "gzip over HTTP"
    );
    drop(server);
    // Any other compression: one clear error at start.
    let mut refused = std::process::Command::new(bin())
        .args([
            "serve",
            hello.to_str().unwrap(),
            "--otlp-endpoint",
            &collector.url(),
        ])
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "off"])
        .env("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(30);
    while refused.try_wait().unwrap().is_none() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = refused.kill();
    let out = refused.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("OTEL_EXPORTER_OTLP_COMPRESSION=\"zstd\" is not supported"),
        "{err}"
    );
}

#[test]
fn a_dead_collector_costs_requests_nothing_but_dropped_spans() {
    let dir = scratch("traces_dead");
    // A port nothing listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let hello = guest("hello");
    let server = Server::start_env(
        &[
            hello.to_str().unwrap(),
            "--otlp-endpoint",
            &format!("http://{dead}"),
        ],
        &dir,
        FAST_EXPORT,
    );
    let started = Instant::now();
    for _ in 0..20 {
        assert_eq!(server.get("/hello").status, 200);
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    let until = Instant::now() + Duration::from_secs(15);
    let mut dropped = 0.0;
    while dropped == 0.0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
        dropped = metric_value(&server.metrics(), "tensorwasm_trace_spans_dropped_total");
    }
    assert!(dropped > 0.0, "{}", server.metrics());
    assert_eq!(server.get("/hello").status, 200);
}

#[test]
fn traces_are_off_by_default() {
    let dir = scratch("traces_off");
    let hello = guest("hello");
    let server = Server::start(&[hello.to_str().unwrap()], &dir);
    let r = request(
        server.addr,
        "GET",
        "/hello",
        &[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )],
        b"",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("traceparent"), None);
}
