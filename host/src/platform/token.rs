//! Bearer tokens for the gateway's `auth` component: new random tokens,
//! and their SHA-256 hashes (what `auth.tokens` holds).

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use std::io::Read;

/// A new random token: `tw_` and 64 hex digits (256 bits from the OS).
pub fn generate() -> Result<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("cannot read random bytes from /dev/urandom")?;
    Ok(format!("tw_{}", super::hex::encode(&bytes)))
}

/// `sha256:` and the hex SHA-256 of `token`, as `auth.tokens` lists it.
pub fn hash(token: &str) -> String {
    format!(
        "sha256:{}",
        super::hex::encode(&Sha256::digest(token.as_bytes()))
    )
}

/// Writes `token` to `path` (0600, its folder made if missing).
pub fn write_secret(path: &std::path::Path, token: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    std::io::Write::write_all(&mut file, format!("{token}\n").as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Checks a token id as `auth.tokens` accepts it.
pub fn check_id(id: &str) -> Result<()> {
    if id.is_empty()
        || id.len() > 64
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        bail!("token id `{id}` must be 1-64 letters, digits, `-`, `_` or `.`");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn hashes_like_sha256sum() {
        assert_eq!(
            super::hash("abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let t = super::generate().unwrap();
        assert_eq!(t.len(), 67);
        assert_ne!(t, super::generate().unwrap());
    }
}
