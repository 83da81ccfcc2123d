//! `auth`: admits requests that carry a bearer token whose scopes cover the
//! request, and forwards them unchanged; answers the others itself.
//!
//! Tokens come from config `auth.tokens` (see `gatewaykit::identity`):
//! `ID sha256:HEX SCOPE...`, scopes `read`, `write` or `admin`, each
//! optionally on a path prefix (`write:/echo`); a class includes the ones
//! below it. Over mTLS, a request without a token may be admitted by its
//! client certificate instead: `auth.identities`, `ID IDENTITY SCOPE...`. GET/HEAD/OPTIONS are `read`, other methods `write`, and any
//! request under a prefix in `auth.admin-paths` (comma-separated) `admin`.
//!
//! No or unknown token: 401 with `WWW-Authenticate: Bearer`; a known token
//! without the scope: 403 `insufficient_scope`.

use gatewaykit::identity::{Caller, caller_of, identities, tokens};
use gatewaykit::scope::{Class, Scope, prefixes};
use httpkit::{json_error, path, quote, respond};
use std::sync::OnceLock;
use wasip2::http::types::{IncomingRequest, ResponseOutparam};

gatewaykit::bindings!("tensorwasm:auth/auth");

const REALM: &str = "tensorwasm";

struct Auth;

fn deny(out: ResponseOutparam, status: u16, challenge: &str, code: &str, message: &str) {
    let body = format!(
        "{{\"error\":{{\"code\":{},\"message\":{}}}}}",
        quote(code),
        quote(message)
    );
    respond(
        out,
        status,
        &[
            ("content-type", "application/json"),
            ("www-authenticate", challenge),
        ],
        body.as_bytes(),
    );
}

impl exports::wasi::http::incoming_handler::Guest for Auth {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let (tokens, identities) = match (tokens(), identities()) {
            (Ok(t), Ok(i)) => (t, i),
            (Err(e), _) | (_, Err(e)) => return json_error(out, 500, "bad_config", &e),
        };
        // Parsed once per instance, like the config it comes from.
        static ADMIN: OnceLock<Vec<String>> = OnceLock::new();
        let admin = ADMIN.get_or_init(|| {
            prefixes(gatewaykit::config_get("auth.admin-paths").unwrap_or_default())
        });
        let path = path(&request);
        let class = Class::of(&request.method(), &path, admin);
        match caller_of(&request, tokens, identities) {
            (Caller::Anonymous, _) => deny(
                out,
                401,
                &format!("Bearer realm=\"{REALM}\""),
                "unauthorized",
                "this route needs a bearer token (Authorization: Bearer TOKEN) \
                 or a client certificate listed in auth.identities",
            ),
            (Caller::Unknown, _) | (_, None) => deny(
                out,
                401,
                &format!("Bearer realm=\"{REALM}\", error=\"invalid_token\""),
                "invalid_token",
                "the bearer token is not valid",
            ),
            (Caller::Token(_) | Caller::Client(_), Some(token)) => {
                if token.scopes.iter().any(|s| s.allows(class, &path)) {
                    return wasi::http::incoming_handler::handle(request, out);
                }
                // The path goes into a quoted-string of the challenge.
                let needed = Scope {
                    class,
                    prefix: path.replace(['"', '\\'], "_"),
                };
                deny(
                    out,
                    403,
                    &format!(
                        "Bearer realm=\"{REALM}\", error=\"insufficient_scope\", scope=\"{needed}\""
                    ),
                    "insufficient_scope",
                    &format!("`{}` lacks the scope {needed}", token.id),
                )
            }
        }
    }
}

export!(Auth);
