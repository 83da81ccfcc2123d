//! Content addresses: `blake3:` and 64 lowercase hex digits.

use crate::error::{Error, Result};
use std::fmt;

/// The BLAKE3 digest of a blob's (uncompressed) bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub(crate) [u8; 32]);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }

    /// Parses `blake3:HEX`.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = || Error::Invalid(format!("`{text}` is not a digest (blake3:<64 hex digits>)"));
        let hex = text.strip_prefix("blake3:").ok_or_else(bad)?;
        let bytes = decode_hex::<32>(hex).ok_or_else(bad)?;
        Ok(Self(bytes))
    }

    /// The 64 hex digits alone (file names).
    pub fn hex(&self) -> String {
        encode_hex(&self.0)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "blake3:{}", self.hex())
    }
}

/// Lowercase hex of `bytes`.
pub fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `N` bytes from exactly `2N` hex digits (either case).
pub fn decode_hex<const N: usize>(hex: &str) -> Option<[u8; N]> {
    if hex.len() != 2 * N || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_junk() {
        let d = Digest::of(b"hello");
        assert_eq!(Digest::parse(&d.to_string()).unwrap(), d);
        for bad in [
            "",
            "blake3:",
            "sha256:00",
            "blake3:zz",
            &format!("blake3:{}0", d.hex()),
        ] {
            assert!(Digest::parse(bad).is_err(), "{bad}");
        }
    }
}
