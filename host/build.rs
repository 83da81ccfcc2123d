//! Builds the guest components in `../components` for `wasm32-wasip2` so the
//! host can embed the default world. The guests have their own workspace and
//! target directory (`../target/guests`); this script runs a nested
//! `cargo build --release` there and tells rustc where the `.wasm` files are.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets this"));
    let root = manifest.parent().expect("host/ sits in the workspace root");
    let components = root.join("components");
    let target_dir = root.join("target").join("guests");
    for watched in ["components", "wit", "worlds"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }

    ensure_target();
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&components)
        .args(["build", "--release", "--target", TARGET])
        .arg("--target-dir")
        .arg(&target_dir);
    // The outer build's settings (target, flags, profile) must not leak into
    // the guest build.
    for (key, _) in env::vars() {
        let inherited =
            key.starts_with("CARGO_") && key != "CARGO_HOME" && key != "CARGO_MAKEFLAGS";
        if inherited || key.starts_with("RUSTC") || key == "RUSTFLAGS" || key == "RUSTDOC" {
            cmd.env_remove(&key);
        }
    }
    let status = cmd
        .status()
        .expect("failed to run cargo for the guest components");
    if !status.success() {
        panic!(
            "building the guest components in {} failed",
            components.display()
        );
    }
    let out = target_dir.join(TARGET).join("release");
    println!("cargo:rustc-env=TW_GUEST_DIR={}", out.display());
}

/// Adds the wasm32-wasip2 target through rustup when it is missing.
fn ensure_target() {
    let sysroot = Command::new(env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let present = sysroot
        .map(|s| Path::new(&s).join("lib/rustlib").join(TARGET).exists())
        .unwrap_or(false);
    if !present {
        let ok = Command::new("rustup")
            .args(["target", "add", TARGET])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            panic!("the {TARGET} target is missing; run `rustup target add {TARGET}`");
        }
    }
}
