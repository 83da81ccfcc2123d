//! Admin tokens: who may call the admin API, and what they may do.
//!
//! `<data-dir>/admin-token` (made on first start, 0600) holds one with every
//! scope; `<data-dir>/admin-tokens` may list more, a line each:
//! `ID sha256:HEX SCOPE…` (`tensor-wasm token new` makes the hash). Scopes:
//! `read` (read everything), `deploy:TENANT` and `deploy:*` (read and change
//! that tenant's deployments and run and cancel its jobs, or every tenant's). Tokens are kept as SHA-256
//! hashes and compared in constant time.

use anyhow::{Context, Result};
use http::HeaderValue;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The file holding the first start's admin token.
pub const TOKEN_FILE: &str = "admin-token";
/// The file listing further admin tokens.
pub const TOKENS_FILE: &str = "admin-tokens";

/// One admin token: its id, SHA-256 and scopes.
#[derive(Debug, Clone)]
pub struct Token {
    /// Its id (what the audit log names).
    pub id: String,
    hash: [u8; 32],
    scopes: Vec<String>,
}

impl Token {
    /// Whether it may read `tenant`'s deployments.
    pub fn may_read(&self, tenant: &str) -> bool {
        self.scopes.iter().any(|s| s == "read") || self.may_deploy(tenant)
    }

    /// Whether it may change `tenant`'s deployments.
    pub fn may_deploy(&self, tenant: &str) -> bool {
        self.scopes
            .iter()
            .any(|s| s == "deploy:*" || s.strip_prefix("deploy:") == Some(tenant))
    }
}

/// The admin tokens a server accepts (none: every call is refused).
#[derive(Debug, Clone, Default)]
pub struct AdminTokens {
    tokens: Vec<Token>,
}

impl AdminTokens {
    /// The tokens of `data_dir`, making `admin-token` on first start;
    /// returns them and that file's path.
    pub fn load(data_dir: &Path) -> Result<(Self, PathBuf)> {
        let path = data_dir.join(TOKEN_FILE);
        let token = match std::fs::read_to_string(&path) {
            Ok(t) if !t.trim().is_empty() => t.trim().to_string(),
            _ => {
                let token = crate::platform::token::generate()?;
                crate::platform::token::write_secret(&path, &token)?;
                token
            }
        };
        let mut tokens = vec![Token {
            id: "admin".into(),
            hash: Sha256::digest(token.as_bytes()).into(),
            scopes: vec!["read".into(), "deploy:*".into()],
        }];
        let listed = data_dir.join(TOKENS_FILE);
        if let Ok(text) = std::fs::read_to_string(&listed) {
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                tokens.push(
                    parse_line(line)
                        .with_context(|| format!("{} line {}", listed.display(), n + 1))?,
                );
            }
        }
        Ok((Self { tokens }, path))
    }

    /// The token a `Bearer` header names, compared against every known hash
    /// in constant time.
    pub fn check(&self, header: Option<&HeaderValue>) -> Option<&Token> {
        let presented = header?.to_str().ok()?.strip_prefix("Bearer ")?.trim();
        let hash: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for token in &self.tokens {
            let diff = token
                .hash
                .iter()
                .zip(&hash)
                .fold(0u8, |d, (a, b)| d | (a ^ b));
            if diff == 0 {
                found = Some(token);
            }
        }
        found
    }
}

fn parse_line(line: &str) -> Result<Token> {
    let mut words = line.split_whitespace();
    let (Some(id), Some(hash)) = (words.next(), words.next()) else {
        anyhow::bail!("expected `ID sha256:HEX SCOPE…`");
    };
    let hex = hash
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64)
        .context("the hash must be sha256: and 64 hex digits (`tensor-wasm token new`)")?;
    let mut bytes = [0u8; 32];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).context("not hex")?;
    }
    let scopes: Vec<String> = words.map(str::to_string).collect();
    if let Some(bad) = scopes
        .iter()
        .find(|s| *s != "read" && !s.starts_with("deploy:"))
    {
        anyhow::bail!("unknown scope `{bad}` (read, deploy:TENANT, deploy:*)");
    }
    Ok(Token {
        id: id.into(),
        hash: bytes,
        scopes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_lines_and_scopes() {
        let hash = crate::platform::token::hash("t");
        let t = parse_line(&format!("ci {hash} deploy:acme")).unwrap();
        assert!(t.may_read("acme") && !t.may_read("other"));
        assert!(t.may_deploy("acme") && !t.may_deploy("other"));
        let reader = parse_line(&format!("ro {hash} read")).unwrap();
        assert!(reader.may_read("acme") && !reader.may_deploy("acme"));
        assert!(parse_line(&format!("ci {hash} root")).is_err());
        assert!(parse_line("ci sha256:xyz read").is_err());
        let tokens = AdminTokens { tokens: vec![t] };
        assert!(
            tokens
                .check(Some(&HeaderValue::from_static("Bearer t")))
                .is_some()
        );
        assert!(
            tokens
                .check(Some(&HeaderValue::from_static("Bearer u")))
                .is_none()
        );
        assert!(tokens.check(Some(&HeaderValue::from_static("t"))).is_none());
    }
}
