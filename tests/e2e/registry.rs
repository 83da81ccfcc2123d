//! The signed registry end to end: keys, push/sign/verify/list/pull/gc, and
//! `serve` of registry references and local files under a trust policy, with
//! every refusal one clear line before anything listens.

use crate::support::{Server, bin, guest, run, scratch};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `tensor-wasm serve ARGS` (space-separated) must fail before listening;
/// returns its stderr.
pub fn refused(args: &str) -> String {
    let mut child = Command::new(bin())
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "off"])
        .args(args.split_whitespace())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > until {
            child.kill().unwrap();
            panic!("serve {args} was expected to refuse but kept running");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `tensor-wasm ARGS` (space-separated): (exit code, stdout + stderr).
pub fn tw(args: &str) -> (i32, String) {
    let args: Vec<&str> = args.split_whitespace().collect();
    let (code, out, err) = run(&args);
    (code, out + &err)
}

/// Runs `tensor-wasm ARGS`, which must succeed; its output.
pub fn ok(args: &str) -> String {
    let (code, out) = tw(args);
    assert_eq!(code, 0, "{args}: {out}");
    out
}

/// Runs `tensor-wasm ARGS`, which must fail saying `why`.
pub fn fails(args: &str, why: &str) {
    let (code, out) = tw(args);
    assert!(
        code != 0 && out.contains(why),
        "{args}: expected `{why}`, got: {out}"
    );
}

/// A data dir with `acme/hello:1.0.0` signed by key `k` and
/// `acme/unsigned:1` unsigned.
struct Setup {
    dir: PathBuf,
    data: String,
    kpub: String,
    opub: String,
    id: String,
}

fn setup(name: &str) -> Setup {
    let dir = scratch(name);
    let data = dir.join("data").display().to_string();
    let (k, other) = (
        dir.join("k").display().to_string(),
        dir.join("other").display().to_string(),
    );
    let out = ok(&format!("key generate --out {k}"));
    let id = out.rsplit("key id ").next().unwrap().trim().to_string();
    ok(&format!("key generate --out {other}"));
    let (hello, hostile) = (
        guest("hello").display().to_string(),
        guest("hostile").display().to_string(),
    );
    let pushed = ok(&format!(
        "push {hello} --name acme/hello:1.0.0 --sign {k} --data-dir {data}"
    ));
    assert!(pushed.contains(&format!("signed by: {id}")), "{pushed}");
    ok(&format!(
        "push {hostile} --name acme/unsigned:1 --data-dir {data}"
    ));
    Setup {
        kpub: format!("{k}.pub"),
        opub: format!("{other}.pub"),
        dir,
        data,
        id,
    }
}

#[test]
fn verify_passes_only_for_a_trusted_signer() {
    let Setup {
        data: d,
        kpub,
        opub,
        ..
    } = setup("registry-verify");
    assert!(ok(&format!("list --data-dir {d}")).contains("acme/unsigned:1"));
    ok(&format!(
        "verify acme/hello:1.0.0 --trust-key {kpub} --data-dir {d}"
    ));
    fails(
        &format!("verify acme/hello:1.0.0 --trust-key {opub} --data-dir {d}"),
        "untrusted keys",
    );
    fails(
        &format!("verify acme/unsigned:1 --trust-key {kpub} --data-dir {d}"),
        "unsigned",
    );
}

#[test]
fn serve_runs_signed_artifacts_and_refuses_the_rest_under_a_policy() {
    let Setup {
        dir,
        data: d,
        kpub: k,
        ..
    } = setup("registry-serve");
    let cache = dir.join("cache");
    let c = cache.display();
    let server = Server::start(
        &[
            "registry:acme/hello:1.0.0",
            "--trust-key",
            &k,
            "--data-dir",
            &d,
        ],
        &cache,
    );
    assert_eq!(server.get("/hello").text().trim(), "Hello from TensorWasm!");
    drop(server);
    let err = refused(&format!(
        "registry:acme/unsigned:1 --trust-key {k} --data-dir {d} --cache-dir {c}"
    ));
    assert!(
        err.contains("acme/unsigned:1: refused: it is unsigned"),
        "{err}"
    );
    // A local file runs under the policy only if a trusted record has its digest.
    let hostile = guest("hostile").display().to_string();
    let err = refused(&format!(
        "{hostile} --trust-key {k} --data-dir {d} --cache-dir {c}"
    ));
    assert!(
        err.contains("hostile.wasm") && err.contains("refused"),
        "{err}"
    );
    let hello = guest("hello").display().to_string();
    let server = Server::start(&[&hello, "--trust-key", &k, "--data-dir", &d], &cache);
    assert_eq!(server.get("/hello").status, 200);
    drop(server);
    // Without any policy an unsigned artifact (here the hostile guest)
    // serves as a path would.
    let server = Server::start(&["registry:acme/unsigned:1", "--data-dir", &d], &cache);
    assert_eq!(server.get("/ok").text(), "ok\n");
}

#[test]
fn require_signed_deployments_follow_the_trust_file_and_revocation() {
    let Setup {
        dir,
        data: d,
        kpub,
        id,
        ..
    } = setup("registry-trust");
    let cache = dir.join("cache");
    let file = crate::support::deployment_file(
        &dir,
        "[[deployment]]\nname = \"shop\"\ntenant = \"acme\"\ncomponent = \"registry:acme/hello:1.0.0\"\nrequire-signed = true\n",
    );
    let args = format!(
        "{} --data-dir {d} --cache-dir {}",
        file.display(),
        cache.display()
    );
    let err = refused(&args);
    assert!(
        err.contains("deployment `shop`") && err.contains("untrusted keys"),
        "{err}"
    );
    ok(&format!("key trust {kpub} --data-dir {d}"));
    assert!(ok(&format!("key list --data-dir {d}")).contains(&format!("{id}  trusted")));
    let server = Server::start(&[file.to_str().unwrap(), "--data-dir", &d], &cache);
    assert_eq!(server.get("/hello").status, 200);
    drop(server);
    ok(&format!("key revoke {id} --data-dir {d}"));
    assert!(refused(&args).contains(&format!("signing key {id} is revoked")));
}

#[test]
fn malformed_names_and_files_are_refused_at_push() {
    let dir = scratch("registry-names");
    let d = dir.join("data").display().to_string();
    let hello = guest("hello").display().to_string();
    fails(
        &format!("push {hello} --name ../etc/passwd:1 --data-dir {d}"),
        "artifact name",
    );
    fails(
        &format!("push {hello} --name acme/x --data-dir {d}"),
        "REPO:VERSION",
    );
    let junk = dir.join("junk.wasm");
    std::fs::write(&junk, b"not wasm").unwrap();
    fails(
        &format!("push {} --name acme/junk:1 --data-dir {d}", junk.display()),
        "not a WebAssembly file",
    );
    fails(
        &format!("pull acme/none:1 -o {} --data-dir {d}", junk.display()),
        "no artifact named",
    );
}

#[test]
fn tampered_and_missing_blobs_get_one_clear_error_and_gc_collects() {
    let dir = scratch("registry-bad");
    let data = dir.join("data");
    let (d, c) = (
        data.display().to_string(),
        dir.join("cache").display().to_string(),
    );
    let hello = guest("hello");
    let h = hello.display().to_string();
    let out = ok(&format!("push {h} --name acme/hello:1 --data-dir {d}"));
    let digest = out
        .split_whitespace()
        .find(|w| w.starts_with("blake3:"))
        .unwrap()
        .to_string();
    let blob = data
        .join("registry/blobs")
        .join(format!("{}.zst", &digest["blake3:".len()..]));
    let pulled = dir.join("pulled.wasm");
    ok(&format!(
        "pull {digest} -o {} --data-dir {d}",
        pulled.display()
    ));
    assert_eq!(
        std::fs::read(&pulled).unwrap(),
        std::fs::read(&hello).unwrap()
    );
    // Swapped bytes behind the digest: reported, never served.
    std::fs::write(&blob, zstd_frame_of(b"\0asm evil")).unwrap();
    fails(
        &format!("pull acme/hello:1 -o {} --data-dir {d}", pulled.display()),
        "is corrupt",
    );
    let err = refused(&format!(
        "registry:acme/hello:1 --data-dir {d} --cache-dir {c}"
    ));
    assert!(err.contains("is corrupt"), "{err}");
    // A name whose blob is gone; a name that is not there.
    std::fs::remove_file(&blob).unwrap();
    let err = refused(&format!(
        "registry:acme/hello:1 --data-dir {d} --cache-dir {c}"
    ));
    assert!(err.contains("not in the registry"), "{err}");
    let err = refused(&format!(
        "registry:acme/nothing:1 --data-dir {d} --cache-dir {c}"
    ));
    assert!(err.contains("no artifact named acme/nothing:1"), "{err}");
    // gc deletes what no name points at.
    ok(&format!("push {h} --name acme/hello:1 --data-dir {d}"));
    let hostile = guest("hostile").display().to_string();
    ok(&format!(
        "push {hostile} --name acme/hello:1 --data-dir {d}"
    ));
    assert!(ok(&format!("gc --data-dir {d}")).contains("deleted 1 unreferenced blob"));
    assert!(!Path::new(&blob).exists());
}

/// A zstd frame holding `bytes` as one raw block (what a blob file holds).
pub fn zstd_frame_of(bytes: &[u8]) -> Vec<u8> {
    assert!(bytes.len() < 256);
    // Magic; frame header: single segment, 1-byte content size.
    let mut out = vec![0x28, 0xb5, 0x2f, 0xfd, 0x20, bytes.len() as u8];
    let header = ((bytes.len() as u32) << 3) | 1; // the last block, raw
    out.extend_from_slice(&header.to_le_bytes()[..3]);
    out.extend_from_slice(bytes);
    out
}

#[test]
fn concurrent_pushes_from_many_processes_all_land() {
    let dir = scratch("registry-concurrent");
    let d = dir.join("data").display().to_string();
    let hello = guest("hello").display().to_string();
    // Eight processes at once: the same bytes under eight names, and the
    // same name from all eight.
    let children: Vec<_> = (0..8)
        .flat_map(|i| {
            [format!("acme/copy{i}:1"), "acme/same:1".to_string()].map(|name| {
                Command::new(bin())
                    .args(["push", &hello, "--name", &name, "--data-dir", &d])
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let list = ok(&format!("list --data-dir {d}"));
    for i in 0..8 {
        assert!(list.contains(&format!("acme/copy{i}:1")), "{list}");
    }
    assert_eq!(list.lines().count(), 9, "{list}");
    let out = dir.join("out.wasm");
    ok(&format!(
        "pull acme/same:1 -o {} --data-dir {d}",
        out.display()
    ));
    assert_eq!(std::fs::read(out).unwrap(), std::fs::read(&hello).unwrap());
    // One blob for all nine names; nothing for gc.
    assert!(ok(&format!("gc --data-dir {d}")).contains("deleted 0 unreferenced"));
}

/// A models dir with model `tiny`: a valid two-float safetensors file and a
/// config.
fn tiny_model(dir: &Path) -> PathBuf {
    let models = dir.join("models");
    let tiny = models.join("tiny");
    std::fs::create_dir_all(&tiny).unwrap();
    let mut header = br#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#.to_vec();
    header.resize(header.len().next_multiple_of(8), b' ');
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(&header);
    file.extend_from_slice(&[0, 0, 128, 63, 0, 0, 0, 64]);
    std::fs::write(tiny.join("model.safetensors"), file).unwrap();
    std::fs::write(tiny.join("config.json"), b"{}").unwrap();
    models
}

#[test]
fn granted_model_folders_run_only_when_their_manifest_is_signed() {
    let Setup {
        dir,
        data: d,
        kpub: k,
        ..
    } = setup("registry-models");
    let models = tiny_model(&dir);
    let file = crate::support::deployment_file(
        &dir,
        "[[deployment]]\nname = \"m\"\ntenant = \"acme\"\ncomponent = \"registry:acme/hello:1.0.0\"\n\
         grants = { models = [\"tiny\"] }\n",
    );
    let (m, c) = (models.display(), dir.join("cache"));
    let args = format!(
        "{} --models-dir {m} --trust-key {k} --data-dir {d}",
        file.display()
    );
    let err = refused(&args);
    assert!(
        err.contains("model `tiny`") && err.contains("unsigned"),
        "{err}"
    );
    let key = dir.join("k").display().to_string();
    let pushed = ok(&format!(
        "push {m}/tiny --name acme/tiny:1 --sign {key} --data-dir {d}"
    ));
    assert!(pushed.contains("acme/tiny:1  model"), "{pushed}");
    ok(&format!("verify {m}/tiny --trust-key {k} --data-dir {d}"));
    let server = Server::start(&args.split_whitespace().collect::<Vec<_>>(), &c);
    assert_eq!(server.get("/hello").status, 200);
    drop(server);
    // One changed byte of the weights: refused, by serve and by verify.
    let weights = models.join("tiny/model.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    *bytes.last_mut().unwrap() ^= 1;
    std::fs::write(&weights, bytes).unwrap();
    assert!(refused(&format!("{args} --cache-dir {}", c.display())).contains("model `tiny`"));
    fails(
        &format!("verify {m}/tiny --trust-key {k} --data-dir {d}"),
        "refused",
    );
}
