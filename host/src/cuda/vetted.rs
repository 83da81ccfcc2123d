//! The built-in vetted kernel modules: the files of `kernels/vetted/`,
//! built into the binary, each with its registry record signed by the
//! project's kernel key (`kernels/vetted/tensorwasm-kernels.pub`, shipped in
//! the binary; docs/KERNELS.md says how the set is re-signed). Adding one is
//! a new `.cu` file there (with an `@kernel` line per kernel, see
//! [`super::signature`]), its signed `.record.json`, and a line below.
//! Operators add modules at run time through the registry
//! ([`super::library`]).

use super::signature::{self, Signature};
use registry::{PublicKey, Record};

/// A vetted module.
pub struct Vetted {
    /// The name guests load it by (`module.load`).
    pub name: &'static str,
    /// CUDA C source, compiled by NVRTC for the device.
    pub source: &'static str,
    /// Its registry record (JSON) with the project key's signature.
    record: &'static str,
}

/// The public half of the key that signs the built-in set.
const PUBLIC_KEY: &str = include_str!("../../../kernels/vetted/tensorwasm-kernels.pub");

/// Every vetted module.
pub const MODULES: &[Vetted] = &[Vetted {
    name: "basics",
    source: include_str!("../../../kernels/vetted/basics.cu"),
    record: include_str!("../../../kernels/vetted/basics.record.json"),
}];

/// The built-in set's signing key.
pub fn public_key() -> anyhow::Result<PublicKey> {
    Ok(PublicKey::parse(PUBLIC_KEY)?)
}

impl Vetted {
    /// BLAKE3 of the source, 64 lowercase hex digits (`module.load-digest`).
    pub fn digest(&self) -> String {
        blake3::hash(self.source.as_bytes()).to_hex().to_string()
    }

    /// The declared kernels (the build's unit tests check they parse).
    pub fn signatures(&self) -> Vec<Signature> {
        signature::declared(self.source).unwrap_or_default()
    }

    /// Its signed record; an error if it does not name this source.
    pub fn record(&self) -> Result<Record, String> {
        let record: Record = serde_json::from_str(self.record)
            .map_err(|e| format!("the record of built-in module {}: {e}", self.name))?;
        if record.digest != format!("blake3:{}", self.digest()) {
            return Err(format!(
                "built-in module {} changed since it was signed (docs/KERNELS.md: re-sign it)",
                self.name
            ));
        }
        Ok(record)
    }
}

/// The module called `name`.
pub fn by_name(name: &str) -> Option<&'static Vetted> {
    MODULES.iter().find(|m| m.name == name)
}

/// The module whose source has BLAKE3 `digest` (lowercase hex).
pub fn by_digest(digest: &str) -> Option<&'static Vetted> {
    MODULES.iter().find(|m| m.digest() == digest)
}

/// The names, for error messages.
pub fn names() -> String {
    MODULES
        .iter()
        .map(|m| m.name)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every built-in module is signed, over its current source, by the
    /// shipped key.
    #[test]
    fn built_in_set_is_signed_by_the_shipped_key() {
        let key = public_key().unwrap();
        let mut policy = registry::Policy::default();
        policy.trusted.push((key.clone(), "built in".into()));
        for m in MODULES {
            let record = m.record().unwrap();
            assert_eq!(record.kind, registry::Kind::Kernel, "{}", m.name);
            assert_eq!(policy.check(&record), Ok(key.id()), "{}", m.name);
            assert!(!m.signatures().is_empty(), "{}", m.name);
        }
    }
}
