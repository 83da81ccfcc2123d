//! The index: which name points at which digest, with what signatures.
//! One JSON file (`index.json`), rewritten whole through a temporary file
//! and a rename while holding `index.lock`, so concurrent pushes from
//! several processes never lose an entry.

use crate::digest::Digest;
use crate::error::{Error, Result, io};
use crate::name::Name;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What an artifact is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A Wasm component.
    Component,
    /// A `.wac` world.
    World,
    /// A CUDA kernel module (source and its declarations).
    Kernel,
    /// A model manifest.
    Model,
}

impl Kind {
    /// Parses `component | world | kernel | model`.
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "component" => Ok(Self::Component),
            "world" => Ok(Self::World),
            "kernel" => Ok(Self::Kernel),
            "model" => Ok(Self::Model),
            other => Err(Error::Invalid(format!(
                "`{other}` is not a kind (component, world, kernel or model)"
            ))),
        }
    }

    /// Its name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Component => "component",
            Self::World => "world",
            Self::Kernel => "kernel",
            Self::Model => "model",
        }
    }
}

/// A signature on a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    /// The signer's key id.
    pub key: String,
    /// The signer's public key (`ed25519:HEX`).
    pub public: String,
    /// 128 hex digits over [`crate::keys::statement`].
    pub signature: String,
}

/// One named artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// `repo:version`.
    pub name: String,
    /// What it is.
    pub kind: Kind,
    /// Its content address.
    pub digest: String,
    /// Uncompressed bytes.
    pub size: u64,
    /// When it was pushed (Unix seconds).
    pub created: u64,
    /// Who signed it.
    #[serde(default)]
    pub signatures: Vec<Signature>,
}

impl Record {
    /// The bytes its signatures cover.
    pub fn statement(&self) -> Vec<u8> {
        crate::keys::statement(&self.name, self.kind.as_str(), &self.digest, self.created)
    }

    /// Its digest, parsed.
    pub fn digest(&self) -> Result<Digest> {
        Digest::parse(&self.digest)
    }
}

/// The index file and its lock.
#[derive(Debug, Clone)]
pub struct Index {
    file: PathBuf,
    lock: PathBuf,
}

type Records = BTreeMap<String, Record>;

impl Index {
    /// The index in `dir`.
    pub fn open(dir: &Path) -> Self {
        Self {
            file: dir.join("index.json"),
            lock: dir.join("index.lock"),
        }
    }

    /// Every record, by name.
    pub fn all(&self) -> Result<Records> {
        match std::fs::read(&self.file) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                Error::Corrupt(format!("{} does not parse: {e}", self.file.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Records::new()),
            Err(e) => Err(io(format!("cannot read {}", self.file.display()))(e)),
        }
    }

    /// The record named `name`.
    pub fn get(&self, name: &Name) -> Result<Record> {
        self.all()?
            .remove(&name.to_string())
            .ok_or_else(|| Error::NotFound(format!("no artifact named {name} in the registry")))
    }

    /// Changes the index under its lock: `change` gets every record and
    /// returns what to hand back; the new set is written only if it succeeds.
    pub fn update<T>(&self, change: impl FnOnce(&mut Records) -> Result<T>) -> Result<T> {
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock)
            .map_err(io(format!("cannot open {}", self.lock.display())))?;
        lock.lock()
            .map_err(io(format!("cannot lock {}", self.lock.display())))?;
        let mut records = self.all()?;
        let out = change(&mut records)?;
        let text = serde_json::to_vec_pretty(&records).expect("records serialize");
        let tmp = self
            .file
            .with_extension(format!("json.{}.tmp", std::process::id()));
        std::fs::write(&tmp, text).map_err(io(format!("cannot write {}", tmp.display())))?;
        std::fs::rename(&tmp, &self.file)
            .map_err(io(format!("cannot replace {}", self.file.display())))?;
        Ok(out)
    }
}
