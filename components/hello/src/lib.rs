//! `hello`: TensorWasm's welcome component. Routes:
//! `GET /` a welcome page listing routes, `GET /hello` a greeting,
//! `POST /echo` echoes the request body; anything else is a JSON 404.

use httpkit::{json_error, path, read_body, respond};
use wasip2::http::types::{IncomingRequest, Method, ResponseOutparam};

struct Hello;

const WELCOME: &str = r#"Welcome to TensorWasm.

This endpoint is served by WebAssembly components, a fresh instance per request.

Routes:
  GET  /        this page
  GET  /hello   a greeting
  POST /echo    echoes the request body
"#;

impl wasip2::exports::http::incoming_handler::Guest for Hello {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let text = [("content-type", "text/plain; charset=utf-8")];
        match (request.method(), path(&request).as_str()) {
            (Method::Get | Method::Head, "/") => respond(out, 200, &text, WELCOME.as_bytes()),
            (Method::Get | Method::Head, "/hello") => {
                respond(out, 200, &text, b"Hello from TensorWasm!\n")
            }
            (Method::Post, "/echo") => match read_body(&request) {
                Ok(body) => respond(
                    out,
                    200,
                    &[("content-type", "application/octet-stream")],
                    &body,
                ),
                Err(e) => json_error(out, 400, "bad_body", &e),
            },
            (_, p) => json_error(out, 404, "not_found", &format!("no route for {p}")),
        }
    }
}

wasip2::http::proxy::export!(Hello);
