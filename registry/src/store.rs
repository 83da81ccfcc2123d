//! The registry under a data dir (`<data-dir>/registry/`): blobs, the
//! index, the `trust` file, and verified checkouts the host serves from.

use crate::blobs::{Blobs, Packed};
use crate::digest::Digest;
use crate::error::{Error, Result, io};
use crate::index::{Index, Kind, Record, Signature};
use crate::keys::SecretKey;
use crate::name::Name;
use crate::trust::Policy;
use std::path::{Path, PathBuf};

/// A registry on disk.
#[derive(Debug, Clone)]
pub struct Registry {
    root: PathBuf,
    blobs: Blobs,
    index: Index,
}

/// An artifact read back: its record and its checked bytes.
#[derive(Debug)]
pub struct Artifact {
    /// The record it was found by (for a bare digest, the first record that
    /// names it, if any).
    pub record: Option<Record>,
    /// Its digest.
    pub digest: Digest,
    /// Its bytes, checked against the digest.
    pub bytes: Vec<u8>,
}

impl Registry {
    /// The registry in `<data_dir>/registry` (created when missing).
    pub fn open(data_dir: &Path) -> Result<Self> {
        let root = data_dir.join("registry");
        let blobs = Blobs::open(&root.join("blobs"))?;
        Ok(Self {
            index: Index::open(&root),
            blobs,
            root,
        })
    }

    /// Its directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The `trust` file.
    pub fn trust_file(&self) -> PathBuf {
        self.root.join("trust")
    }

    /// Stores `bytes` as `name` (replacing what the name pointed at), signed
    /// with `key` if given.
    pub fn push(
        &self,
        bytes: &[u8],
        name: &Name,
        kind: Kind,
        key: Option<&SecretKey>,
    ) -> Result<Record> {
        // The blob is written under the index lock, so a concurrent `gc`
        // cannot delete it before its name points at it.
        self.index.update(|records| {
            let digest = self.blobs.put(bytes)?;
            let mut record = Record {
                name: name.to_string(),
                kind,
                digest: digest.to_string(),
                size: bytes.len() as u64,
                created: now(),
                signatures: Vec::new(),
            };
            if let Some(key) = key {
                record.signatures.push(signature(&record, key));
            }
            records.insert(record.name.clone(), record.clone());
            Ok(record)
        })
    }

    /// Stores an artifact fetched from elsewhere (packed as it arrived):
    /// under its own record (signatures kept, its digest and size checked
    /// against the bytes) or, without one, unsigned as `name`.
    pub fn import(
        &self,
        packed: &Packed,
        record: Option<Record>,
        name: &Name,
        kind: Kind,
    ) -> Result<Record> {
        let record = match record {
            Some(record) => {
                Name::parse(&record.name)?;
                if record.digest()? != packed.digest || record.size != packed.size {
                    return Err(Error::Corrupt(format!(
                        "the record of {} names {} ({} bytes) but the bytes are {} ({} bytes)",
                        record.name, record.digest, record.size, packed.digest, packed.size
                    )));
                }
                record
            }
            None => Record {
                name: name.to_string(),
                kind,
                digest: packed.digest.to_string(),
                size: packed.size,
                created: now(),
                signatures: Vec::new(),
            },
        };
        self.index.update(|records| {
            self.blobs.put_packed(packed)?;
            records.insert(record.name.clone(), record.clone());
            Ok(record)
        })
    }

    /// Adds `key`'s signature to the record named `name`.
    pub fn sign(&self, name: &Name, key: &SecretKey) -> Result<Record> {
        self.index.update(|records| {
            let record = records.get_mut(&name.to_string()).ok_or_else(|| {
                Error::NotFound(format!("no artifact named {name} in the registry"))
            })?;
            let id = key.public().id();
            record.signatures.retain(|s| s.key != id);
            let sig = signature(record, key);
            record.signatures.push(sig);
            Ok(record.clone())
        })
    }

    /// Every record, by name.
    pub fn list(&self) -> Result<Vec<Record>> {
        Ok(self.index.all()?.into_values().collect())
    }

    /// The record a reference names: `REPO:VERSION` or `blake3:HEX`.
    pub fn record(&self, reference: &str) -> Result<Option<Record>> {
        if reference.starts_with("blake3:") {
            let digest = Digest::parse(reference)?;
            let found = self
                .list()?
                .into_iter()
                .find(|r| r.digest == digest.to_string());
            if found.is_none() && !self.blobs.has(&digest) {
                return Err(Error::NotFound(format!(
                    "{reference} is not in the registry"
                )));
            }
            return Ok(found);
        }
        self.index.get(&Name::parse(reference)?).map(Some)
    }

    /// The artifact a reference names, its bytes checked.
    pub fn fetch(&self, reference: &str) -> Result<Artifact> {
        let record = self.record(reference)?;
        let digest = match &record {
            Some(r) => r.digest()?,
            None => Digest::parse(reference)?,
        };
        let bytes = self.blobs.get(&digest).map_err(|e| match e {
            Error::NotFound(_) => Error::NotFound(format!(
                "{reference} points at {digest}, which is not in the registry"
            )),
            other => other,
        })?;
        Ok(Artifact {
            record,
            digest,
            bytes,
        })
    }

    /// Checks `reference` against `policy` (when active) and writes its bytes
    /// to `checkout/<hex>.<ext>`; returns that path.
    pub fn checkout(&self, reference: &str, policy: &Policy) -> Result<PathBuf> {
        let artifact = self.fetch(reference)?;
        if policy.active() {
            let record = artifact.record.as_ref().ok_or_else(|| {
                Error::Refused(format!(
                    "{reference}: refused: it is unsigned (no record names it)"
                ))
            })?;
            policy
                .check(record)
                .map_err(|why| Error::Refused(format!("{reference}: refused: {why}")))?;
        }
        let ext = match artifact.record.as_ref().map(|r| r.kind) {
            Some(Kind::World) => "wac",
            Some(Kind::Kernel) => "cu",
            Some(Kind::Model) => "json",
            _ => "wasm",
        };
        let dir = self.root.join("checkout");
        std::fs::create_dir_all(&dir).map_err(io(format!("cannot create {}", dir.display())))?;
        let path = dir.join(format!("{}.{ext}", artifact.digest.hex()));
        let tmp = dir.join(format!(
            ".{}.{}.tmp",
            artifact.digest.hex(),
            std::process::id()
        ));
        std::fs::write(&tmp, &artifact.bytes)
            .map_err(io(format!("cannot write {}", tmp.display())))?;
        std::fs::rename(&tmp, &path).map_err(io(format!("cannot write {}", path.display())))?;
        Ok(path)
    }

    /// Under an active `policy`, whether the file at `path` may run: some
    /// record for its digest must be signed by a trusted key.
    pub fn check_file(&self, path: &Path, policy: &Policy) -> Result<()> {
        if !policy.active() {
            return Ok(());
        }
        let bytes = std::fs::read(path).map_err(io(format!("cannot read {}", path.display())))?;
        self.check_digest(&path.display().to_string(), &Digest::of(&bytes), policy)
    }

    /// Under an active `policy`, whether the model folder `dir` may be
    /// used: a trusted record must sign its manifest ([`crate::model`]).
    pub fn check_model(&self, label: &str, dir: &Path, policy: &Policy) -> Result<()> {
        if !policy.active() {
            return Ok(());
        }
        let manifest = crate::model::manifest(dir)?;
        self.check_digest(label, &Digest::of(&manifest), policy)
    }

    /// Whether a record of `digest` is signed by a key `policy` trusts.
    fn check_digest(&self, label: &str, digest: &Digest, policy: &Policy) -> Result<()> {
        let digest = digest.to_string();
        let records: Vec<Record> = self
            .list()?
            .into_iter()
            .filter(|r| r.digest == digest)
            .collect();
        let mut why = crate::trust::Refusal::Unsigned;
        for record in &records {
            match policy.check(record) {
                Ok(_) => return Ok(()),
                Err(refusal) => why = refusal,
            }
        }
        Err(Error::Refused(format!(
            "{label} ({digest}): refused: {why}"
        )))
    }

    /// Deletes blobs no name points at; returns how many and their bytes
    /// on disk.
    pub fn gc(&self) -> Result<(usize, u64)> {
        self.index.update(|records| {
            let live: std::collections::BTreeSet<String> =
                records.values().map(|r| r.digest.clone()).collect();
            let (mut count, mut bytes) = (0, 0);
            for digest in self.blobs.list()? {
                if !live.contains(&digest.to_string()) {
                    bytes += self.blobs.remove(&digest)?;
                    count += 1;
                }
            }
            Ok((count, bytes))
        })
    }
}

fn signature(record: &Record, key: &SecretKey) -> Signature {
    let public = key.public();
    Signature {
        key: public.id(),
        public: public.to_string(),
        signature: key.sign(&record.statement()),
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::Refusal;

    #[test]
    fn push_sign_verify_revoke_and_gc() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::open(dir.path()).unwrap();
        let name = Name::parse("acme/shop:1.0.0").unwrap();
        let key = SecretKey::generate().unwrap();
        let record = reg.push(b"v1", &name, Kind::Component, Some(&key)).unwrap();
        let mut policy = Policy::default();
        assert!(!policy.active());
        policy.require_signed = true;
        assert_eq!(
            policy.check(&record),
            Err(Refusal::UnknownKey(vec![key.public().id()]))
        );
        policy.trusted.push((key.public(), "test".into()));
        assert_eq!(policy.check(&record), Ok(key.public().id()));
        assert!(reg.checkout("acme/shop:1.0.0", &policy).is_ok());
        let by_digest = reg.fetch(&record.digest).unwrap();
        assert_eq!(by_digest.bytes, b"v1");
        // A signature moved to another name does not verify.
        let mut moved = record.clone();
        moved.name = "acme/shop:9.9.9".into();
        assert_eq!(
            policy.check(&moved),
            Err(Refusal::BadSignature(key.public().id()))
        );
        // Unsigned, then signed later.
        let other = Name::parse("acme/other:1").unwrap();
        let unsigned = reg.push(b"v2", &other, Kind::Component, None).unwrap();
        assert_eq!(policy.check(&unsigned), Err(Refusal::Unsigned));
        let signed = reg.sign(&other, &key).unwrap();
        assert!(policy.check(&signed).is_ok());
        policy.revoked.insert(key.public().id());
        assert_eq!(
            policy.check(&signed),
            Err(Refusal::RevokedKey(key.public().id()))
        );
        // Re-pointing a name leaves its old blob for gc.
        reg.push(b"v3", &name, Kind::Component, None).unwrap();
        assert_eq!(reg.gc().unwrap().0, 1);
        assert!(reg.fetch(&record.digest).is_err());
        assert!(matches!(reg.fetch("acme/none:1"), Err(Error::NotFound(_))));
    }

    #[test]
    fn concurrent_pushes_keep_every_name() {
        let dir = tempfile::tempdir().unwrap();
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let path = dir.path().to_path_buf();
                std::thread::spawn(move || {
                    let reg = Registry::open(&path).unwrap();
                    for j in 0..10 {
                        let name = Name::parse(&format!("t/n{i}:{j}")).unwrap();
                        reg.push(b"same bytes", &name, Kind::Component, None)
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let reg = Registry::open(dir.path()).unwrap();
        assert_eq!(reg.list().unwrap().len(), 80);
        assert_eq!(reg.fetch("t/n3:7").unwrap().bytes, b"same bytes");
    }
}
