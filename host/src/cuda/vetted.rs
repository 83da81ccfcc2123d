//! The vetted kernel modules guests may load by name or digest: the files of
//! `kernels/vetted/`, built into the binary. Adding one is a new file there
//! (with an `@kernel` line per kernel, see [`super::signature`]) and a line
//! below. The signed registry will later add modules at run time.

use super::signature::{self, Signature};

/// A vetted module.
pub struct Vetted {
    /// The name guests load it by (`module.load`).
    pub name: &'static str,
    /// CUDA C source, compiled by NVRTC for the device.
    pub source: &'static str,
}

/// Every vetted module.
pub const MODULES: &[Vetted] = &[Vetted {
    name: "basics",
    source: include_str!("../../../kernels/vetted/basics.cu"),
}];

impl Vetted {
    /// BLAKE3 of the source, 64 lowercase hex digits (`module.load-digest`).
    pub fn digest(&self) -> String {
        blake3::hash(self.source.as_bytes()).to_hex().to_string()
    }

    /// The declared kernels (the build's unit tests check they parse).
    pub fn signatures(&self) -> Vec<Signature> {
        signature::declared(self.source).unwrap_or_default()
    }
}

/// The module called `name`.
pub fn by_name(name: &str) -> Option<&'static Vetted> {
    MODULES.iter().find(|m| m.name == name)
}

/// The module whose source has BLAKE3 `digest` (lowercase or uppercase hex).
pub fn by_digest(digest: &str) -> Option<&'static Vetted> {
    let digest = digest.to_ascii_lowercase();
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
