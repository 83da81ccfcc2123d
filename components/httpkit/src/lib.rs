//! Helpers shared by TensorWasm's `wasi:http` guest components: building a
//! complete response in one call, and reading the request's path and body.
#![deny(missing_docs)]

use std::io::{Read, Write};
use wasip2::http::types::{
    Fields, IncomingBody, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

/// Sends a complete response: `status`, the given headers and `body`.
pub fn respond(out: ResponseOutparam, status: u16, headers: &[(&str, &str)], body: &[u8]) {
    let fields = Fields::new();
    for (name, value) in headers {
        // Header names here are static and valid; a failure would be a bug in the caller.
        let _ = fields.append(name, value.as_bytes());
    }
    let _ = fields.append("content-length", body.len().to_string().as_bytes());
    let response = OutgoingResponse::new(fields);
    let _ = response.set_status_code(status);
    let outgoing = response.body().expect("a new response has a body");
    ResponseOutparam::set(out, Ok(response));
    write_all(&outgoing, body);
    let _ = OutgoingBody::finish(outgoing, None);
}

/// Sends a JSON response (`content-type: application/json`).
pub fn json(out: ResponseOutparam, status: u16, body: &str) {
    respond(
        out,
        status,
        &[("content-type", "application/json")],
        body.as_bytes(),
    );
}

/// Sends a JSON error object `{"error": {"code": .., "message": ..}}`.
pub fn json_error(out: ResponseOutparam, status: u16, code: &str, message: &str) {
    let body = format!(
        "{{\"error\":{{\"code\":{},\"message\":{}}}}}",
        quote(code),
        quote(message)
    );
    json(out, status, &body);
}

/// Writes `bytes` to an outgoing body's stream, blocking as needed.
pub fn write_all(body: &OutgoingBody, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    if let Ok(mut stream) = body.write() {
        let _ = stream.write_all(bytes);
        let _ = stream.flush();
    }
}

/// The request's path without its query (`/` when absent).
pub fn path(request: &IncomingRequest) -> String {
    let full = request.path_with_query().unwrap_or_else(|| "/".to_string());
    match full.split_once('?') {
        Some((p, _)) => p.to_string(),
        None => full,
    }
}

/// The value of query parameter `key`, if present.
pub fn query_param(request: &IncomingRequest, key: &str) -> Option<String> {
    let full = request.path_with_query()?;
    let (_, query) = full.split_once('?')?;
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then(|| v.to_string())
    })
}

/// Reads the whole request body; `Err` carries the stream error's text.
pub fn read_body(request: &IncomingRequest) -> Result<Vec<u8>, String> {
    let body = request.consume().map_err(|_| "body already consumed")?;
    let mut bytes = Vec::new();
    {
        let mut stream = body.stream().map_err(|_| "body stream unavailable")?;
        stream.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
    }
    let _ = IncomingBody::finish(body);
    Ok(bytes)
}

/// Quotes `s` as a JSON string.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
