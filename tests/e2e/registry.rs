//! The signed registry end to end: keys, push/sign/verify/list/pull/gc, and
//! `serve` of registry references and local files under a trust policy, with
//! every refusal one clear line before anything listens.

use crate::support::{Server, bin, guest, run, scratch};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `tensor-wasm serve ARGS` must fail before listening; returns its stderr.
fn refused(args: &[&str]) -> String {
    let mut child = Command::new(bin())
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "off"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > until {
            child.kill().unwrap();
            panic!("serve {args:?} was expected to refuse but kept running");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn ok(args: &[&str]) -> String {
    let (code, out, err) = run(args);
    assert_eq!(code, 0, "{args:?}: {out}{err}");
    out
}

fn key_id(out: &str) -> String {
    out.rsplit("key id ").next().unwrap().trim().to_string()
}

#[test]
fn signed_artifacts_serve_and_everything_else_is_refused_under_a_policy() {
    let dir = scratch("registry-policy");
    let data = dir.join("data");
    let d = data.to_str().unwrap();
    let (k, other) = (dir.join("k"), dir.join("other"));
    let id = key_id(&ok(&["key", "generate", "--out", k.to_str().unwrap()]));
    ok(&["key", "generate", "--out", other.to_str().unwrap()]);
    let (kpub, opub) = (
        format!("{}.pub", k.display()),
        format!("{}.pub", other.display()),
    );
    let hello = guest("hello");
    let pushed = ok(&[
        "push",
        hello.to_str().unwrap(),
        "--name",
        "acme/hello:1.0.0",
        "--sign",
        k.to_str().unwrap(),
        "--data-dir",
        d,
    ]);
    assert!(pushed.contains(&format!("signed by: {id}")), "{pushed}");
    ok(&[
        "push",
        guest("hostile").to_str().unwrap(),
        "--name",
        "acme/unsigned:1",
        "--data-dir",
        d,
    ]);
    assert!(ok(&["list", "--data-dir", d]).contains("acme/unsigned:1"));

    // verify: exit 0 only for a trusted signer.
    ok(&[
        "verify",
        "acme/hello:1.0.0",
        "--trust-key",
        &kpub,
        "--data-dir",
        d,
    ]);
    let (code, _, err) = run(&[
        "verify",
        "acme/hello:1.0.0",
        "--trust-key",
        &opub,
        "--data-dir",
        d,
    ]);
    assert!(code != 0 && err.contains("untrusted keys"), "{err}");
    let (code, _, err) = run(&[
        "verify",
        "acme/unsigned:1",
        "--trust-key",
        &kpub,
        "--data-dir",
        d,
    ]);
    assert!(code != 0 && err.contains("unsigned"), "{err}");

    // serve by name, under the policy.
    let cache = dir.join("cache");
    let server = Server::start(
        &[
            "registry:acme/hello:1.0.0",
            "--trust-key",
            &kpub,
            "--data-dir",
            d,
        ],
        &cache,
    );
    assert_eq!(server.get("/hello").text().trim(), "Hello from TensorWasm!");
    drop(server);
    let c = cache.to_str().unwrap();
    let err = refused(&[
        "registry:acme/unsigned:1",
        "--trust-key",
        &kpub,
        "--data-dir",
        d,
        "--cache-dir",
        c,
    ]);
    assert!(
        err.contains("acme/unsigned:1: refused: it is unsigned"),
        "{err}"
    );
    // A local file: runs under the policy only if a trusted record has its digest.
    let err = refused(&[
        guest("hostile").to_str().unwrap(),
        "--trust-key",
        &kpub,
        "--data-dir",
        d,
        "--cache-dir",
        c,
    ]);
    assert!(
        err.contains("hostile.wasm") && err.contains("refused"),
        "{err}"
    );
    let server = Server::start(
        &[
            hello.to_str().unwrap(),
            "--trust-key",
            &kpub,
            "--data-dir",
            d,
        ],
        &cache,
    );
    assert_eq!(server.get("/hello").status, 200);
    drop(server);

    // A deployment file: `require-signed` with no trusted key, then trusted, then revoked.
    let file = crate::support::deployment_file(
        &dir,
        "[[deployment]]\nname = \"shop\"\ntenant = \"acme\"\ncomponent = \"registry:acme/hello:1.0.0\"\nrequire-signed = true\n",
    );
    let f = file.to_str().unwrap();
    let err = refused(&[f, "--data-dir", d, "--cache-dir", c]);
    assert!(
        err.contains("deployment `shop`") && err.contains("untrusted keys"),
        "{err}"
    );
    ok(&["key", "trust", &kpub, "--data-dir", d]);
    assert!(ok(&["key", "list", "--data-dir", d]).contains(&format!("{id}  trusted")));
    let server = Server::start(&[f, "--data-dir", d], &cache);
    assert_eq!(server.get("/hello").status, 200);
    drop(server);
    ok(&["key", "revoke", &id, "--data-dir", d]);
    let err = refused(&[f, "--data-dir", d, "--cache-dir", c]);
    assert!(
        err.contains(&format!("signing key {id} is revoked")),
        "{err}"
    );
    // Without any policy an unsigned artifact serves as a path would.
    let plain = dir.join("plain");
    ok(&[
        "push",
        hello.to_str().unwrap(),
        "--name",
        "acme/plain:1",
        "--data-dir",
        plain.to_str().unwrap(),
    ]);
    let server = Server::start(
        &[
            "registry:acme/plain:1",
            "--data-dir",
            plain.to_str().unwrap(),
        ],
        &cache,
    );
    assert_eq!(server.get("/hello").status, 200);
}

#[test]
fn tampered_missing_and_malformed_artifacts_get_one_clear_error() {
    let dir = scratch("registry-bad");
    let data = dir.join("data");
    let d = data.to_str().unwrap();
    let hello = guest("hello");
    let out = ok(&[
        "push",
        hello.to_str().unwrap(),
        "--name",
        "acme/hello:1",
        "--data-dir",
        d,
    ]);
    let digest = out
        .split_whitespace()
        .find(|w| w.starts_with("blake3:"))
        .unwrap()
        .to_string();
    let blob = data
        .join("registry/blobs")
        .join(format!("{}.zst", &digest["blake3:".len()..]));
    let pulled = dir.join("pulled.wasm");
    ok(&[
        "pull",
        &digest,
        "-o",
        pulled.to_str().unwrap(),
        "--data-dir",
        d,
    ]);
    assert_eq!(
        std::fs::read(&pulled).unwrap(),
        std::fs::read(&hello).unwrap()
    );

    for (name, why) in [
        ("../etc/passwd:1", "artifact name"),
        ("acme/x", "REPO:VERSION"),
    ] {
        let (code, _, err) = run(&[
            "push",
            hello.to_str().unwrap(),
            "--name",
            name,
            "--data-dir",
            d,
        ]);
        assert!(code != 0 && err.contains(why), "{name}: {err}");
    }
    let junk = dir.join("junk.wasm");
    std::fs::write(&junk, b"not wasm").unwrap();
    let (code, _, err) = run(&[
        "push",
        junk.to_str().unwrap(),
        "--name",
        "acme/junk:1",
        "--data-dir",
        d,
    ]);
    assert!(code != 0 && err.contains("not a WebAssembly file"), "{err}");

    // Swapped bytes behind the digest: reported, never served.
    std::fs::write(&blob, zstd_frame_of(b"\0asm evil")).unwrap();
    let (code, _, err) = run(&[
        "pull",
        "acme/hello:1",
        "-o",
        pulled.to_str().unwrap(),
        "--data-dir",
        d,
    ]);
    assert!(code != 0 && err.contains("is corrupt"), "{err}");
    let c = dir.join("cache");
    let err = refused(&[
        "registry:acme/hello:1",
        "--data-dir",
        d,
        "--cache-dir",
        c.to_str().unwrap(),
    ]);
    assert!(err.contains("is corrupt"), "{err}");
    // A name whose blob is gone.
    std::fs::remove_file(&blob).unwrap();
    let err = refused(&[
        "registry:acme/hello:1",
        "--data-dir",
        d,
        "--cache-dir",
        c.to_str().unwrap(),
    ]);
    assert!(err.contains("not in the registry"), "{err}");
    let err = refused(&[
        "registry:acme/nothing:1",
        "--data-dir",
        d,
        "--cache-dir",
        c.to_str().unwrap(),
    ]);
    assert!(err.contains("no artifact named acme/nothing:1"), "{err}");

    // gc deletes what no name points at.
    ok(&[
        "push",
        hello.to_str().unwrap(),
        "--name",
        "acme/hello:1",
        "--data-dir",
        d,
    ]);
    ok(&[
        "push",
        guest("hostile").to_str().unwrap(),
        "--name",
        "acme/hello:1",
        "--data-dir",
        d,
    ]);
    assert!(ok(&["gc", "--data-dir", d]).contains("deleted 1 unreferenced blob"));
    assert!(!Path::new(&blob).exists());
}

/// A zstd frame of `bytes` (what a blob file holds), made with the `zstd`
/// command-line tool's format: a raw block frame built by hand.
fn zstd_frame_of(bytes: &[u8]) -> Vec<u8> {
    // Magic, frame header (single segment, 1-byte content size), one raw
    // last block.
    assert!(bytes.len() < 256);
    let mut out = vec![0x28, 0xb5, 0x2f, 0xfd, 0x20, bytes.len() as u8];
    let header = ((bytes.len() as u32) << 3) | 1; // last block, raw
    out.extend_from_slice(&header.to_le_bytes()[..3]);
    out.extend_from_slice(bytes);
    out
}
