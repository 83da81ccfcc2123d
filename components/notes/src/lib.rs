//! `notes`: an example app that keeps notes in `wasi:keyvalue` (the
//! tenant's buckets, durable on the host). Routes, all under `/notes`, with
//! an optional `?bucket=NAME` (default `notes`):
//!
//! - `GET /notes` — the keys, as a JSON list
//! - `GET /notes/KEY` — the value (404 when absent)
//! - `PUT /notes/KEY` — store the body (204 once durable)
//! - `DELETE /notes/KEY` — remove it (204)
//! - `POST /notes/KEY/incr?by=N` — add N (default 1), answers `{"value": n}`

use gatewaykit::keyvalue::{atomics, store};
use httpkit::{json, json_error, path, query_param, read_body, respond};
use wasip2::http::types::{IncomingRequest, Method, ResponseOutparam};

struct Notes;

fn fail(out: ResponseOutparam, e: store::Error) {
    let (status, message) = match e {
        store::Error::NoSuchStore => (503, "no keyvalue store on this host".to_string()),
        store::Error::AccessDenied => (403, "access denied".to_string()),
        store::Error::Other(m) => (400, m),
    };
    json_error(out, status, "store_error", &message);
}

fn list(bucket: &store::Bucket) -> Result<Vec<String>, store::Error> {
    let mut keys = Vec::new();
    let mut cursor = None;
    loop {
        let page = bucket.list_keys(cursor)?;
        keys.extend(page.keys);
        match page.cursor {
            Some(c) => cursor = Some(c),
            None => return Ok(keys),
        }
    }
}

impl wasip2::exports::http::incoming_handler::Guest for Notes {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = path(&request);
        let Some(rest) = path.strip_prefix("/notes") else {
            return json_error(out, 404, "not_found", &format!("no route for {path}"));
        };
        let name = query_param(&request, "bucket").unwrap_or_else(|| "notes".into());
        let bucket = match store::open(&name) {
            Ok(b) => b,
            Err(e) => return fail(out, e),
        };
        let key = rest.trim_start_matches('/');
        let method = request.method();
        let result = match (&method, key) {
            (Method::Get, "") => list(&bucket).map(|keys| {
                let quoted: Vec<String> = keys.iter().map(|k| httpkit::quote(k)).collect();
                Some((200, format!("[{}]", quoted.join(","))))
            }),
            (Method::Post, k) if k.ends_with("/incr") => {
                let by = query_param(&request, "by")
                    .and_then(|b| b.parse().ok())
                    .unwrap_or(1);
                atomics::increment(&bucket, k.trim_end_matches("/incr"), by)
                    .map(|n| Some((200, format!("{{\"value\":{n}}}"))))
            }
            (_, "") => Ok(Some((405, String::new()))),
            (Method::Get, k) => match bucket.get(k) {
                Ok(Some(v)) => {
                    return respond(
                        out,
                        200,
                        &[("content-type", "application/octet-stream")],
                        &v,
                    );
                }
                Ok(None) => Ok(None),
                Err(e) => Err(e),
            },
            (Method::Put, k) => match read_body(&request) {
                Ok(body) => bucket.set(k, &body).map(|()| Some((204, String::new()))),
                Err(e) => return json_error(out, 400, "bad_body", &e),
            },
            (Method::Delete, k) => bucket.delete(k).map(|()| Some((204, String::new()))),
            _ => Ok(Some((405, String::new()))),
        };
        match result {
            Ok(Some((405, _))) => {
                json_error(out, 405, "method_not_allowed", "see the routes of /notes")
            }
            Ok(Some((204, _))) => respond(out, 204, &[], b""),
            Ok(Some((status, body))) => json(out, status, &body),
            Ok(None) => json_error(
                out,
                404,
                "not_found",
                &format!("no note `{key}` in bucket `{name}`"),
            ),
            Err(e) => fail(out, e),
        }
    }
}

wasip2::http::proxy::export!(Notes);
