//! The trust policy: which keys may vouch for what runs. Keys come from
//! `--trust-key FILE` and from the registry's `trust` file (lines
//! `trust ed25519:HEX COMMENT` and `revoke KEYID`). With any trusted key, or
//! with `require-signed`, an artifact runs only when a trusted, unrevoked
//! key signed its record; without either, the policy is off.

use crate::error::{Error, Result, io};
use crate::index::Record;
use crate::keys::PublicKey;
use std::collections::BTreeSet;
use std::path::Path;

/// Why a record is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No signature at all.
    Unsigned,
    /// Signed only by keys the policy does not know (their ids).
    UnknownKey(Vec<String>),
    /// Signed by a revoked key.
    RevokedKey(String),
    /// A trusted key's signature that does not verify.
    BadSignature(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unsigned => write!(f, "it is unsigned"),
            Self::UnknownKey(ids) => write!(
                f,
                "it is signed only by untrusted keys ({})",
                ids.join(", ")
            ),
            Self::RevokedKey(id) => write!(f, "its signing key {id} is revoked"),
            Self::BadSignature(id) => write!(f, "the signature by key {id} does not verify"),
        }
    }
}

/// Trusted and revoked keys.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Keys whose signatures count, with where each came from.
    pub trusted: Vec<(PublicKey, String)>,
    /// Revoked key ids.
    pub revoked: BTreeSet<String>,
    /// Refuse unsigned artifacts even with no trusted key.
    pub require_signed: bool,
}

impl Policy {
    /// Whether the policy decides anything (else everything runs as today).
    pub fn active(&self) -> bool {
        self.require_signed || !self.trusted.is_empty()
    }

    /// Adds the keys and revocations of a `trust` file, if it exists.
    pub fn read_file(&mut self, path: &Path) -> Result<()> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io(format!("cannot read {}", path.display()))(e)),
        };
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            let bad =
                |why: String| Error::Invalid(format!("{} line {}: {why}", path.display(), n + 1));
            match line.split_once(' ') {
                _ if line.is_empty() || line.starts_with('#') => {}
                Some(("trust", key)) => {
                    let key = PublicKey::parse(key).map_err(|e| bad(e.to_string()))?;
                    self.trusted.push((key, path.display().to_string()));
                }
                Some(("revoke", id)) => {
                    self.revoked.insert(id.trim().to_string());
                }
                _ => {
                    return Err(bad(
                        "expected `trust ed25519:HEX [comment]` or `revoke KEYID`".into(),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Trusts the public key in `path`.
    pub fn trust_file(&mut self, path: &Path) -> Result<()> {
        let key = PublicKey::load(path)?;
        self.trusted.push((key, path.display().to_string()));
        Ok(())
    }

    /// The id of the trusted key that signed `record`, or why none did.
    pub fn check(&self, record: &Record) -> Result<String, Refusal> {
        if record.signatures.is_empty() {
            return Err(Refusal::Unsigned);
        }
        let statement = record.statement();
        let (mut revoked, mut bad, mut unknown) = (None, None, Vec::new());
        for sig in &record.signatures {
            let trusted = self
                .trusted
                .iter()
                .find(|(k, _)| k.to_string() == sig.public && k.id() == sig.key);
            match trusted {
                _ if self.revoked.contains(&sig.key) => revoked = Some(sig.key.clone()),
                None => unknown.push(sig.key.clone()),
                Some((key, _)) if key.verifies(&statement, &sig.signature) => {
                    return Ok(sig.key.clone());
                }
                Some(_) => bad = Some(sig.key.clone()),
            }
        }
        Err(match (bad, revoked) {
            (Some(id), _) => Refusal::BadSignature(id),
            (None, Some(id)) => Refusal::RevokedKey(id),
            (None, None) => Refusal::UnknownKey(unknown),
        })
    }
}
