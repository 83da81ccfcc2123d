//! Deploy-time pre-initialization (`wizer-initialize`): the component is run
//! once at load and every request's fresh instance starts from its snapshot;
//! an initializer that traps, spins or exhausts memory is a clear error for
//! that deployment, and the server does not start with it.

use crate::support::*;
use std::path::Path;

/// A deployment file serving `init-probe` with `INIT_MODE=mode`.
fn deployment(dir: &Path, mode: &str) -> String {
    deployment_reusing(dir, mode, 1)
}

/// The same, each instance serving up to `reuse` requests.
fn deployment_reusing(dir: &Path, mode: &str, reuse: u32) -> String {
    let file = dir.join(format!("{mode}.toml"));
    std::fs::write(
        &file,
        format!(
            r#"
[[deployment]]
name = "probe"
tenant = "acme"
component = {probe:?}
limits = {{ timeout = "2s", memory = "32MiB" }}
instances = {{ reuse = {reuse} }}

[deployment.grants]
env = {{ INIT_MODE = "{mode}" }}
"#,
            probe = guest("init_probe"),
        ),
    )
    .unwrap();
    file.display().to_string()
}

/// The first deployment's initializer already sees the keyvalue store: the
/// store is the server's, open before any deployment pre-initializes.
#[test]
fn an_initializer_sees_the_keyvalue_store() {
    let dir = scratch("preinit_keyvalue");
    let file = deployment(&dir, "keyvalue");
    let server = Server::start(&[&file], &dir.join("cache"));
    let r = server.get("/");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.text(),
        "initialized=yes table=332833500 requests=1 keyvalue=open\n",
        "log:\n{}",
        server.log()
    );
}

/// A warm instance started from the snapshot too, and keeps its state.
#[test]
fn reused_instances_start_from_the_initialized_snapshot() {
    let dir = scratch("preinit_reuse");
    let file = deployment_reusing(&dir, "keyvalue", 10);
    let server = Server::start(&[&file], &dir.join("cache"));
    for n in 1..=3 {
        let r = server.get("/");
        assert_eq!(
            r.text(),
            format!("initialized=yes table=332833500 requests={n} keyvalue=open\n")
        );
    }
}

#[test]
fn requests_start_from_the_initialized_snapshot_in_fresh_instances() {
    let dir = scratch("preinit_ok");
    let file = deployment(&dir, "ok");
    let cache = dir.join("cache");
    let server = Server::start(&[&file], &cache);
    for _ in 0..3 {
        let r = server.get("/");
        assert_eq!(r.status, 200, "{}", r.text());
        // The table the initializer built is there; the instance is new.
        assert_eq!(
            r.text(),
            "initialized=yes table=332833500 requests=1\n",
            "log:\n{}",
            server.log()
        );
    }
    assert!(
        server.log().contains("pre-initialized in"),
        "{}",
        server.log()
    );
    server.terminate();
    // The snapshot is deterministic, so a restart finds it compiled.
    let again = Server::start(&[&file], &cache);
    assert!(
        again.log().contains("init_probe.wasm: loaded from cache"),
        "{}",
        again.log()
    );
    assert_eq!(
        again.get("/").text(),
        "initialized=yes table=332833500 requests=1\n"
    );
}

#[test]
fn a_failing_initializer_is_a_clear_deployment_error() {
    let dir = scratch("preinit_bad");
    for (mode, want) in [
        (
            "trap",
            "the initializer trapped: wasm trap: wasm `unreachable`",
        ),
        ("spin", "it ran past the deployment's timeout (2s)"),
        ("oom", "it grew past the deployment's memory cap (32MiB)"),
    ] {
        let file = deployment(&dir, mode);
        let cache = dir.join("cache").display().to_string();
        let data = dir.join(format!("data-{mode}")).display().to_string();
        let t0 = std::time::Instant::now();
        let (code, _, stderr) = run(&[
            "serve",
            &file,
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "off",
            "--cache-dir",
            &cache,
            "--data-dir",
            &data,
        ]);
        assert_ne!(code, 0, "{mode}: the server started: {stderr}");
        let line = stderr
            .lines()
            .find(|l| l.starts_with("error:"))
            .unwrap_or_else(|| panic!("{mode}: no error line in {stderr}"));
        assert!(
            line.contains("deployment `probe`")
                && line.contains("pre-initialization (`wizer-initialize`) failed")
                && line.contains(want),
            "{mode}: {line}"
        );
        assert!(
            t0.elapsed().as_secs() < 30,
            "{mode} took {:?}",
            t0.elapsed()
        );
    }
}
