//! `router`: dispatches each request by method and path prefix to one of the
//! handlers it imports (`welcome`, `app`); JSON 404 when no route matches the
//! path, JSON 405 (with `Allow`) when routes match the path but not the method.
//!
//! Routes come from config `router.routes`, rules separated by `;` or
//! newlines, each `METHODS PREFIX TARGET`: METHODS is `*` or a comma list
//! (`GET,HEAD`), PREFIX a path prefix matched by whole segments (`/v1`) or,
//! with `=`, one exact path (`=/`), TARGET `welcome` or `app`. The most
//! specific matching prefix wins. Unset: `GET,HEAD =/ welcome; * / app`.

// Natively only the fuzz targets use this crate (its parsers).
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use httpkit::{json_error, path, respond};
use std::sync::OnceLock;
use wasip2::http::types::{IncomingRequest, ResponseOutparam};

gatewaykit::bindings!("tensorwasm:router/router");

const DEFAULT_ROUTES: &str = "GET,HEAD =/ welcome; * / app";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Welcome,
    App,
}

#[derive(Debug)]
struct Rule {
    /// Upper-case method names; empty means any.
    methods: Vec<String>,
    prefix: String,
    exact: bool,
    target: Target,
}

impl Rule {
    fn matches_path(&self, path: &str) -> bool {
        if self.exact {
            path == self.prefix
        } else {
            gatewaykit::scope::under(&self.prefix, path)
        }
    }

    fn allows(&self, method: &str) -> bool {
        self.methods.is_empty() || self.methods.iter().any(|m| m == method)
    }

    /// Longer prefixes first; an exact path before a prefix of the same length.
    fn specificity(&self) -> usize {
        2 * self.prefix.trim_end_matches('/').len() + usize::from(self.exact)
    }
}

/// The fuzz targets' way in (`fuzz/`): parses `router.routes`.
#[doc(hidden)]
pub fn fuzz_routes(text: &str) -> Result<usize, String> {
    parse_routes(text).map(|r| r.len())
}

fn parse_routes(text: &str) -> Result<Vec<Rule>, String> {
    let mut rules = Vec::new();
    for entry in text.split(['\n', ';']).map(str::trim) {
        if entry.is_empty() || entry.starts_with('#') {
            continue;
        }
        let words: Vec<&str> = entry.split_whitespace().collect();
        let [methods, prefix, target] = words[..] else {
            return Err(format!(
                "router.routes: `{entry}`: expected `METHODS PREFIX TARGET`"
            ));
        };
        let methods = if methods == "*" {
            Vec::new()
        } else {
            methods
                .split(',')
                .map(|m| m.trim().to_ascii_uppercase())
                .collect()
        };
        let (exact, prefix) = match prefix.strip_prefix('=') {
            Some(p) => (true, p),
            None => (false, prefix),
        };
        if !prefix.starts_with('/') {
            return Err(format!(
                "router.routes: `{entry}`: the prefix must start with `/`"
            ));
        }
        let target = match target {
            "welcome" => Target::Welcome,
            "app" => Target::App,
            t => {
                return Err(format!(
                    "router.routes: `{entry}`: unknown target `{t}` (welcome or app)"
                ));
            }
        };
        rules.push(Rule {
            methods,
            prefix: prefix.to_string(),
            exact,
            target,
        });
    }
    rules.sort_by_key(|r| std::cmp::Reverse(r.specificity()));
    Ok(rules)
}

struct Router;

impl exports::wasi::http::incoming_handler::Guest for Router {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        // Parsed once per instance: the config does not change while it lives.
        static RULES: OnceLock<Result<Vec<Rule>, String>> = OnceLock::new();
        let rules = RULES.get_or_init(|| {
            let text = gatewaykit::config_get("router.routes");
            parse_routes(text.unwrap_or(DEFAULT_ROUTES))
        });
        let rules = match rules {
            Ok(r) => r,
            Err(e) => return json_error(out, 500, "bad_config", e),
        };
        let path = path(&request);
        // Rules hold upper-case names; only a method of the client's own
        // spelling needs a copy.
        let method = match gatewaykit::method_name(&request.method()) {
            std::borrow::Cow::Owned(m) => std::borrow::Cow::Owned(m.to_ascii_uppercase()),
            known => known,
        };
        let matching: Vec<&Rule> = rules.iter().filter(|r| r.matches_path(&path)).collect();
        if matching.is_empty() {
            return json_error(out, 404, "not_found", &format!("no route for {path}"));
        }
        match matching.iter().find(|r| r.allows(&method)) {
            Some(rule) => match rule.target {
                Target::Welcome => welcome::handle(request, out),
                Target::App => app::handle(request, out),
            },
            None => {
                let mut allow: Vec<&str> = Vec::new();
                for m in matching.iter().flat_map(|r| r.methods.iter()) {
                    if !allow.contains(&m.as_str()) {
                        allow.push(m);
                    }
                }
                let allow = allow.join(", ");
                let body = format!(
                    "{{\"error\":{{\"code\":\"method_not_allowed\",\"message\":{}}}}}",
                    httpkit::quote(&format!(
                        "{method} is not allowed on {path}; allowed: {allow}"
                    ))
                );
                respond(
                    out,
                    405,
                    &[("content-type", "application/json"), ("allow", &allow)],
                    body.as_bytes(),
                );
            }
        }
    }
}

// Natively (the fuzz targets link this crate) there is nothing to export.
#[cfg(target_arch = "wasm32")]
export!(Router);
