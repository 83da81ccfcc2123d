//! Pushing to and pulling from a real OCI registry (Debian's
//! `docker-registry`, distribution 2.8, which scripts/test.sh installs) on
//! 127.0.0.1: a signed component crosses to a clean data dir, verifies and
//! serves; an unsigned one crosses unsigned and is refused by `verify`.

use crate::support::{Server, guest, run, scratch};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `docker-registry` on a free port, stopped on drop.
struct OciRegistry {
    child: Child,
    addr: String,
}

impl OciRegistry {
    fn start(dir: &std::path::Path) -> OciRegistry {
        let bin = ["/usr/bin/docker-registry", "/usr/sbin/docker-registry"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("docker-registry is missing: scripts/test.sh installs it (apt-get install docker-registry)");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
                dir.join("storage").display()
            ),
        )
        .unwrap();
        let child = Command::new(bin)
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let until = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(
                Instant::now() < until,
                "docker-registry did not start on {addr}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        OciRegistry { child, addr }
    }
}

impl Drop for OciRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ok(args: &[&str]) -> String {
    let (code, out, err) = run(args);
    assert_eq!(code, 0, "{args:?}: {out}{err}");
    out
}

#[test]
fn a_signed_component_crosses_an_oci_registry_and_serves_on_a_clean_machine() {
    let dir = scratch("oci");
    let oci = OciRegistry::start(&dir);
    let (a, b) = (dir.join("a"), dir.join("b"));
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    let key = dir.join("k");
    ok(&["key", "generate", "--out", key.to_str().unwrap()]);
    let kpub = format!("{}.pub", key.display());
    let hello = guest("hello");
    let url = format!("oci://{}/acme/hello:1.0.0", oci.addr);
    let out = ok(&[
        "push",
        hello.to_str().unwrap(),
        "--name",
        "acme/hello:1.0.0",
        "--sign",
        key.to_str().unwrap(),
        "--to",
        &url,
        "--data-dir",
        a,
    ]);
    assert!(out.contains("pushed to"), "{out}");

    let out = ok(&["pull", &url, "--data-dir", b]);
    assert!(
        out.contains("acme/hello:1.0.0") && !out.contains("signed by: nobody"),
        "{out}"
    );
    ok(&[
        "verify",
        "acme/hello:1.0.0",
        "--trust-key",
        &kpub,
        "--data-dir",
        b,
    ]);
    let server = Server::start(
        &[
            "registry:acme/hello:1.0.0",
            "--trust-key",
            &kpub,
            "--data-dir",
            b,
        ],
        &dir.join("cache"),
    );
    assert_eq!(server.get("/hello").text().trim(), "Hello from TensorWasm!");
    drop(server);
    let pulled = dir.join("pulled.wasm");
    ok(&[
        "pull",
        &url,
        "-o",
        pulled.to_str().unwrap(),
        "--data-dir",
        b,
    ]);
    assert_eq!(
        std::fs::read(&pulled).unwrap(),
        std::fs::read(&hello).unwrap()
    );

    // Unsigned: crosses as unsigned; verify refuses it.
    let plain = format!("oci://{}/acme/plain:1", oci.addr);
    ok(&[
        "push",
        hello.to_str().unwrap(),
        "--name",
        "acme/plain:1",
        "--to",
        &plain,
        "--data-dir",
        a,
    ]);
    ok(&["pull", &plain, "--data-dir", b]);
    let (code, _, err) = run(&[
        "verify",
        "acme/plain:1",
        "--trust-key",
        &kpub,
        "--data-dir",
        b,
    ]);
    assert!(code != 0 && err.contains("unsigned"), "{err}");

    // A tag that is not there, and a malformed reference: one clear error each.
    let (code, _, err) = run(&[
        "pull",
        &format!("oci://{}/acme/none:1", oci.addr),
        "--data-dir",
        b,
    ]);
    assert!(code != 0 && err.contains("pull of oci://"), "{err}");
    let (code, _, err) = run(&["pull", "oci://no-tag", "--data-dir", b]);
    assert!(code != 0 && err.contains("oci://"), "{err}");
}
