//! `tensor-wasm kernel publish|list|verify`: vetted `wasi:cuda` kernel
//! modules in the registry (docs/KERNELS.md).

use super::args::KernelCommand;
use super::registry::{Push, describe, push};
use crate::assembly::signed;
use crate::cuda::library::Library;
use crate::cuda::signature::{self, Signature};
use crate::cuda::vetted;
use anyhow::{Context, Result, bail};
use registry::{Kind, Registry};
use std::path::{Path, PathBuf};

/// Runs `tensor-wasm kernel ...`.
pub fn run(
    command: KernelCommand,
    data_dir: impl Fn(Option<PathBuf>) -> Result<PathBuf>,
) -> Result<()> {
    match command {
        KernelCommand::Publish {
            file,
            name,
            sign,
            to,
            data_dir: dir,
        } => {
            check_source(&file)?;
            let args = Push {
                file: Some(&file),
                name: &name,
                kind: Some(Kind::Kernel.as_str()),
                sign: sign.as_deref(),
                to: to.as_deref(),
            };
            push(&args, &data_dir(dir)?)
        }
        KernelCommand::List { data_dir: dir } => list(&data_dir(dir)?),
        KernelCommand::Verify {
            reference,
            trust_key,
            data_dir: dir,
        } => verify(&reference, &trust_key, &data_dir(dir)?),
    }
}

/// The module's declarations, each naming a kernel the source defines.
fn check_source(file: &Path) -> Result<Vec<Signature>> {
    let source =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let declared =
        signature::declared(&source).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    if declared.is_empty() {
        bail!(
            "{}: declares no kernels (add a `// @kernel name(param: kind, ...)` line per kernel; docs/KERNELS.md)",
            file.display()
        );
    }
    for s in &declared {
        if !source.contains(&format!("void {}(", s.name)) {
            bail!(
                "{}: `@kernel {}` is declared but no `extern \"C\" __global__ void {}(` is defined",
                file.display(),
                s.name,
                s.name
            );
        }
    }
    Ok(declared)
}

fn list(data_dir: &Path) -> Result<()> {
    let key = vetted::public_key()?;
    for m in vetted::MODULES {
        println!(
            "{}  built-in  blake3:{}  kernels: {}  signed by: {} (built-in key)",
            m.name,
            m.digest(),
            names(&m.signatures()),
            key.id()
        );
    }
    let registry = Registry::open(data_dir)?;
    for record in registry
        .list()?
        .into_iter()
        .filter(|r| r.kind == Kind::Kernel)
    {
        let kernels = match registry.fetch(&record.digest) {
            Ok(a) => match signature::declared(&String::from_utf8_lossy(&a.bytes)) {
                Ok(sigs) => names(&sigs),
                Err(e) => format!("(declarations do not parse: {e})"),
            },
            Err(e) => format!("({e})"),
        };
        println!("{}  kernels: {kernels}", describe(&record));
    }
    Ok(())
}

fn verify(reference: &str, trust_keys: &[PathBuf], data_dir: &Path) -> Result<()> {
    let registry = Registry::open(data_dir)?;
    let policy = signed::policy(&registry, trust_keys, true)?;
    let library = Library::new(Some(data_dir), policy)?;
    let found = match reference.strip_prefix("blake3:") {
        Some(hex) => library.by_digest(hex, true),
        None => library.by_name(reference, true),
    };
    match found {
        Ok(m) => {
            println!(
                "{reference}: ok: {} is intact, signed by a trusted key, and declares {}",
                m.name,
                names(&m.declared)
            );
            Ok(())
        }
        Err(why) => bail!("{why}"),
    }
}

fn names(sigs: &[Signature]) -> String {
    sigs.iter()
        .map(|s| s.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
