//! `audit`: writes one structured JSON record per state-changing request
//! (every method but GET, HEAD, OPTIONS and TRACE; config
//! `audit.policy = "all"` records every request) to the tenant's `audit`
//! bucket of `wasi:keyvalue`, and forwards the request only once the host
//! has acknowledged the write as durable. If the record cannot be written
//! the request is refused with a 503: nothing unaudited gets through.
//!
//! A record: `{"time", "tenant", "deployment", "token", "method", "path",
//! "request_id", "trace_id", "client"}`; `token` is the bearer token's id (never the
//! token), `null` for anonymous callers; `trace_id` is the W3C trace id of the
//! request's `traceparent` (the host's trace when it exports traces), else `null`. Keys are `<unix ns, 20 digits>-<request id>`,
//! so keys sort by time. `tensor-wasm audit tail|query` reads them.

use gatewaykit::keyvalue::store;
use httpkit::{json_error, quote};
use wasip2::http::types::{IncomingRequest, Method, ResponseOutparam};

gatewaykit::bindings!("tensorwasm:audit/audit");

/// The bucket records go to.
const BUCKET: &str = "audit";

fn recorded(method: &Method) -> Result<bool, String> {
    let mutating = !matches!(
        method,
        Method::Get | Method::Head | Method::Options | Method::Trace
    );
    match gatewaykit::config_get("audit.policy") {
        None | Some("mutating") => Ok(mutating),
        Some("all") => Ok(true),
        Some(other) => Err(format!(
            "audit.policy: `{other}` is not `mutating` or `all`"
        )),
    }
}

fn record(request: &IncomingRequest, now: u64) -> (String, String) {
    let opt = |v: Option<&str>| v.map_or("null".to_string(), quote);
    let request_id = gatewaykit::header(request, "x-request-id").unwrap_or_default();
    let caller = gatewaykit::identity::caller(request);
    let body = format!(
        "{{\"time\":{},\"tenant\":{},\"deployment\":{},\"token\":{},\"method\":{},\"path\":{},\"request_id\":{},\"trace_id\":{},\"client\":{},\"client_identity\":{}}}",
        quote(&gatewaykit::time::rfc3339(now)),
        opt(gatewaykit::config_get("tensorwasm.tenant")),
        opt(gatewaykit::config_get("tensorwasm.deployment")),
        opt(caller.id()),
        quote(&gatewaykit::method_name(&request.method())),
        quote(&httpkit::path(request)),
        quote(&request_id),
        opt(trace_id(request).as_deref()),
        opt(gatewaykit::header(request, "x-client-addr").as_deref()),
        opt(gatewaykit::header(request, "x-client-identity").as_deref()),
    );
    (format!("{now:020}-{request_id}"), body)
}

/// The trace id (32 lowercase hex digits, not all zero) of the request's
/// `traceparent`, if it has a well-formed one.
fn trace_id(request: &IncomingRequest) -> Option<String> {
    let header = gatewaykit::header(request, "traceparent")?;
    let id = header.split('-').nth(1)?;
    let hex = id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    (hex && id.bytes().any(|b| b != b'0')).then(|| id.to_string())
}

struct Audit;

impl exports::wasi::http::incoming_handler::Guest for Audit {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        match recorded(&request.method()) {
            Ok(false) => return wasi::http::incoming_handler::handle(request, out),
            Ok(true) => {}
            Err(e) => return json_error(out, 500, "bad_config", &e),
        }
        let (key, body) = record(&request, gatewaykit::time::now_ns());
        let written = store::open(BUCKET).and_then(|b| b.set(&key, body.as_bytes()));
        match written {
            Ok(()) => wasi::http::incoming_handler::handle(request, out),
            Err(e) => json_error(
                out,
                503,
                "audit_unavailable",
                &format!(
                    "the audit record could not be written, so the request was refused: {e:?}"
                ),
            ),
        }
    }
}

export!(Audit);
