//! Bearer tokens and who they belong to. `auth.tokens` lists one token per
//! line (or `;`-separated): `ID sha256:HEX SCOPE...`, e.g.
//! `ci sha256:9f86…0f08 read write:/echo`. The token itself appears nowhere:
//! a presented token is hashed and compared with every entry in constant time.

use crate::scope::Scope;
use sha2::{Digest, Sha256};
use std::sync::OnceLock;
use wasip2::http::types::IncomingRequest;

/// A configured token.
#[derive(Debug, Clone)]
pub struct Token {
    /// Its id (what logs, audit records and rate limits name).
    pub id: String,
    hash: [u8; 32],
    /// What it may do.
    pub scopes: Vec<Scope>,
}

/// Who sent a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No `Authorization: Bearer` header.
    Anonymous,
    /// A bearer token that matches no configured token (or a malformed header).
    Unknown,
    /// The configured token with this id.
    Token(String),
}

impl Caller {
    /// The token id, if the caller presented a known token.
    pub fn id(&self) -> Option<&str> {
        match self {
            Caller::Token(id) => Some(id),
            _ => None,
        }
    }
}

/// Parses `auth.tokens`; an entry that does not parse is an error naming its line.
pub fn parse_tokens(text: &str) -> Result<Vec<Token>, String> {
    let mut tokens: Vec<Token> = Vec::new();
    for (n, entry) in text.split(['\n', ';']).enumerate() {
        let entry = entry.trim();
        if entry.is_empty() || entry.starts_with('#') {
            continue;
        }
        let mut words = entry.split_whitespace();
        let (Some(id), Some(hash)) = (words.next(), words.next()) else {
            return Err(format!(
                "auth.tokens entry {}: expected `ID sha256:HEX SCOPE...`",
                n + 1
            ));
        };
        let hash = parse_hash(hash).ok_or_else(|| {
            format!("auth.tokens entry `{id}`: the hash must be sha256:<64 hex digits>")
        })?;
        let scopes = words
            .map(Scope::parse)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("auth.tokens entry `{id}`: {e}"))?;
        if tokens.iter().any(|t| t.id == id) {
            return Err(format!("auth.tokens: id `{id}` appears twice"));
        }
        tokens.push(Token {
            id: id.to_string(),
            hash,
            scopes,
        });
    }
    Ok(tokens)
}

fn parse_hash(text: &str) -> Option<[u8; 32]> {
    let hex = text.strip_prefix("sha256:")?;
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The configured tokens (`auth.tokens`); unset means none. Parsed once
/// per instance, like the config they come from.
pub fn tokens() -> Result<&'static [Token], String> {
    static TOKENS: OnceLock<Result<Vec<Token>, String>> = OnceLock::new();
    TOKENS
        .get_or_init(|| {
            crate::config_get("auth.tokens").map_or(Ok(Vec::new()), |t| parse_tokens(&t))
        })
        .as_deref()
        .map_err(Clone::clone)
}

/// The bearer token in an `Authorization` value, if it is one.
pub fn bearer(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The configured token matching `presented`, compared with every entry in
/// constant time (no early exit, no data-dependent branch per byte).
pub fn find<'a>(tokens: &'a [Token], presented: &str) -> Option<&'a Token> {
    let digest = digest_of(presented);
    let mut found = None;
    for token in tokens {
        if std::hint::black_box(differs(&token.hash, &digest)) == 0 {
            found = Some(token);
        }
    }
    found
}

/// SHA-256 of `presented`. A warm instance keeps the last token it hashed
/// and its digest: a caller's next request (compared in constant time, as a
/// token of the same length) skips the hash.
fn digest_of(presented: &str) -> [u8; 32] {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(Vec<u8>, [u8; 32])>> =
            const { std::cell::RefCell::new(None) };
    }
    let presented = presented.as_bytes();
    LAST.with_borrow_mut(|last| {
        if let Some((token, digest)) = last.as_ref()
            && token.len() == presented.len()
            && std::hint::black_box(differs(token, presented)) == 0
        {
            return *digest;
        }
        let digest: [u8; 32] = Sha256::digest(presented).into();
        *last = Some((presented.to_vec(), digest));
        digest
    })
}

/// Non-zero when `a` and `b` (of equal length) differ; reads every byte.
fn differs(a: &[u8], b: &[u8]) -> u8 {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y))
}

/// Who sent `request`, judged against `tokens`.
pub fn caller_of(request: &IncomingRequest, tokens: &[Token]) -> (Caller, Option<Token>) {
    let Some(value) = crate::header(request, "authorization") else {
        return (Caller::Anonymous, None);
    };
    match bearer(&value).and_then(|t| find(tokens, t)) {
        Some(t) => (Caller::Token(t.id.clone()), Some(t.clone())),
        None => (Caller::Unknown, None),
    }
}

/// Who sent `request`, by the shared config (what ratelimit and audit use).
pub fn caller(request: &IncomingRequest) -> Caller {
    match tokens() {
        Ok(tokens) => caller_of(request, tokens).0,
        Err(_) => Caller::Unknown,
    }
}
