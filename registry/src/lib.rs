//! TensorWasm's artifact registry: a content-addressed store of components,
//! worlds, kernels and model manifests under the data dir, with names and
//! detached ed25519 signatures, and the trust policy that decides what the
//! host may run.
//!
//! - [`digest`]: `blake3:HEX`, the address of every blob.
//! - [`name`]: `repo/path:version`, checked so no name can leave the store.
//! - [`blobs`]: blobs kept zstd-compressed, re-checked against their digest
//!   on every read, never expanded past a cap.
//! - [`index`]: names → records (digest, kind, size, time, signatures),
//!   updated under a file lock so concurrent pushes are safe.
//! - [`keys`]: ed25519 key files and the signed statement.
//! - [`trust`]: trusted and revoked keys, and the verdict on a record.
//! - [`model`]: model folders named by the digests of their files.
//! - [`oci`]: push and pull through OCI registries.
#![deny(missing_docs)]

pub mod blobs;
pub mod digest;
pub mod error;
pub mod index;
pub mod keys;
pub mod model;
pub mod name;
pub mod oci;
pub mod store;
pub mod trust;

pub use digest::Digest;
pub use error::{Error, Result};
pub use index::{Kind, Record};
pub use keys::{PublicKey, SecretKey};
pub use name::Name;
pub use store::Registry;
pub use trust::{Policy, Refusal};
