//! What TensorWasm's gateway components (router, auth, ratelimit, audit)
//! share: `wasi:config` and `wasi:keyvalue` bindings, bearer-token identity
//! (tokens are kept as SHA-256 hashes in config and compared in constant
//! time), method classes and scopes, and wall-clock time.
//!
//! A WASI 0.2 middleware cannot add headers for the next one, so every
//! component that needs the caller's identity derives it the same way, from
//! the `Authorization` header and the shared `auth.tokens` config: the
//! token's id, never the token itself.
#![deny(missing_docs)]

pub mod identity;
pub mod scope;
pub mod time;

#[allow(missing_docs)]
mod bindings {
    wit_bindgen::generate!({
        world: "tensorwasm:gatewaykit/kit",
        path: ["../../wit/deps/config", "../../wit/deps/keyvalue", "wit"],
        generate_all,
    });
}

pub use bindings::wasi::config;
pub use bindings::wasi::keyvalue;

use std::collections::BTreeMap;
use std::sync::Mutex;
use wasip2::http::types::{IncomingRequest, Method};

/// A config value (`None` when unset or when the store fails). A
/// deployment's config does not change while an instance lives, so each key
/// is read once per instance (with warm instances, once per many requests)
/// and its value kept for the instance's life: a request that reads it
/// again copies nothing.
pub fn config_get(key: &str) -> Option<&'static str> {
    static SEEN: Mutex<BTreeMap<String, Option<&'static str>>> = Mutex::new(BTreeMap::new());
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(value) = seen.get(key) {
        return *value;
    }
    // Kept once per key read (the keys are the deployment's config keys).
    let value = config::store::get(key)
        .ok()
        .flatten()
        .map(|v| &*Box::leak(v.into_boxed_str()));
    seen.insert(key.to_string(), value);
    value
}

/// A method's name (`GET`, ...; other methods as the client sent them).
pub fn method_name(m: &Method) -> std::borrow::Cow<'static, str> {
    match m {
        Method::Get => "GET".into(),
        Method::Head => "HEAD".into(),
        Method::Post => "POST".into(),
        Method::Put => "PUT".into(),
        Method::Delete => "DELETE".into(),
        Method::Connect => "CONNECT".into(),
        Method::Options => "OPTIONS".into(),
        Method::Trace => "TRACE".into(),
        Method::Patch => "PATCH".into(),
        Method::Other(o) => o.clone().into(),
    }
}

/// The first value of request header `name`, as text.
pub fn header(request: &IncomingRequest, name: &str) -> Option<String> {
    request
        .headers()
        .get(name)
        .into_iter()
        .next()
        .and_then(|v| String::from_utf8(v).ok())
}

/// Generates a middleware's (or the router's) bindings for `$world` (its `wit/`
/// folder), with `wasi:http` mapped onto the `wasip2` crate's types so
/// requests pass between components unchanged.
#[macro_export]
macro_rules! bindings {
    ($world:tt) => {
        wit_bindgen::generate!({
            world: $world,
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
    };
}
