//! Blobs: each kept once, zstd-compressed, at `blobs/<hex>.zst`, written to a
//! temporary file and renamed into place (a reader never sees half a blob;
//! two writers of the same blob both succeed). Every read is decompressed up
//! to a cap and its digest re-checked: a corrupt, truncated or swapped blob
//! is reported, never served.

use crate::digest::Digest;
use crate::error::{Error, Result, io};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Largest blob the store takes or gives back (uncompressed).
pub const MAX_BLOB: u64 = 1 << 30;
/// zstd level: fast, and components compress ~3x at it.
const LEVEL: i32 = 3;

/// The blob directory.
#[derive(Debug, Clone)]
pub struct Blobs {
    dir: PathBuf,
    max: u64,
}

impl Blobs {
    /// Blobs under `dir` (created when missing).
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(io(format!("cannot create {}", dir.display())))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            max: MAX_BLOB,
        })
    }

    /// The same store with a smaller size cap.
    pub fn with_max(mut self, max: u64) -> Self {
        self.max = max;
        self
    }

    /// Where blob `digest` lives.
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(format!("{}.zst", digest.hex()))
    }

    /// Whether blob `digest` is stored.
    pub fn has(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    /// Stores `bytes`; returns their digest.
    pub fn put(&self, bytes: &[u8]) -> Result<Digest> {
        let mut packer = Packer::new(bytes.len() as u64);
        packer.update(bytes)?;
        self.put_packed(&packer.finish()?)
    }

    /// Stores bytes packed by a [`Packer`]; returns their digest.
    pub fn put_packed(&self, packed: &Packed) -> Result<Digest> {
        let digest = packed.digest;
        if packed.size > self.max {
            return Err(Error::Invalid(format!(
                "the artifact is {} bytes; the registry takes at most {}",
                packed.size, self.max
            )));
        }
        let path = self.path(&digest);
        if path.is_file() && self.get(&digest).is_ok() {
            return Ok(digest);
        }
        let tmp = self.dir.join(format!(
            ".{}.{}.{}.tmp",
            digest.hex(),
            std::process::id(),
            unique()
        ));
        std::fs::write(&tmp, &packed.zstd)
            .map_err(io(format!("cannot write {}", tmp.display())))?;
        std::fs::rename(&tmp, &path).map_err(io(format!("cannot store {}", path.display())))?;
        Ok(digest)
    }

    /// The bytes of blob `digest`, checked against it.
    pub fn get(&self, digest: &Digest) -> Result<Vec<u8>> {
        let path = self.path(digest);
        let file = std::fs::File::open(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                Error::NotFound(format!("blob {digest} is not in the registry"))
            }
            _ => io(format!("cannot open {}", path.display()))(e),
        })?;
        let corrupt = |why: String| Error::Corrupt(format!("blob {digest} is corrupt: {why}"));
        let decoder = zstd::stream::read::Decoder::new(file).map_err(|e| corrupt(e.to_string()))?;
        let mut bytes = Vec::new();
        decoder
            .take(self.max + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| corrupt(format!("it does not decompress ({e})")))?;
        if bytes.len() as u64 > self.max {
            return Err(corrupt(format!("it expands past {} bytes", self.max)));
        }
        let actual = Digest::of(&bytes);
        if actual != *digest {
            return Err(corrupt(format!("its bytes hash to {actual}")));
        }
        Ok(bytes)
    }

    /// Every stored digest.
    pub fn list(&self) -> Result<Vec<Digest>> {
        let entries = std::fs::read_dir(&self.dir)
            .map_err(io(format!("cannot list {}", self.dir.display())))?;
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(hex) = name.to_str().and_then(|n| n.strip_suffix(".zst")) else {
                continue;
            };
            if let Ok(d) = Digest::parse(&format!("blake3:{hex}")) {
                out.push(d);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Deletes blob `digest`; returns its size on disk.
    pub fn remove(&self, digest: &Digest) -> Result<u64> {
        let path = self.path(digest);
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        std::fs::remove_file(&path).map_err(io(format!("cannot delete {}", path.display())))?;
        Ok(size)
    }
}

/// Bytes as the store keeps them: their digest, size and zstd frame.
#[derive(Debug)]
pub struct Packed {
    /// BLAKE3 of the bytes.
    pub digest: Digest,
    /// Uncompressed size.
    pub size: u64,
    /// The zstd frame.
    pub zstd: Vec<u8>,
}

/// Hashes and compresses bytes as they arrive (a pull packs while it
/// downloads).
pub struct Packer {
    hasher: blake3::Hasher,
    encoder: zstd::stream::write::Encoder<'static, Vec<u8>>,
    size: u64,
}

impl Packer {
    /// An empty packer for about `size_hint` bytes (0: unknown).
    pub fn new(size_hint: u64) -> Self {
        // Room for incompressible bytes up front: no regrowth copies.
        let room = size_hint.min(MAX_BLOB) as usize;
        let out = Vec::with_capacity(room + room / 128 + 1024);
        Self {
            hasher: blake3::Hasher::new(),
            encoder: zstd::stream::write::Encoder::new(out, LEVEL).expect("a zstd level in range"),
            size: 0,
        }
    }

    /// Adds `chunk`.
    pub fn update(&mut self, chunk: &[u8]) -> Result<()> {
        use std::io::Write;
        self.hasher.update(chunk);
        self.size += chunk.len() as u64;
        self.encoder
            .write_all(chunk)
            .map_err(io("cannot compress".to_string()))
    }

    /// The packed bytes.
    pub fn finish(self) -> Result<Packed> {
        let zstd = self
            .encoder
            .finish()
            .map_err(io("cannot compress".to_string()))?;
        Ok(Packed {
            digest: Digest(*self.hasher.finalize().as_bytes()),
            size: self.size,
            zstd,
        })
    }
}

/// A number unique within this process (temporary file names).
fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_once_and_detects_tampering_and_bombs() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::open(dir.path()).unwrap().with_max(1 << 20);
        let d = blobs.put(b"component bytes").unwrap();
        assert_eq!(blobs.put(b"component bytes").unwrap(), d);
        assert_eq!(blobs.get(&d).unwrap(), b"component bytes");
        assert_eq!(blobs.list().unwrap(), vec![d]);
        // Swapped content: valid zstd, wrong bytes.
        std::fs::write(blobs.path(&d), zstd::bulk::compress(b"evil", 3).unwrap()).unwrap();
        assert!(matches!(blobs.get(&d), Err(Error::Corrupt(m)) if m.contains("hash to")));
        // Truncated.
        let packed = zstd::bulk::compress(&[7u8; 100_000], 3).unwrap();
        std::fs::write(blobs.path(&d), &packed[..packed.len() / 2]).unwrap();
        assert!(matches!(blobs.get(&d), Err(Error::Corrupt(_))));
        // A bomb: a few KiB that expand past the cap.
        let bomb = zstd::bulk::compress(&vec![0u8; 64 << 20], 19).unwrap();
        assert!(bomb.len() < 64 << 10);
        std::fs::write(blobs.path(&d), &bomb).unwrap();
        assert!(matches!(blobs.get(&d), Err(Error::Corrupt(m)) if m.contains("expands past")));
        let missing = Digest::of(b"nothing");
        assert!(matches!(blobs.get(&missing), Err(Error::NotFound(_))));
    }
}
