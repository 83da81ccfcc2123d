//! Bearer tokens, client certificates, and who they belong to.
//! `auth.tokens` lists one token per line (or `;`-separated):
//! `ID sha256:HEX SCOPE...`, e.g. `ci sha256:9f86…0f08 read write:/echo`.
//! The token itself appears nowhere: a presented token is hashed and
//! compared with every entry in constant time.
//!
//! `auth.identities` lists client-certificate identities the same way:
//! `ID IDENTITY SCOPE...`, e.g. `billing spiffe://example.org/billing read`.
//! The identity is what the host verified over mTLS and put in
//! `x-client-identity` (a client's own copy of that header never reaches
//! the world). A request with an `Authorization` header is judged by its
//! token alone; one without, by its certificate identity.

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
    /// The configured client-certificate identity with this id.
    Client(String),
}

impl Caller {
    /// The entry id, if the caller presented a known token or certificate.
    pub fn id(&self) -> Option<&str> {
        match self {
            Caller::Token(id) | Caller::Client(id) => Some(id),
            _ => None,
        }
    }
}

/// A configured client-certificate identity.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Its id (what logs, audit records and rate limits name).
    pub id: String,
    /// The certificate identity (`x-client-identity`) it matches exactly.
    pub name: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
}

/// What a known caller may do, and under which id.
#[derive(Debug, Clone, Copy)]
pub struct Grant<'a> {
    /// The entry's id.
    pub id: &'a str,
    /// Its scopes.
    pub scopes: &'a [Scope],
}

/// Parses `auth.identities`; an entry that does not parse is an error
/// naming its line.
pub fn parse_identities(text: &str) -> Result<Vec<Identity>, String> {
    let mut all: Vec<Identity> = Vec::new();
    for (n, entry) in text.split(['\n', ';']).enumerate() {
        let entry = entry.trim();
        if entry.is_empty() || entry.starts_with('#') {
            continue;
        }
        let mut words = entry.split_whitespace();
        let (Some(id), Some(name)) = (words.next(), words.next()) else {
            return Err(format!(
                "auth.identities entry {}: expected `ID IDENTITY SCOPE...`",
                n + 1
            ));
        };
        let scopes = words
            .map(Scope::parse)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("auth.identities entry `{id}`: {e}"))?;
        if all.iter().any(|i| i.id == id) {
            return Err(format!("auth.identities: id `{id}` appears twice"));
        }
        all.push(Identity {
            id: id.to_string(),
            name: name.to_string(),
            scopes,
        });
    }
    Ok(all)
}

/// The configured identities (`auth.identities`); unset means none.
pub fn identities() -> Result<&'static [Identity], String> {
    static IDENTITIES: OnceLock<Result<Vec<Identity>, String>> = OnceLock::new();
    IDENTITIES
        .get_or_init(|| {
            crate::config_get("auth.identities").map_or(Ok(Vec::new()), parse_identities)
        })
        .as_deref()
        .map_err(Clone::clone)
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
        .get_or_init(|| crate::config_get("auth.tokens").map_or(Ok(Vec::new()), parse_tokens))
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

/// Who sent `request`, judged against `tokens` and, when it carries no
/// `Authorization` header, its certificate identity against `identities`.
pub fn caller_of<'a>(
    request: &IncomingRequest,
    tokens: &'a [Token],
    identities: &'a [Identity],
) -> (Caller, Option<Grant<'a>>) {
    let Some(value) = crate::header(request, "authorization") else {
        let known = crate::header(request, "x-client-identity")
            .and_then(|name| identities.iter().find(|i| i.name == name));
        return match known {
            Some(i) => (
                Caller::Client(i.id.clone()),
                Some(Grant {
                    id: &i.id,
                    scopes: &i.scopes,
                }),
            ),
            None => (Caller::Anonymous, None),
        };
    };
    match bearer(&value).and_then(|t| find(tokens, t)) {
        Some(t) => (
            Caller::Token(t.id.clone()),
            Some(Grant {
                id: &t.id,
                scopes: &t.scopes,
            }),
        ),
        None => (Caller::Unknown, None),
    }
}

/// Who sent `request`, by the shared config (what ratelimit and audit use).
pub fn caller(request: &IncomingRequest) -> Caller {
    match (tokens(), identities()) {
        (Ok(tokens), Ok(identities)) => caller_of(request, tokens, identities).0,
        _ => Caller::Unknown,
    }
}
