//! Method classes (read, write, admin) and token scopes over path prefixes.

use wasip2::http::types::Method;

/// What a request does, from least to most privileged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    /// GET, HEAD, OPTIONS.
    Read,
    /// Every other method.
    Write,
    /// Any request under one of `auth.admin-paths`.
    Admin,
}

impl Class {
    /// The class's name in scopes.
    pub fn name(self) -> &'static str {
        match self {
            Class::Read => "read",
            Class::Write => "write",
            Class::Admin => "admin",
        }
    }

    fn parse(text: &str) -> Option<Class> {
        match text {
            "read" => Some(Class::Read),
            "write" => Some(Class::Write),
            "admin" => Some(Class::Admin),
            _ => None,
        }
    }

    /// The class of `method` on `path`, given the admin path prefixes.
    pub fn of(method: &Method, path: &str, admin_paths: &[String]) -> Class {
        if admin_paths.iter().any(|p| under(p, path)) {
            return Class::Admin;
        }
        match method {
            Method::Get | Method::Head | Method::Options => Class::Read,
            _ => Class::Write,
        }
    }
}

/// One scope: a class (which includes the classes below it) on a path prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// The most privileged class allowed.
    pub class: Class,
    /// The path prefix (whole segments) it applies to.
    pub prefix: String,
}

impl Scope {
    /// Parses `class` or `class:/prefix` (e.g. `write:/echo`).
    pub fn parse(text: &str) -> Result<Scope, String> {
        let (class, prefix) = text.split_once(':').unwrap_or((text, "/"));
        let class = Class::parse(class)
            .ok_or_else(|| format!("unknown scope class `{class}` (read, write or admin)"))?;
        if !prefix.starts_with('/') {
            return Err(format!("scope prefix `{prefix}` must start with `/`"));
        }
        Ok(Scope {
            class,
            prefix: prefix.to_string(),
        })
    }

    /// Whether this scope allows a request of `class` on `path`.
    pub fn allows(&self, class: Class, path: &str) -> bool {
        self.class >= class && under(&self.prefix, path)
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.class.name(), self.prefix)
    }
}

/// Whether `path` is `prefix` or below it, by whole segments (`/` covers all).
pub fn under(prefix: &str, path: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    prefix.is_empty()
        || path == prefix
        || (path.starts_with(prefix) && path.as_bytes().get(prefix.len()) == Some(&b'/'))
}

/// Comma-separated path prefixes (e.g. the value of `auth.admin-paths`).
pub fn prefixes(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}
