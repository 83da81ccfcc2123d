//! The registry verbs: `key`, `push`, `pull`, `list`, `verify`, `sign`,
//! `gc`, and `inspect` of a `registry:` reference (docs/REGISTRY.md).

use super::args::KeyCommand;
use crate::assembly::signed;
use anyhow::{Context, Result, bail};
use registry::{Kind, Name, Policy, PublicKey, Record, Registry, SecretKey};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Runs `tensor-wasm key ...`.
pub fn key(
    command: KeyCommand,
    data_dir: impl Fn(Option<PathBuf>) -> Result<PathBuf>,
) -> Result<()> {
    match command {
        KeyCommand::Generate { out, comment } => {
            let key = SecretKey::generate()?;
            key.save(&out, &comment)?;
            println!(
                "wrote {} (secret, 0600) and {}.pub; key id {}",
                out.display(),
                out.display(),
                key.public().id()
            );
        }
        KeyCommand::List { data_dir: dir } => {
            let registry = Registry::open(&data_dir(dir)?)?;
            let mut policy = Policy::default();
            policy.read_file(&registry.trust_file())?;
            for (key, _) in &policy.trusted {
                let state = if policy.revoked.contains(&key.id()) {
                    "revoked"
                } else {
                    "trusted"
                };
                println!("{}  {state}  {key}", key.id());
            }
            for id in policy
                .revoked
                .iter()
                .filter(|id| !policy.trusted.iter().any(|(k, _)| &k.id() == *id))
            {
                println!("{id}  revoked");
            }
        }
        KeyCommand::Trust { key, data_dir: dir } => {
            let registry = Registry::open(&data_dir(dir)?)?;
            let public = PublicKey::load(&key)?;
            append(
                &registry.trust_file(),
                &format!("trust {public} {}", key.display()),
            )?;
            println!("trusting key {}", public.id());
        }
        KeyCommand::Revoke { id, data_dir: dir } => {
            if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                bail!("`{id}` is not a key id (16 hex digits, as `tensor-wasm key list` prints)");
            }
            let registry = Registry::open(&data_dir(dir)?)?;
            append(
                &registry.trust_file(),
                &format!("revoke {}", id.to_ascii_lowercase()),
            )?;
            println!("revoked key {id}: its signatures no longer count");
        }
    }
    Ok(())
}

fn append(path: &Path, line: &str) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    writeln!(file, "{line}").with_context(|| format!("cannot write {}", path.display()))
}

/// What `tensor-wasm push` was asked.
pub struct Push<'a> {
    /// The file, or `None` for the artifact already stored as `name`.
    pub file: Option<&'a Path>,
    /// `NAME:VERSION`.
    pub name: &'a str,
    /// `component`, `world`, `kernel` or `model`.
    pub kind: Option<&'a str>,
    /// A secret key to sign with.
    pub sign: Option<&'a Path>,
    /// An OCI registry to push to as well.
    pub to: Option<&'a str>,
}

/// Runs `tensor-wasm push`.
pub fn push(args: &Push, data_dir: &Path) -> Result<()> {
    let name = Name::parse(args.name)?;
    let remote = args.to.map(registry::oci::Remote::parse).transpose()?;
    let registry = Registry::open(data_dir)?;
    let key = args.sign.map(SecretKey::load).transpose()?;
    let push_to = |bytes: bytes::Bytes, store: &(dyn Fn() -> registry::Result<Record> + Sync)| {
        match &remote {
            Some(remote) => {
                let (record, url) = registry::oci::push(remote, bytes, store)?;
                println!("{}", describe(&record));
                println!("pushed to {remote} ({url})");
            }
            None => println!("{}", describe(&store()?)),
        }
        anyhow::Ok(())
    };
    let Some(file) = args.file else {
        if let Some(key) = &key {
            registry.sign(&name, key)?;
        }
        let artifact = registry.fetch(args.name)?;
        let record = artifact.record.expect("fetched by name");
        return push_to(artifact.bytes.into(), &|| Ok(record.clone()));
    };
    let kind = match args.kind {
        Some(k) => Kind::parse(k)?,
        None if file.is_dir() => Kind::Model,
        None if file.extension().is_some_and(|e| e == "wac") => Kind::World,
        None => Kind::Component,
    };
    let bytes = if file.is_dir() {
        if kind != Kind::Model {
            bail!(
                "{} is a folder: only a model (--kind model) is pushed as one",
                file.display()
            );
        }
        registry::model::manifest(file)?
    } else {
        std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?
    };
    if kind == Kind::Component {
        crate::platform::load::check_component_bytes(&file.display().to_string(), &bytes)?;
    }
    let bytes = bytes::Bytes::from(bytes);
    push_to(bytes.clone(), &|| {
        registry.push(&bytes, &name, kind, key.as_ref())
    })
}

/// Runs `tensor-wasm pull`.
pub fn pull(reference: &str, output: Option<&Path>, data_dir: &Path) -> Result<()> {
    let registry = Registry::open(data_dir)?;
    let (bytes, digest) = if reference.starts_with("oci://") {
        let remote = registry::oci::Remote::parse(reference)?;
        let pulled = registry::oci::pull(&remote, output.is_some())?;
        let name = Name::parse(&remote.local_name())?;
        let record = registry.import(&pulled.packed, pulled.record, &name, Kind::Component)?;
        println!("{}", describe(&record));
        (pulled.bytes, record.digest)
    } else {
        let Some(_) = output else {
            bail!("{reference} is already in the registry; give -o FILE to write its bytes");
        };
        let artifact = registry.fetch(reference)?;
        (artifact.bytes, artifact.digest.to_string())
    };
    if let Some(output) = output {
        std::fs::write(output, &bytes)
            .with_context(|| format!("cannot write {}", output.display()))?;
        println!("{digest} -> {} ({} bytes)", output.display(), bytes.len());
    }
    Ok(())
}

/// Runs `tensor-wasm list`.
pub fn list(data_dir: &Path) -> Result<()> {
    for record in Registry::open(data_dir)?.list()? {
        println!("{}", describe(&record));
    }
    Ok(())
}

/// Runs `tensor-wasm verify`: fails unless intact and signed by a trusted
/// key. A local file or model folder is checked as `serve` would.
pub fn verify(reference: &str, trust_keys: &[PathBuf], data_dir: &Path) -> Result<()> {
    let registry = Registry::open(data_dir)?;
    let policy = signed::policy(&registry, trust_keys, true)?;
    let local = Path::new(reference);
    if local.is_dir() {
        registry.check_model(reference, local, &policy)?;
        println!("{reference}: ok: model folder signed by a trusted key");
        return Ok(());
    } else if local.is_file() {
        registry.check_file(local, &policy)?;
        println!("{reference}: ok: signed by a trusted key");
        return Ok(());
    }
    let artifact = registry.fetch(reference)?;
    let Some(record) = &artifact.record else {
        bail!("{reference}: refused: it is unsigned (no record names it)");
    };
    match policy.check(record) {
        Ok(key) => {
            println!(
                "{reference}: ok: {} signed by trusted key {key}",
                artifact.digest
            );
            Ok(())
        }
        Err(why) => bail!("{reference}: refused: {why}"),
    }
}

/// Runs `tensor-wasm sign`.
pub fn sign(name: &str, key: &Path, data_dir: &Path) -> Result<()> {
    let key = SecretKey::load(key)?;
    let record = Registry::open(data_dir)?.sign(&Name::parse(name)?, &key)?;
    println!("{}", describe(&record));
    Ok(())
}

/// Runs `tensor-wasm gc`.
pub fn gc(data_dir: &Path) -> Result<()> {
    let (count, bytes) = Registry::open(data_dir)?.gc()?;
    println!("deleted {count} unreferenced blob(s), {bytes} bytes");
    Ok(())
}

/// For `inspect registry:REF`: prints the record and returns the checked
/// checkout to inspect.
pub fn checkout_for_inspect(reference: &str, data_dir: &Path) -> Result<PathBuf> {
    let registry = Registry::open(data_dir)?;
    if let Some(record) = registry.record(reference)? {
        println!("{}", describe(&record));
    }
    Ok(registry.checkout(reference, &Policy::default())?)
}

/// One line: name, kind, digest, size, signers.
pub fn describe(record: &Record) -> String {
    let signers: Vec<&str> = record.signatures.iter().map(|s| s.key.as_str()).collect();
    format!(
        "{}  {}  {}  {} bytes  signed by: {}",
        record.name,
        record.kind.as_str(),
        record.digest,
        record.size,
        if signers.is_empty() {
            "nobody".to_string()
        } else {
            signers.join(", ")
        }
    )
}
