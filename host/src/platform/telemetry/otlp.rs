//! OTLP: ended spans encoded straight into an `ExportTraceServiceRequest`
//! (protobuf, written by hand: the SDK's path built an `SpanData`, then a
//! generated proto struct, cloning every string twice, and cost more CPU
//! than the serving threads spent on the spans), sent over HTTP/protobuf
//! (`POST …/v1/traces`) or gRPC (`TraceService/Export`).
//!
//! Read as the OTel exporters read them: `OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT`
//! (a traces endpoint is used as is), `…_HEADERS` (`k=v,k2=v2`, values
//! URL-decoded), `…_TIMEOUT` (ms, default 10000), `…_COMPRESSION` (`none`,
//! the default, or `gzip`).

use super::span::Open;
use anyhow::{Context as _, Result, bail};
use opentelemetry::Value;
use std::time::{Duration, SystemTime};

/// Where and how batches go: sent from the export thread on a runtime of
/// its own that runs only while it sends (no thread of its own, no hand-off
/// per batch).
pub(super) struct Sender {
    runtime: tokio::runtime::Runtime,
    timeout: Duration,
    /// Whether exports are gzip-compressed (`…_COMPRESSION=gzip`).
    gzip: bool,
    to: To,
}

enum To {
    /// HTTP/protobuf.
    Http {
        client: reqwest::Client,
        url: String,
        headers: reqwest::header::HeaderMap,
    },
    /// gRPC.
    Grpc {
        channel: tonic::transport::Channel,
        headers: tonic::metadata::MetadataMap,
    },
}

fn env2(traces: &str, general: &str) -> Option<String> {
    super::env(traces).or_else(|| super::env(general))
}

impl Sender {
    /// The sender for `protocol`, to `endpoint` (the option) or the
    /// environment's.
    pub(super) fn new(protocol: super::Protocol, endpoint: Option<&str>) -> Result<Sender> {
        let timeout = env2(
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
            "OTEL_EXPORTER_OTLP_TIMEOUT",
        )
        .map(|t| t.trim().parse::<u64>().map(Duration::from_millis))
        .transpose()
        .context("OTEL_EXPORTER_OTLP_TIMEOUT: not a number of milliseconds")?
        .unwrap_or(Duration::from_secs(10));
        let gzip = match env2(
            "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
            "OTEL_EXPORTER_OTLP_COMPRESSION",
        ) {
            None => false,
            Some(c) if c.eq_ignore_ascii_case("none") => false,
            Some(c) if c.eq_ignore_ascii_case("gzip") => true,
            Some(c) => {
                bail!("OTEL_EXPORTER_OTLP_COMPRESSION={c:?} is not supported: use `gzip` or `none`")
            }
        };
        let pairs = headers()?;
        let traces_url = super::env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
        let base = endpoint
            .map(str::to_string)
            .or_else(|| super::env("OTEL_EXPORTER_OTLP_ENDPOINT"));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("traces: starting the OTLP client's runtime")?;
        let to = match protocol {
            super::Protocol::HttpProtobuf => {
                // The client's TLS (for https:// collectors) uses ring, as
                // the registry's OCI client does.
                let _ = rustls::crypto::ring::default_provider().install_default();
                let url = match (endpoint, traces_url, base) {
                    (None, Some(t), _) => t,
                    (_, _, Some(b)) => format!("{}/v1/traces", b.trim_end_matches('/')),
                    _ => bail!("traces: no OTLP endpoint"),
                };
                let mut headers = reqwest::header::HeaderMap::new();
                for (k, v) in pairs {
                    headers.insert(
                        reqwest::header::HeaderName::from_bytes(k.as_bytes())
                            .with_context(|| format!("OTEL_EXPORTER_OTLP_HEADERS: `{k}`"))?,
                        v.parse()
                            .with_context(|| format!("OTEL_EXPORTER_OTLP_HEADERS: `{k}`"))?,
                    );
                }
                headers.insert(
                    reqwest::header::CONTENT_TYPE,
                    reqwest::header::HeaderValue::from_static("application/x-protobuf"),
                );
                let client = reqwest::Client::builder()
                    .timeout(timeout)
                    .build()
                    .context("traces: the OTLP HTTP client")?;
                To::Http {
                    client,
                    url,
                    headers,
                }
            }
            super::Protocol::Grpc => {
                let url = match (endpoint, traces_url, base) {
                    (None, Some(t), _) => t,
                    (_, _, Some(b)) => b,
                    _ => bail!("traces: no OTLP endpoint"),
                };
                let channel = {
                    let _in = runtime.enter();
                    tonic::transport::Channel::from_shared(url.clone())
                        .with_context(|| format!("traces: `{url}` is not a gRPC endpoint"))?
                        .timeout(timeout)
                        .connect_lazy()
                };
                let mut headers = tonic::metadata::MetadataMap::new();
                for (k, v) in pairs {
                    let key = tonic::metadata::MetadataKey::from_bytes(k.as_bytes())
                        .with_context(|| format!("OTEL_EXPORTER_OTLP_HEADERS: `{k}`"))?;
                    let value = v
                        .parse()
                        .with_context(|| format!("OTEL_EXPORTER_OTLP_HEADERS: `{k}`"))?;
                    headers.insert(key, value);
                }
                To::Grpc { channel, headers }
            }
        };
        Ok(Sender {
            runtime,
            timeout,
            gzip,
            to,
        })
    }

    /// Sends one encoded request; whether the collector took it in time.
    pub(super) fn send(&self, body: bytes::Bytes) -> bool {
        let call = async {
            match &self.to {
                To::Http {
                    client,
                    url,
                    headers,
                } => {
                    let mut post = client.post(url).headers(headers.clone());
                    post = match self.gzip {
                        true => post
                            .header(reqwest::header::CONTENT_ENCODING, "gzip")
                            .body(gzipped(&body)),
                        false => post.body(body),
                    };
                    post.send().await.is_ok_and(|r| r.status().is_success())
                }
                To::Grpc { channel, headers } => {
                    let mut grpc = tonic::client::Grpc::new(channel.clone());
                    if self.gzip {
                        grpc = grpc.send_compressed(tonic::codec::CompressionEncoding::Gzip);
                    }
                    let mut request = tonic::Request::new(body);
                    *request.metadata_mut() = headers.clone();
                    let path = http::uri::PathAndQuery::from_static(
                        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                    );
                    grpc.ready().await.is_ok() && grpc.unary(request, path, Raw).await.is_ok()
                }
            }
        };
        // The timer is made inside the runtime (it needs its context).
        self.runtime
            .block_on(async { tokio::time::timeout(self.timeout, call).await })
            .unwrap_or(false)
    }
}

/// `body` gzip-compressed (the fast level: exports are sent often).
fn gzipped(body: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut gz = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::fast(),
    );
    // Writing to a Vec does not fail.
    let _ = gz.write_all(body);
    gz.finish().unwrap_or_default()
}

/// `OTEL_EXPORTER_OTLP_[TRACES_]HEADERS` as (name, value) pairs.
fn headers() -> Result<Vec<(String, String)>> {
    let Some(text) = env2(
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        "OTEL_EXPORTER_OTLP_HEADERS",
    ) else {
        return Ok(Vec::new());
    };
    let mut pairs = Vec::new();
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let Some((k, v)) = item.split_once('=') else {
            bail!("OTEL_EXPORTER_OTLP_HEADERS: `{item}` is not KEY=VALUE");
        };
        pairs.push((k.trim().to_ascii_lowercase(), url_decode(v.trim())));
    }
    Ok(pairs)
}

fn url_decode(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| v.to_string())
}

/// A gRPC codec that sends the bytes it is given and ignores the answer's
/// body (an `ExportTraceServiceResponse`).
#[derive(Clone, Copy)]
struct Raw;

impl tonic::codec::Codec for Raw {
    type Encode = bytes::Bytes;
    type Decode = ();
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl tonic::codec::Encoder for Raw {
    type Item = bytes::Bytes;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: bytes::Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for Raw {
    type Item = ();
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<()>, tonic::Status> {
        let n = bytes::Buf::remaining(src);
        bytes::Buf::advance(src, n);
        Ok(Some(()))
    }
}

/// Writes protobuf: the few wire shapes OTLP's trace messages use.
struct Pb<'a>(&'a mut Vec<u8>);

impl Pb<'_> {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push(v as u8 | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }
    fn key(&mut self, field: u32, wire: u8) {
        self.varint(u64::from(field) << 3 | u64::from(wire));
    }
    fn bytes(&mut self, field: u32, b: &[u8]) {
        self.key(field, 2);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }
    fn uint(&mut self, field: u32, v: u64) {
        self.key(field, 0);
        self.varint(v);
    }
    fn fixed64(&mut self, field: u32, v: u64) {
        self.key(field, 1);
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn fixed32(&mut self, field: u32, v: u32) {
        self.key(field, 5);
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    /// `KeyValue { key = 1; AnyValue value = 2 }`, AnyValue's oneof:
    /// string 1, bool 2, int 3, double 4; written in place, lengths first.
    fn attribute(&mut self, field: u32, key: &str, value: Scalar) {
        let key = key.as_bytes();
        // The value's oneof field and the size of the `AnyValue` holding it.
        let (value_field, any) = match value {
            Scalar::Bool(b) => (2, 1 + varint_len(u64::from(b))),
            Scalar::I64(i) => (3, 1 + varint_len(i as u64)),
            Scalar::F64(_) => (4, 1 + 8),
            Scalar::Str(s) => (1, len_delimited(s.len())),
        };
        self.key(field, 2);
        self.varint((len_delimited(key.len()) + len_delimited(any)) as u64);
        self.bytes(1, key);
        self.key(2, 2);
        self.varint(any as u64);
        match value {
            Scalar::Bool(b) => self.uint(value_field, u64::from(b)),
            Scalar::I64(i) => self.uint(value_field, i as u64),
            Scalar::F64(f) => self.fixed64(value_field, f.to_bits()),
            Scalar::Str(s) => self.bytes(value_field, s.as_bytes()),
        }
    }
}

/// An attribute's value as OTLP's `AnyValue` holds it.
#[derive(Debug, Clone, Copy)]
enum Scalar<'a> {
    Bool(bool),
    I64(i64),
    F64(f64),
    Str(&'a str),
}

/// Appends attribute `key` = `value` (an OpenTelemetry value; arrays as
/// their text) to `out` as a `Span.attributes` field (number 9).
pub(super) fn attribute(out: &mut Vec<u8>, key: &str, value: &Value) {
    key_value(out, 9, key, value);
}

/// Appends attribute `key` = `value` to `out` as a `Span.attributes` field.
pub(super) fn attribute_str(out: &mut Vec<u8>, key: &str, value: &str) {
    Pb(out).attribute(9, key, Scalar::Str(value));
}

fn key_value(out: &mut Vec<u8>, field: u32, key: &str, value: &Value) {
    let text;
    let scalar = match value {
        Value::Bool(b) => Scalar::Bool(*b),
        Value::I64(i) => Scalar::I64(*i),
        Value::F64(f) => Scalar::F64(*f),
        Value::String(s) => Scalar::Str(s.as_str()),
        other => {
            text = other.to_string();
            Scalar::Str(&text)
        }
    };
    Pb(out).attribute(field, key, scalar);
}

/// Bytes of `v` as a varint.
fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// Bytes of a length-delimited field of `n` bytes (a one-byte key).
fn len_delimited(n: usize) -> usize {
    1 + varint_len(n as u64) + n
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The encoded `Resource` and `InstrumentationScope` every request repeats.
pub(super) struct Fixed {
    resource: Vec<u8>,
    scope: Vec<u8>,
}

impl Fixed {
    pub(super) fn new(resource: &opentelemetry_sdk::Resource) -> Fixed {
        let mut r = Vec::new();
        for (k, v) in resource.iter() {
            key_value(&mut r, 1, k.as_str(), v);
        }
        let mut s = Vec::new();
        Pb(&mut s).bytes(1, b"tensor-wasm");
        Pb(&mut s).bytes(2, env!("CARGO_PKG_VERSION").as_bytes());
        Fixed {
            resource: r,
            scope: s,
        }
    }

    /// Bytes a batch leaves free before its spans for [`Fixed::seal`].
    pub(super) fn room(&self) -> usize {
        // Two keys of one byte, two lengths of at most 5, and the fields;
        // 10 bytes to spare (the prefix is written right-aligned).
        2 + 10 + len_delimited(self.resource.len()) + len_delimited(self.scope.len()) + 10
    }

    /// A batch (`room` free bytes, then spans from [`frame`]) as one
    /// `ExportTraceServiceRequest`: the prefix written into the room, the
    /// spans not copied.
    pub(super) fn seal(&self, batch: super::export::Batch) -> bytes::Bytes {
        let mut buffer = batch.buffer;
        let room = self.room().min(buffer.len());
        let spans = buffer.len() - room;
        let scope_spans = len_delimited(self.scope.len()) + spans;
        let resource_spans = len_delimited(self.resource.len()) + len_delimited(scope_spans);
        let mut prefix = Vec::with_capacity(room);
        let mut pb = Pb(&mut prefix);
        pb.key(1, 2);
        pb.varint(resource_spans as u64);
        pb.bytes(1, &self.resource);
        pb.key(2, 2);
        pb.varint(scope_spans as u64);
        pb.bytes(1, &self.scope);
        let start = room - prefix.len();
        buffer[start..room].copy_from_slice(&prefix);
        debug_assert_eq!(buffer.len() - start, len_delimited(resource_spans));
        bytes::Bytes::from(buffer).slice(start..)
    }
}

/// String attributes as `Span.attributes` fields (number 9), for
/// [`Labels`](super::span::Labels).
pub(super) fn attributes(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in pairs {
        attribute_str(&mut out, k, v);
    }
    out
}

/// Writes a span's body (a `Span` message) into `body`, which is cleared;
/// the queue frames it as a `ScopeSpans.spans` field ([`frame`]).
/// `Span`'s fields: trace_id 1, span_id 2, trace_state 3, parent_span_id 4,
/// name 5, kind 6, start 7, end 8, attributes 9, status 15, flags 16.
pub(super) fn span_body(o: &Open, end: SystemTime, body: &mut Vec<u8>) {
    body.clear();
    let pb = &mut Pb(body);
    pb.bytes(1, &o.cx.trace.to_be_bytes());
    pb.bytes(2, &o.cx.span.to_be_bytes());
    if let Some(state) = &o.state {
        pb.bytes(3, state.as_bytes());
    }
    if o.parent != 0 {
        pb.bytes(4, &o.parent.to_be_bytes());
    }
    pb.bytes(5, o.name.as_bytes());
    pb.uint(6, u64::from(o.kind as u8));
    pb.fixed64(7, nanos(o.start));
    pb.fixed64(8, nanos(end));
    pb.0.extend_from_slice(&o.attributes);
    if let Some(labels) = &o.cx.labels {
        pb.0.extend_from_slice(&labels.0);
    }
    if o.error {
        // Status { code = 3: ERROR (2) }
        pb.bytes(15, &[3 << 3, 2]);
    }
    // Sampled, and whether the parent is remote (HAS_IS_REMOTE 0x100,
    // IS_REMOTE 0x200).
    pb.fixed32(16, 0x101 | if o.remote_parent { 0x200 } else { 0 });
}

/// Appends a span's body to `out` as a `ScopeSpans.spans` field (number 2).
pub(super) fn frame(out: &mut Vec<u8>, body: &[u8]) {
    Pb(out).bytes(2, body);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::telemetry::span::{Cx, Kind, Open};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
    use prost::Message;

    #[test]
    fn spans_encode_as_the_generated_otlp_types_decode_them() {
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name("svc")
            .build();
        let start = SystemTime::UNIX_EPOCH + Duration::from_nanos(1_000);
        let long = "x".repeat(300);
        let open = Open {
            cx: Cx {
                trace: 0x0af7651916cd43dd8448eb211c80319c,
                span: 0xb7ad6b7169203331,
                labels: Some(crate::platform::telemetry::labels("acme", "gw")),
            },
            parent: 7,
            remote_parent: true,
            state: Some("k=v".into()),
            name: "GET /".into(),
            kind: Kind::Server,
            start,
            attributes: {
                let mut a = Vec::new();
                attribute_str(&mut a, "s", &long);
                attribute(&mut a, "i", &(-3i64).into());
                attribute(&mut a, "b", &true.into());
                attribute(&mut a, "f", &0.5.into());
                a
            },
            error: true,
        };
        let fixed = Fixed::new(&resource);
        let mut buffer = vec![0; fixed.room()];
        let mut body = Vec::new();
        for _ in 0..2 {
            span_body(&open, start + Duration::from_nanos(500), &mut body);
            frame(&mut buffer, &body);
        }
        let batch = crate::platform::telemetry::export::Batch { buffer, spans: 2 };
        let req = ExportTraceServiceRequest::decode(fixed.seal(batch)).unwrap();
        let rs = &req.resource_spans[0];
        let service = rs.resource.as_ref().unwrap().attributes.iter();
        assert!(service.clone().any(|a| a.key == "service.name"
            && a.value.as_ref().unwrap().value == Some(Any::StringValue("svc".into()))));
        let ss = &rs.scope_spans[0];
        assert_eq!(ss.scope.as_ref().unwrap().name, "tensor-wasm");
        assert_eq!(ss.spans.len(), 2);
        let s = &ss.spans[1];
        assert_eq!(
            crate::platform::hex::encode(&s.trace_id),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert_eq!(crate::platform::hex::encode(&s.span_id), "b7ad6b7169203331");
        assert_eq!(
            crate::platform::hex::encode(&s.parent_span_id),
            "0000000000000007"
        );
        assert_eq!(
            (s.name.as_str(), s.kind, s.trace_state.as_str()),
            ("GET /", 2, "k=v")
        );
        assert_eq!(
            (s.start_time_unix_nano, s.end_time_unix_nano),
            (1_000, 1_500)
        );
        assert_eq!(s.flags, 0x301);
        assert_eq!(s.status.as_ref().unwrap().code, 2);
        let value = |k: &str| {
            s.attributes
                .iter()
                .find(|a| a.key == k)
                .unwrap()
                .value
                .clone()
                .unwrap()
                .value
        };
        assert_eq!(value("s"), Some(Any::StringValue(long)));
        assert_eq!(value("i"), Some(Any::IntValue(-3)));
        assert_eq!(value("b"), Some(Any::BoolValue(true)));
        assert_eq!(value("f"), Some(Any::DoubleValue(0.5)));
        assert_eq!(value("tenant"), Some(Any::StringValue("acme".into())));
        assert_eq!(value("deployment"), Some(Any::StringValue("gw".into())));
        assert_eq!(s.attributes.len(), 6);
    }

    #[test]
    fn header_values_are_url_decoded() {
        assert_eq!(url_decode("Basic%20abc%3D"), "Basic abc=");
        assert_eq!(url_decode("100%"), "100%");
    }
}
