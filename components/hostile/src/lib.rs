//! `hostile`: a test guest that misbehaves on purpose, so the host's
//! isolation can be checked. Routes:
//! `/ok` 200; `/loop` spins forever; `/oom` allocates until memory runs out;
//! `/panic` panics; `/stall` sets a response and never writes its body;
//! `/stall-body` writes part of a body and never finishes it;
//! `/slow?ms=N` sleeps N milliseconds, then answers 200;
//! `/env` lists the environment it can see; `/fs` lists the preopened dirs;
//! `/config` lists its `wasi:config` values; `/fetch?url=U` makes an
//! outgoing GET to `U` and reports the status or the error.

use httpkit::{path, query_param, respond, write_all};
use std::hint::black_box;
use wasip2::http::types::{Fields, IncomingRequest, OutgoingResponse, ResponseOutparam};

wit_bindgen::generate!({
    world: "tensorwasm:hostile/hostile",
    path: ["../../wit/deps/config", "wit"],
    generate_all,
});

struct Hostile;

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
