//! `guard`: an example middleware. It answers requests whose method is not
//! GET, HEAD, POST or OPTIONS with a JSON 405 (and an `Allow` header) and
//! forwards every other request, unchanged, to the handler it imports.
//!
//! A WASI 0.2 middleware can forward a request or answer it itself; it cannot
//! rewrite the request or see the response (there are no guest constructors for
//! `incoming-request` or `response-outparam`), so guards are its natural shape.

use wasip2::http::types::{IncomingRequest, Method, ResponseOutparam};

gatewaykit::bindings!("tensorwasm:guard/guard");

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
