//! The kernel modules guests may load: the built-in vetted set
//! ([`super::vetted`], signed by the project's key, whose public half ships
//! in the binary) and kernel artifacts of the registry (published with
//! `tensor-wasm kernel publish`). Under an active trust policy a registry
//! kernel loads only when a trusted, unrevoked key signed it; the built-in
//! key is trusted unless the operator revokes it. A module is resolved —
//! its bytes re-checked against their digest, its signature and its
//! `@kernel` declarations checked — before it is compiled; `tensor-wasm
//! kernel verify` runs the same resolution without a GPU.

use super::signature::{self, Signature};
use super::vetted;
use registry::{Kind, Policy, Record, Registry};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Why a module cannot be loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// No such module (or not a kernel).
    NotFound(String),
    /// The trust policy refuses it.
    NotPermitted(String),
    /// A malformed reference or module.
    InvalidArgument(String),
    /// Stored bytes that fail their digest, or a broken built-in record.
    Corrupt(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotFound(m)
            | Self::NotPermitted(m)
            | Self::InvalidArgument(m)
            | Self::Corrupt(m) => f.write_str(m),
        }
    }
}

/// A module ready to compile: its source and declared kernels.
pub struct Source {
    /// Its name in messages (`basics`, `acme/kernels:1.0`).
    pub name: String,
    /// CUDA C source.
    pub source: String,
    /// The `@kernel` declarations every launch is checked against.
    pub declared: Vec<Signature>,
}

/// The modules of this server: built-in and registry kernels, and the
/// policy they are checked against.
pub struct Library {
    registry: Option<Registry>,
    /// The operator's policy with the built-in key added as trusted.
    policy: Policy,
    /// Checked modules by digest.
    checked: Mutex<HashMap<String, Arc<Source>>>,
}

impl Library {
    /// The library of the registry under `data_dir` (none for a job) and
    /// the operator's `policy`.
    pub fn new(data_dir: Option<&Path>, mut policy: Policy) -> anyhow::Result<Self> {
        policy
            .trusted
            .push((vetted::public_key()?, "built into tensor-wasm".into()));
        Ok(Self {
            registry: data_dir.map(Registry::open).transpose()?,
            policy,
            checked: Mutex::default(),
        })
    }

    /// The module a guest names: a built-in name, or a registry name
    /// (`repo:version`). `require_signed` is the deployment's own.
    pub fn by_name(&self, name: &str, require_signed: bool) -> Result<Arc<Source>, Error> {
        if let Some(m) = vetted::by_name(name) {
            return self.built_in(m);
        }
        if !name.contains(':') {
            return Err(Error::NotFound(format!(
                "no vetted module `{name}` (built in: {}; registry kernels are named repo:version)",
                vetted::names()
            )));
        }
        self.registry_module(name, require_signed)
    }

    /// The module whose source has BLAKE3 `digest` (64 hex digits).
    pub fn by_digest(&self, digest: &str, require_signed: bool) -> Result<Arc<Source>, Error> {
        if digest.len() != 64 || !digest.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(Error::InvalidArgument(format!(
                "`{digest}` is not a BLAKE3 digest (64 hex digits)"
            )));
        }
        let digest = digest.to_ascii_lowercase();
        if let Some(m) = vetted::by_digest(&digest) {
            return self.built_in(m);
        }
        self.registry_module(&format!("blake3:{digest}"), require_signed)
    }

    fn built_in(&self, m: &'static vetted::Vetted) -> Result<Arc<Source>, Error> {
        let record = m.record().map_err(Error::Corrupt)?;
        // Only a revocation of the built-in key can refuse it.
        if let Err(why) = self.policy.check(&record) {
            return Err(Error::NotPermitted(format!(
                "built-in module {}: {why}",
                m.name
            )));
        }
        self.keep(&record.digest, || Source {
            name: m.name.into(),
            source: m.source.into(),
            declared: m.signatures(),
        })
    }

    fn registry_module(&self, reference: &str, require_signed: bool) -> Result<Arc<Source>, Error> {
        let Some(registry) = &self.registry else {
            return Err(Error::NotFound(format!(
                "{reference}: this host has no registry (a job has no data dir)"
            )));
        };
        let not_found = |e: registry::Error| Error::NotFound(format!("kernel {reference}: {e}"));
        let records = match reference.strip_prefix("blake3:") {
            // Any record of the digest may vouch for it.
            Some(_) => {
                let all = registry.list().map_err(not_found)?;
                all.into_iter().filter(|r| r.digest == reference).collect()
            }
            None => vec![
                registry
                    .record(reference)
                    .map_err(not_found)?
                    .ok_or_else(|| Error::NotFound(format!("no kernel named {reference}")))?,
            ],
        };
        let record = self.permitted(reference, records, require_signed)?;
        if let Some(found) = self.cached(&record.digest) {
            return Ok(found);
        }
        let artifact = registry.fetch(&record.digest).map_err(|e| match e {
            registry::Error::Corrupt(why) => Error::Corrupt(format!("kernel {reference}: {why}")),
            other => not_found(other),
        })?;
        let source = String::from_utf8(artifact.bytes).map_err(|_| {
            Error::InvalidArgument(format!("kernel {reference} is not UTF-8 CUDA C source"))
        })?;
        let declared = signature::declared(&source)
            .map_err(|e| Error::InvalidArgument(format!("kernel {reference}: {e}")))?;
        self.keep(&record.digest, || Source {
            name: record.name.clone(),
            source,
            declared,
        })
    }

    /// The first of `records` (all of one artifact) that is a kernel the
    /// policy lets run, or why none is.
    fn permitted(
        &self,
        reference: &str,
        records: Vec<Record>,
        require_signed: bool,
    ) -> Result<Record, Error> {
        let mut why = Error::NotFound(format!(
            "{reference} was not published as a kernel (no record names it)"
        ));
        for record in records {
            if record.kind != Kind::Kernel {
                why = Error::NotFound(format!(
                    "{reference} is a {}, not a kernel",
                    record.kind.as_str()
                ));
                continue;
            }
            if !(self.policy_active() || require_signed) {
                return Ok(record);
            }
            match self.policy.check(&record) {
                Ok(_) => return Ok(record),
                Err(refusal) => {
                    why = Error::NotPermitted(format!("kernel {reference}: refused: {refusal}"))
                }
            }
        }
        Err(why)
    }

    /// Whether the operator set a policy (the built-in key alone is not one).
    pub fn policy_active(&self) -> bool {
        self.policy.require_signed || self.policy.trusted.len() > 1
    }

    fn cached(&self, digest: &str) -> Option<Arc<Source>> {
        let checked = self.checked.lock().unwrap_or_else(|e| e.into_inner());
        checked.get(digest).cloned()
    }

    fn keep(&self, digest: &str, make: impl FnOnce() -> Source) -> Result<Arc<Source>, Error> {
        let mut checked = self.checked.lock().unwrap_or_else(|e| e.into_inner());
        Ok(checked
            .entry(digest.to_string())
            .or_insert_with(|| Arc::new(make()))
            .clone())
    }
}
