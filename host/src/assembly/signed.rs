//! Where a deployment's artifacts come from and whether they may run.
//!
//! A `registry:NAME:VERSION` (or `registry:blake3:HEX`) reference becomes a
//! checked checkout of the registry's blob (its digest re-verified). Under an
//! active trust policy — trusted keys from `--trust-key` or the registry's
//! `trust` file, or `require-signed` server-wide or per deployment — every
//! artifact a deployment names (component, world, world packages, batching
//! models) must be signed by a trusted, unrevoked key: a registry record's
//! signature, or for a local file, the signature of a record with the
//! file's digest; each granted model folder (`grants.models`), the
//! signature of a `model` record with its manifest's digest (every file's
//! BLAKE3, `registry::model`). The components built into the binary (the default world,
//! built-in packages) are trusted as the binary is. Nothing is half-started:
//! the first refusal stops `serve` before it listens.

use crate::assembly::spec::{DeploymentSpec, ModelSource, Source};
use anyhow::{Context, Result};
use registry::{Policy, Registry};
use std::path::{Path, PathBuf};

/// The prefix of a registry reference.
pub const PREFIX: &str = "registry:";

/// Whether `path` is a registry reference rather than a file.
pub fn is_reference(path: &Path) -> bool {
    path.to_str().is_some_and(|p| p.starts_with(PREFIX))
}

/// The trust policy: the registry's `trust` file, `trust_keys`, and
/// `require_signed`.
pub fn policy(registry: &Registry, trust_keys: &[PathBuf], require_signed: bool) -> Result<Policy> {
    let mut policy = Policy {
        require_signed,
        ..Policy::default()
    };
    policy.read_file(&registry.trust_file())?;
    for key in trust_keys {
        policy
            .trust_file(key)
            .with_context(|| format!("--trust-key {}", key.display()))?;
    }
    Ok(policy)
}

/// Turns `spec`'s registry references into checked files and, under an
/// active policy, refuses any artifact (or granted model folder under
/// `models_dir`) not signed by a trusted key.
pub fn resolve(
    spec: &mut DeploymentSpec,
    registry: &Registry,
    policy: &Policy,
    models_dir: Option<&Path>,
) -> Result<()> {
    let mut policy = policy.clone();
    policy.require_signed |= spec.require_signed;
    let check = |path: &mut PathBuf| -> Result<()> {
        if let Some(reference) = path.to_str().and_then(|p| p.strip_prefix(PREFIX)) {
            *path = registry.checkout(reference, &policy)?;
        } else {
            registry.check_file(path, &policy)?;
        }
        Ok(())
    };
    match &mut spec.source {
        Source::Component(path) => check(path)?,
        Source::World(path, deps) => {
            check(path)?;
            for dep in deps.values_mut() {
                check(dep)?;
            }
        }
        Source::Embedded(_) => {}
    }
    if let Some(inference) = &mut spec.inference {
        for model in [&mut inference.embeddings, &mut inference.generation] {
            if let Some(ModelSource::Path(path)) = model {
                check(path)?;
            }
        }
    }
    // A missing model is left to the assembly (it warns and serves on).
    for name in &spec.grants.models {
        if let Some(folder) = models_dir.map(|d| d.join(name)).filter(|f| f.is_dir()) {
            registry.check_model(&format!("model `{name}`"), &folder, &policy)?;
        }
    }
    Ok(())
}
