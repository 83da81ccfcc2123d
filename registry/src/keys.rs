//! ed25519 keys and what they sign.
//!
//! Files, one line each: a secret key `ed25519-secret:<64 hex>` (written
//! 0600, never logged) and its public half `ed25519:<64 hex> COMMENT`. A
//! key's id is the first 16 hex digits of the BLAKE3 of its public bytes.
//! A signature covers [`statement`]: the artifact's name, kind, digest and
//! creation time, so a signature cannot be moved to another name or blob.

use crate::digest::{decode_hex, encode_hex};
use crate::error::{Error, Result, io};
use ed25519_dalek::Signer;
use std::path::Path;

/// A secret (signing) key.
pub struct SecretKey(ed25519_dalek::SigningKey);

/// A public (verifying) key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey(ed25519_dalek::VerifyingKey);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey({})", self.public().id())
    }
}

impl SecretKey {
    /// A new key from the operating system's randomness.
    pub fn generate() -> Result<Self> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed)
            .map_err(|e| Error::Invalid(format!("no randomness for a new key: {e}")))?;
        Ok(Self(ed25519_dalek::SigningKey::from_bytes(&seed)))
    }

    /// Reads a secret key file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(io(format!("cannot read key {}", path.display())))?;
        let seed = text
            .trim()
            .strip_prefix("ed25519-secret:")
            .and_then(decode_hex::<32>)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "{} is not a secret key (expected one line `ed25519-secret:<64 hex>`)",
                    path.display()
                ))
            })?;
        Ok(Self(ed25519_dalek::SigningKey::from_bytes(&seed)))
    }

    /// Writes the key to `path` (0600, refusing to overwrite) and its
    /// public half to `path.pub`.
    pub fn save(&self, path: &Path, comment: &str) -> Result<()> {
        use std::io::Write;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options
            .open(path)
            .map_err(io(format!("cannot create {}", path.display())))?;
        writeln!(file, "ed25519-secret:{}", encode_hex(self.0.as_bytes()))
            .map_err(io(format!("cannot write {}", path.display())))?;
        let public = path.with_file_name(format!(
            "{}.pub",
            path.file_name().and_then(|n| n.to_str()).unwrap_or("key")
        ));
        std::fs::write(&public, format!("{} {comment}\n", self.public()))
            .map_err(io(format!("cannot write {}", public.display())))
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// Signs `message`: 128 hex digits.
    pub fn sign(&self, message: &[u8]) -> String {
        encode_hex(&self.0.sign(message).to_bytes())
    }
}

impl PublicKey {
    /// Parses `ed25519:<64 hex>` (anything after a space is a comment).
    pub fn parse(text: &str) -> Result<Self> {
        let word = text.split_whitespace().next().unwrap_or("");
        let bytes = word
            .strip_prefix("ed25519:")
            .and_then(decode_hex::<32>)
            .ok_or_else(|| {
                Error::Invalid(format!("`{word}` is not a public key (ed25519:<64 hex>)"))
            })?;
        ed25519_dalek::VerifyingKey::from_bytes(&bytes)
            .map(Self)
            .map_err(|_| Error::Invalid(format!("`{word}` is not a valid ed25519 point")))
    }

    /// Reads a public key file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(io(format!("cannot read key {}", path.display())))?;
        Self::parse(&text).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))
    }

    /// The key's id: 16 hex digits.
    pub fn id(&self) -> String {
        encode_hex(&blake3::hash(self.0.as_bytes()).as_bytes()[..8])
    }

    /// Whether `signature` (128 hex digits) signs `message` with this key.
    pub fn verifies(&self, message: &[u8], signature: &str) -> bool {
        let Some(bytes) = decode_hex::<64>(signature) else {
            return false;
        };
        let signature = ed25519_dalek::Signature::from_bytes(&bytes);
        self.0.verify_strict(message, &signature).is_ok()
    }
}

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ed25519:{}", encode_hex(self.0.as_bytes()))
    }
}

/// The bytes a signature covers.
pub fn statement(name: &str, kind: &str, digest: &str, created: u64) -> Vec<u8> {
    format!(
        "tensor-wasm artifact signature v1\nname: {name}\nkind: {kind}\ndigest: {digest}\ncreated: {created}\n"
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_signatures_bind_the_statement() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let key = SecretKey::generate().unwrap();
        key.save(&path, "test").unwrap();
        assert!(key.save(&path, "again").is_err(), "never overwrites a key");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let loaded = SecretKey::load(&path).unwrap();
        let public = PublicKey::load(&dir.path().join("k.pub")).unwrap();
        assert_eq!(public, key.public());
        let message = statement("a/b:1", "component", "blake3:00", 1);
        let sig = loaded.sign(&message);
        assert!(public.verifies(&message, &sig));
        assert!(!public.verifies(&statement("a/b:2", "component", "blake3:00", 1), &sig));
        let other = SecretKey::generate().unwrap().public();
        assert!(!other.verifies(&message, &sig));
        assert!(!public.verifies(&message, "00"));
        assert!(!format!("{loaded:?}").contains(&encode_hex(loaded.0.as_bytes())));
    }
}
