//! Artifact names: `REPO:VERSION`, where REPO is one or more `/`-separated
//! segments of `a-z 0-9 - _ .` (not `.` or `..`, not starting with `.`) and
//! VERSION is 1–64 characters of `A-Z a-z 0-9 - _ . +`. Names never become
//! paths; they are keys of the index.

use crate::error::{Error, Result};
use std::fmt;

/// A checked artifact name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name {
    /// `acme/shop`.
    pub repo: String,
    /// `1.2.0`.
    pub version: String,
}

impl Name {
    /// Parses and checks `REPO:VERSION`.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |why: &str| Error::Invalid(format!("artifact name `{text}`: {why}"));
        let (repo, version) = text
            .rsplit_once(':')
            .ok_or_else(|| bad("expected REPO:VERSION, e.g. acme/shop:1.2.0"))?;
        if repo.is_empty() || repo.len() > 200 {
            return Err(bad("the repository must be 1-200 characters"));
        }
        for segment in repo.split('/') {
            let ok_chars = segment
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
            if segment.is_empty() || segment.starts_with('.') || !ok_chars {
                return Err(bad(
                    "repository segments are a-z 0-9 - _ . and may not be empty or start with `.`",
                ));
            }
        }
        let version_ok = version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.+".contains(&b));
        if version.is_empty() || version.len() > 64 || !version_ok || version.starts_with('.') {
            return Err(bad(
                "the version must be 1-64 characters of A-Z a-z 0-9 - _ . +",
            ));
        }
        Ok(Self {
            repo: repo.to_string(),
            version: version.to_string(),
        })
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.repo, self.version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_names_and_refuses_traversal() {
        let n = Name::parse("acme/shop:1.2.0").unwrap();
        assert_eq!(
            (n.repo.as_str(), n.version.as_str()),
            ("acme/shop", "1.2.0")
        );
        for bad in [
            "shop",
            ":1",
            "acme/shop:",
            "../etc/passwd:1",
            "acme/../x:1",
            "acme//x:1",
            "/abs:1",
            "Acme/shop:1",
            "acme/shop:../1",
            "acme/shop:a/b",
            "a\\b:1",
            "acme/.git:1",
        ] {
            assert!(Name::parse(bad).is_err(), "{bad}");
        }
    }
}
