//! Model manifests: a model folder (weights, tokenizer, config) named by
//! the BLAKE3 of every file in it. The manifest is what the registry stores
//! and signs (kind `model`); the folder is checked by computing its manifest
//! again and finding a trusted record with the same digest, so one changed
//! byte of the weights is a refusal.

use crate::digest::Digest;
use crate::error::{Error, Result, io};
use serde::Serialize;
use std::io::Read;
use std::path::Path;

/// One file of a model folder.
#[derive(Debug, Serialize)]
struct File {
    /// Its path inside the folder, `/`-separated.
    path: String,
    /// Its size in bytes.
    size: u64,
    /// BLAKE3 of its bytes.
    digest: String,
}

/// The manifest of the model folder `dir`: canonical JSON
/// (`{"files":[{path,size,digest}…]}`, sorted by path). Symbolic links are
/// refused: a signed folder must not reach outside itself.
pub fn manifest(dir: &Path) -> Result<Vec<u8>> {
    let mut files = Vec::new();
    walk(dir, "", &mut files)?;
    if files.is_empty() {
        return Err(Error::Invalid(format!(
            "model folder {} holds no files",
            dir.display()
        )));
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    #[derive(Serialize)]
    struct Manifest {
        files: Vec<File>,
    }
    Ok(serde_json::to_vec_pretty(&Manifest { files }).expect("a manifest serializes"))
}

fn walk(dir: &Path, prefix: &str, files: &mut Vec<File>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(io(format!("cannot read {}", dir.display())))?;
    for entry in entries {
        let entry = entry.map_err(io(format!("cannot read {}", dir.display())))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let inner = format!("{prefix}{name}");
        let kind = entry
            .file_type()
            .map_err(io(format!("cannot read {}", path.display())))?;
        if kind.is_symlink() {
            return Err(Error::Invalid(format!(
                "{}: a model folder may not hold symbolic links",
                path.display()
            )));
        } else if kind.is_dir() {
            walk(&path, &format!("{inner}/"), files)?;
        } else {
            let (size, digest) = hash_file(&path)?;
            files.push(File {
                path: inner,
                size,
                digest: digest.to_string(),
            });
        }
    }
    Ok(())
}

fn hash_file(path: &Path) -> Result<(u64, Digest)> {
    let mut file =
        std::fs::File::open(path).map_err(io(format!("cannot open {}", path.display())))?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .map_err(io(format!("cannot read {}", path.display())))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, Digest(*hasher.finalize().as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_byte_changes_the_manifest() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("model.safetensors"), b"weights").unwrap();
        std::fs::write(dir.path().join("sub/config.json"), b"{}").unwrap();
        let a = manifest(dir.path()).unwrap();
        assert_eq!(a, manifest(dir.path()).unwrap(), "deterministic");
        let text = String::from_utf8(a.clone()).unwrap();
        assert!(text.contains("\"sub/config.json\""), "{text}");
        std::fs::write(dir.path().join("model.safetensors"), b"weightz").unwrap();
        assert_ne!(a, manifest(dir.path()).unwrap());
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink("/etc/passwd", dir.path().join("link")).unwrap();
            assert!(manifest(dir.path()).is_err());
        }
    }
}
