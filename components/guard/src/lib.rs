//! `guard`: an example middleware. It answers requests whose method is not
//! GET, HEAD, POST or OPTIONS with a JSON 405 (and an `Allow` header) and
//! forwards every other request, unchanged, to the handler it imports.
//!
//! A WASI 0.2 middleware can forward a request or answer it itself; it cannot
//! rewrite the request or see the response (there are no guest constructors for
//! `incoming-request` or `response-outparam`), so guards are its natural shape.

use wasip2::http::types::{IncomingRequest, Method, ResponseOutparam};

wit_bindgen::generate!({
    world: "tensorwasm:guard/guard",
    path: ["../../wit/deps/io", "../../wit/deps/clocks", "../../wit/deps/random",
           "../../wit/deps/filesystem", "../../wit/deps/sockets", "../../wit/deps/cli",
           "../../wit/deps/http", "wit"],
    with: {
        "wasi:http/types@0.2.12": wasip2::http::types,
        "wasi:http/incoming-handler@0.2.12": generate,
        "wasi:io/error@0.2.12": wasip2::io::error,
        "wasi:io/poll@0.2.12": wasip2::io::poll,
        "wasi:io/streams@0.2.12": wasip2::io::streams,
        "wasi:clocks/monotonic-clock@0.2.12": wasip2::clocks::monotonic_clock,
    },
});

struct Guard;

const ALLOW: &str = "GET, HEAD, POST, OPTIONS";

impl exports::wasi::http::incoming_handler::Guest for Guard {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        match request.method() {
            Method::Get | Method::Head | Method::Post | Method::Options => {
                wasi::http::incoming_handler::handle(request, out)
            }
            _ => {
                let body = format!(
                    "{{\"error\":{{\"code\":\"method_not_allowed\",\"message\":\"allowed methods: {ALLOW}\"}}}}"
                );
                httpkit::respond(
                    out,
                    405,
                    &[("content-type", "application/json"), ("allow", ALLOW)],
                    body.as_bytes(),
                );
            }
        }
    }
}

export!(Guard);
