//! Bearer tokens for the gateway's `auth` component: new random tokens,
//! their SHA-256 hashes (what `auth.tokens` holds), and `tensor-wasm token`.

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use std::io::Read;

/// A new random token: `tw_` and 64 hex digits (256 bits from the OS).
pub fn generate() -> Result<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("cannot read random bytes from /dev/urandom")?;
    Ok(format!("tw_{}", hex(&bytes)))
}

/// `sha256:` and the hex SHA-256 of `token`, as `auth.tokens` lists it.
pub fn hash(token: &str) -> String {
    format!("sha256:{}", hex(&Sha256::digest(token.as_bytes())))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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

/// `tensor-wasm token new`: prints a new token and its `auth.tokens` line.
pub fn new_command(id: &str, scopes: &str) -> Result<()> {
    check_id(id)?;
    let token = generate()?;
    println!("token: {token}");
    println!("auth.tokens entry: {id} {} {}", hash(&token), scopes.trim());
    eprintln!(
        "The token is shown only now: give it to the client (Authorization: Bearer TOKEN) and \
         put the entry (which holds only its hash) in the deployment's `auth.tokens` config."
    );
    Ok(())
}

/// `tensor-wasm token hash`: the hash of the token on standard input.
pub fn hash_command() -> Result<()> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .context("cannot read the token from standard input")?;
    let token = text.trim();
    if token.is_empty() {
        bail!("no token on standard input");
    }
    println!("{}", hash(token));
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
