//! Pushing to and pulling from a real OCI registry (Debian's
//! `docker-registry`, distribution 2.8, which scripts/test.sh installs) on
//! 127.0.0.1: a signed component crosses to a clean data dir, verifies and
//! serves; an unsigned one crosses unsigned and is refused by `verify`.

use crate::registry::{ok, tw};
use crate::support::{Server, guest, scratch};
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

/// A registry, two data dirs (two machines) and a key.
fn two_machines(name: &str) -> (std::path::PathBuf, OciRegistry, String, String, String) {
    let dir = scratch(name);
    let oci = OciRegistry::start(&dir);
    let data = |n: &str| dir.join(n).display().to_string();
    let (a, b, key) = (data("a"), data("b"), data("k"));
    ok(&format!("key generate --out {key}"));
    (dir, oci, a, b, key)
}

#[test]
fn a_signed_component_crosses_an_oci_registry_and_serves_on_a_clean_machine() {
    let (dir, oci, a, b, key) = two_machines("oci");
    let hello = guest("hello");
    let url = format!("oci://{}/acme/hello:1.0.0", oci.addr);
    let out = ok(&format!(
        "push {} --name acme/hello:1.0.0 --sign {key} --to {url} --data-dir {a}",
        hello.display()
    ));
    assert!(out.contains("pushed to"), "{out}");
    let out = ok(&format!("pull {url} --data-dir {b}"));
    assert!(
        out.contains("acme/hello:1.0.0") && !out.contains("signed by: nobody"),
        "{out}"
    );
    ok(&format!(
        "verify acme/hello:1.0.0 --trust-key {key}.pub --data-dir {b}"
    ));
    let kpub = format!("{key}.pub");
    let args = [
        "registry:acme/hello:1.0.0",
        "--trust-key",
        &kpub,
        "--data-dir",
        &b,
    ];
    let server = Server::start(&args, &dir.join("cache"));
    assert_eq!(server.get("/hello").text().trim(), "Hello from TensorWasm!");
    drop(server);
    let pulled = dir.join("pulled.wasm");
    ok(&format!(
        "pull {url} -o {} --data-dir {b}",
        pulled.display()
    ));
    assert_eq!(
        std::fs::read(&pulled).unwrap(),
        std::fs::read(&hello).unwrap()
    );
}

#[test]
fn unsigned_and_missing_oci_artifacts_are_told_apart() {
    let (_dir, oci, a, b, key) = two_machines("oci-unsigned");
    let plain = format!("oci://{}/acme/plain:1", oci.addr);
    let hello = guest("hello").display().to_string();
    ok(&format!(
        "push {hello} --name acme/plain:1 --to {plain} --data-dir {a}"
    ));
    ok(&format!("pull {plain} --data-dir {b}"));
    let (code, out) = tw(&format!(
        "verify acme/plain:1 --trust-key {key}.pub --data-dir {b}"
    ));
    assert!(code != 0 && out.contains("unsigned"), "{out}");
    let (code, out) = tw(&format!(
        "pull oci://{}/acme/none:1 --data-dir {b}",
        oci.addr
    ));
    assert!(code != 0 && out.contains("pull of oci://"), "{out}");
    let (code, out) = tw(&format!("pull oci://no-tag --data-dir {b}"));
    assert!(code != 0 && out.contains("oci://"), "{out}");
}
