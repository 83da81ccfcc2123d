//! Picks the deployment for a request: by host (exact, port ignored) and the
//! longest matching path prefix (whole segments).

use crate::serving::deployment::Deployment;
use std::sync::Arc;

/// The routing table.
pub struct Router {
    /// Most specific first: host-bound before any-host, longer prefixes first.
    entries: Vec<Arc<Deployment>>,
    /// Whether any route names a host (else the Host header is never read).
    host_bound: bool,
}

impl Router {
    /// Builds the table; fails on two deployments with the same route.
    pub fn new(mut deployments: Vec<Arc<Deployment>>) -> anyhow::Result<Self> {
        deployments.sort_by_key(|d| (d.route.host.is_none(), std::cmp::Reverse(prefix(d).len())));
        for pair in deployments.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            let same_host = a.route.host.as_deref().map(str::to_ascii_lowercase)
                == b.route.host.as_deref().map(str::to_ascii_lowercase);
            if same_host && prefix(a) == prefix(b) {
                anyhow::bail!(
                    "deployments `{}` and `{}` have the same route",
                    a.name,
                    b.name
                );
            }
        }
        let host_bound = deployments.iter().any(|d| d.route.host.is_some());
        Ok(Self {
            entries: deployments,
            host_bound,
        })
    }

    /// The deployment serving `req`, if any.
    pub fn route_request<B>(&self, req: &http::Request<B>) -> Option<&Arc<Deployment>> {
        let host = if self.host_bound {
            request_host(req)
        } else {
            None
        };
        self.route(host.as_deref(), req.uri().path())
    }

    /// The deployment serving `host` (without port) and `path`, if any.
    pub fn route(&self, host: Option<&str>, path: &str) -> Option<&Arc<Deployment>> {
        self.entries.iter().find(|d| {
            let host_ok = match (&d.route.host, host) {
                (None, _) => true,
                (Some(want), Some(got)) => want.eq_ignore_ascii_case(got),
                (Some(_), None) => false,
            };
            host_ok && path_matches(prefix(d), path)
        })
    }

    /// `d`'s path prefix, without a trailing `/` (`""` for `/`).
    pub fn prefix_of(d: &Deployment) -> &str {
        prefix(d)
    }

    /// All deployments.
    pub fn deployments(&self) -> &[Arc<Deployment>] {
        &self.entries
    }
}

fn prefix(d: &Deployment) -> &str {
    d.route.path.as_deref().unwrap_or("/").trim_end_matches('/')
}

/// Whether `path` is under `prefix` (whole segments; `""` matches all).
pub fn path_matches(prefix: &str, path: &str) -> bool {
    prefix.is_empty()
        || path == prefix
        || (path.starts_with(prefix) && path.as_bytes().get(prefix.len()) == Some(&b'/'))
}

/// The request's host name without port, from the URI or the Host header.
pub fn request_host<B>(req: &http::Request<B>) -> Option<String> {
    let raw = match req.uri().host() {
        Some(h) => h.to_string(),
        None => {
            let value = req.headers().get(http::header::HOST)?.to_str().ok()?;
            let authority: http::uri::Authority = value.parse().ok()?;
            authority.host().to_string()
        }
    };
    Some(raw.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::path_matches;

    #[test]
    fn prefixes_match_whole_segments() {
        assert!(path_matches("", "/anything"));
        assert!(path_matches("/api", "/api"));
        assert!(path_matches("/api", "/api/v1"));
        assert!(!path_matches("/api", "/apix"));
        assert!(!path_matches("/api", "/"));
    }
}
