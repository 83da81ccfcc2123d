//! `hostile`: a test guest that misbehaves on purpose, so the host's
//! isolation can be checked. Routes:
//! `/ok` 200; `/loop` spins forever; `/oom` allocates until memory runs out;
//! `/panic` panics; `/stall` sets a response and never writes its body;
//! `/stall-body` writes part of a body and never finishes it;
//! `/slow?ms=N` sleeps N milliseconds, then answers 200;
//! `/env` lists the environment it can see; `/fs` lists the preopened dirs;
//! `/config` lists its `wasi:config` values; `/fetch?url=U` makes an
//! outgoing GET to `U` and reports the status or the error;
//! `/count` reads the request body, then answers how many requests this
//! instance has counted (a global: 1 unless instances are reused);
//! `/grow?mb=N` keeps N more MiB in a global each time (a reused instance
//! meets its memory cap); `/whoami` answers the `x-request-id` and
//! `x-client-addr` headers it was given.

use httpkit::{path, query_param, read_body, respond, write_all};
use std::hint::black_box;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use wasip2::http::types::{Fields, IncomingRequest, OutgoingResponse, ResponseOutparam};

wit_bindgen::generate!({
    world: "tensorwasm:hostile/hostile",
    path: ["../../wit/deps/config", "wit"],
    generate_all,
});

struct Hostile;

/// Requests this instance counted (`/count`).
static COUNTED: AtomicU32 = AtomicU32::new(0);
/// Memory kept across requests (`/grow`).
static KEPT: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

fn sleep_ms(ms: u64) {
    wasip2::clocks::monotonic_clock::subscribe_duration(ms.saturating_mul(1_000_000)).block();
}

impl wasip2::exports::http::incoming_handler::Guest for Hostile {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let text = [("content-type", "text/plain")];
        match path(&request).as_str() {
            "/ok" => respond(out, 200, &text, b"ok\n"),
            "/loop" => {
                let mut x: u64 = 0;
                loop {
                    x = black_box(x.wrapping_add(1));
                }
            }
            "/oom" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    let chunk = vec![1u8; 1 << 20];
                    hoard.push(black_box(chunk));
                }
            }
            "/panic" => panic!("hostile guest panics on purpose"),
            "/stall" | "/stall-body" => {
                let response = OutgoingResponse::new(Fields::new());
                let body = response.body().expect("body");
                ResponseOutparam::set(out, Ok(response));
                if path(&request) == "/stall-body" {
                    write_all(&body, b"partial");
                }
                sleep_ms(u64::MAX / 2_000_000);
            }
            "/slow" => {
                let ms = query_param(&request, "ms")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1000);
                sleep_ms(ms);
                respond(out, 200, &text, format!("slept {ms} ms\n").as_bytes());
            }
            "/count" => {
                if let Err(e) = read_body(&request) {
                    return respond(out, 400, &text, format!("body: {e}\n").as_bytes());
                }
                let n = COUNTED.fetch_add(1, Ordering::Relaxed) + 1;
                respond(out, 200, &text, format!("{n}").as_bytes());
            }
            "/grow" => {
                let mb: usize = query_param(&request, "mb")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(8);
                let mut kept = KEPT.lock().unwrap_or_else(|e| e.into_inner());
                kept.push(black_box(vec![1u8; mb << 20]));
                let total = kept.len() * mb;
                respond(out, 200, &text, format!("kept {total} MiB\n").as_bytes());
            }
            "/whoami" => {
                let headers = request.headers();
                let one = |name: &str| {
                    headers
                        .get(name)
                        .first()
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                        .unwrap_or_default()
                };
                let body = format!("{} {}", one("x-request-id"), one("x-client-addr"));
                respond(out, 200, &text, body.as_bytes());
            }
            "/env" => {
                let vars: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
                respond(out, 200, &text, vars.join("\n").as_bytes());
            }
            "/fs" => {
                let dirs: Vec<String> = wasip2::filesystem::preopens::get_directories()
                    .into_iter()
                    .map(|(_, name)| name)
                    .collect();
                respond(out, 200, &text, dirs.join("\n").as_bytes());
            }
            "/config" => {
                let body = match wasi::config::store::get_all() {
                    Ok(pairs) => pairs
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join("\n"),
                    Err(e) => format!("config error: {e:?}"),
                };
                respond(out, 200, &text, body.as_bytes());
            }
            "/fetch" => {
                let url = query_param(&request, "url").unwrap_or_default();
                respond(out, 200, &text, fetch(&url).as_bytes());
            }
            _ => respond(out, 404, &text, b"not found\n"),
        }
    }
}

/// GETs `url` (`http://host[:port]/path`); returns `status N: body` or `error: E`.
fn fetch(url: &str) -> String {
    use std::io::Read;
    use wasip2::http::types::{OutgoingRequest, Scheme};
    let Some(rest) = url.strip_prefix("http://") else {
        return "error: only http:// URLs".into();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let request = OutgoingRequest::new(Fields::new());
    let _ = request.set_scheme(Some(&Scheme::Http));
    let _ = request.set_authority(Some(authority));
    let _ = request.set_path_with_query(Some(if path.is_empty() { "/" } else { path }));
    let future = match wasip2::http::outgoing_handler::handle(request, None) {
        Ok(f) => f,
        Err(e) => return format!("error: {e:?}"),
    };
    future.subscribe().block();
    let response = match future.get() {
        Some(Ok(Ok(r))) => r,
        Some(Ok(Err(e))) => return format!("error: {e:?}"),
        _ => return "error: no response".into(),
    };
    let mut body = Vec::new();
    if let Ok(incoming) = response.consume()
        && let Ok(mut stream) = incoming.stream()
    {
        let _ = stream.read_to_end(&mut body);
    }
    format!(
        "status {}: {}",
        response.status(),
        String::from_utf8_lossy(&body)
    )
}

wasip2::http::proxy::export!(Hostile);
