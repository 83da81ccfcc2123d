//! Released WIT packages never change. `wit/FROZEN.sha256` lists the SHA-256
//! of every file of every released package (`sha256sum -c` format, paths
//! relative to `wit/`); this test fails when a listed file changed or went
//! missing, or when a file was added to a released package's directory.
//! To change an interface, cut a new version instead (docs/WIT.md).

use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::path::Path;

fn wit_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit")
}

#[test]
fn released_wit_packages_are_unchanged() {
    let wit = wit_dir();
    let list = std::fs::read_to_string(wit.join("FROZEN.sha256")).expect("wit/FROZEN.sha256");
    let mut listed = BTreeSet::new();
    let mut packages = BTreeSet::new();
    let mut problems = Vec::new();
    for line in list
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
    {
        let (digest, file) = line.split_once("  ").expect("`<sha256>  <path>` lines");
        listed.insert(file.to_string());
        packages.insert(file.split('/').next().unwrap().to_string());
        match std::fs::read(wit.join(file)) {
            Ok(bytes) => {
                let actual = hex(&Sha256::digest(&bytes));
                if actual != digest {
                    problems.push(format!(
                        "{file} changed (sha256 {actual}, released as {digest})"
                    ));
                }
            }
            Err(_) => problems.push(format!("{file} is missing")),
        }
    }
    for package in &packages {
        for entry in std::fs::read_dir(wit.join(package)).unwrap() {
            let name = format!("{package}/{}", entry.unwrap().file_name().to_string_lossy());
            if !listed.contains(&name) {
                problems.push(format!("{name} was added to a released package"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "released WIT packages must not change; cut a new version instead (docs/WIT.md):\n  {}",
        problems.join("\n  ")
    );
    for want in [
        "tensor-0.1.0",
        "cuda-0.1.0",
        "scheduler-0.1.0",
        "platform-0.1.0",
        "inference-0.1.0",
        "inference-0.2.0",
        "tensor-fused-0.1.0",
        "tensor-fused-0.1.1",
        "tensor-fused-0.1.2",
        "tensor-fused-0.1.3",
    ] {
        assert!(
            packages.contains(want),
            "{want} is not in wit/FROZEN.sha256"
        );
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every package resolves together with the vendored WASI deps, and the
/// platform worlds exist: what a third party copies into its own `wit/deps`.
#[test]
fn wit_packages_resolve_with_their_deps() {
    let wit = wit_dir();
    let mut resolve = wit_parser::Resolve::default();
    for dep in [
        "io",
        "clocks",
        "random",
        "filesystem",
        "sockets",
        "cli",
        "http",
        "config",
    ] {
        resolve
            .push_path(wit.join("deps").join(dep))
            .unwrap_or_else(|e| panic!("wit/deps/{dep}: {e:#}"));
    }
    for package in [
        "tensor-0.1.0",
        "scheduler-0.1.0",
        "cuda-0.1.0",
        "platform-0.1.0",
        "inference-0.1.0",
        "inference-0.2.0",
        "tensor-fused-0.1.0",
        "tensor-fused-0.1.1",
        "tensor-fused-0.1.2",
        "tensor-fused-0.1.3",
    ] {
        resolve
            .push_path(wit.join(package))
            .unwrap_or_else(|e| panic!("wit/{package}: {e:#}"));
    }
    let platform = resolve
        .packages
        .iter()
        .find(|(_, p)| p.name.to_string() == "tensorwasm:platform@0.1.0")
        .map(|(id, _)| id)
        .expect("tensorwasm:platform@0.1.0");
    for world in ["gpu-service", "tensor-job"] {
        let id = resolve
            .select_world(&[platform], Some(world))
            .unwrap_or_else(|e| panic!("{world}: {e:#}"));
        let imports: Vec<String> = resolve.worlds[id]
            .imports
            .keys()
            .map(|k| resolve.name_world_key(k))
            .collect();
        for want in [
            "wasi:tensor/ops@0.1.0",
            "wasi:cuda/kernels@0.1.0",
            "wasi:scheduler/cooperative@0.1.0",
        ] {
            assert!(
                imports.iter().any(|i| i == want),
                "{world} lacks {want}: {imports:?}"
            );
        }
    }
    let inference = resolve
        .packages
        .iter()
        .find(|(_, p)| p.name.to_string() == "tensorwasm:inference@0.1.0")
        .map(|(id, _)| id)
        .expect("tensorwasm:inference@0.1.0");
    for (world, export) in [
        ("embedding-model", "tensorwasm:inference/embeddings@0.1.0"),
        ("generation-model", "tensorwasm:inference/generation@0.1.0"),
    ] {
        let id = resolve
            .select_world(&[inference], Some(world))
            .unwrap_or_else(|e| panic!("{world}: {e:#}"));
        let exports: Vec<String> = resolve.worlds[id]
            .exports
            .keys()
            .map(|k| resolve.name_world_key(k))
            .collect();
        assert!(exports.iter().any(|e| e == export), "{world}: {exports:?}");
    }
}
