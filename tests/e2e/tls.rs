//! TLS and mTLS on the listeners, with certificates `rcgen` makes here and
//! `curl` as the client: HTTP/2 and HTTP/1.1 over ALPN, a wrong CA, plain
//! HTTP to the TLS port, the certificate reloaded when its files change,
//! client certificates verified (unknown CA and expired ones refused), and
//! the verified identity reaching the gateway world, where `auth` admits by
//! it and a client's forged copy of the header never counts.

use crate::support::*;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A CA and the files it signed, in one folder.
pub(crate) struct Pki {
    pub dir: PathBuf,
    ca: Issuer<'static, KeyPair>,
}

impl Pki {
    /// A new CA named `name`, its certificate in `DIR/NAME-ca.pem`.
    pub fn new(dir: &Path, name: &str) -> Pki {
        std::fs::create_dir_all(dir).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name
            .push(DnType::CommonName, format!("{name} CA"));
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = p.self_signed(&key).unwrap();
        std::fs::write(dir.join(format!("{name}-ca.pem")), cert.pem()).unwrap();
        Pki {
            dir: dir.to_path_buf(),
            ca: Issuer::new(p, key),
        }
    }

    /// A certificate for `sans` (`127.0.0.1`, `localhost`, `spiffe://…`),
    /// written to `DIR/FILE.pem` and `DIR/FILE.key`; `expired` makes one
    /// whose validity ended yesterday.
    pub fn issue(&self, file: &str, sans: &[&str], expired: bool) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, file);
        p.subject_alt_names = sans
            .iter()
            .map(|s| {
                if let Ok(ip) = s.parse() {
                    SanType::IpAddress(ip)
                } else if s.contains("://") {
                    SanType::URI((*s).try_into().unwrap())
                } else {
                    SanType::DnsName((*s).try_into().unwrap())
                }
            })
            .collect();
        if expired {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let cert = p.signed_by(&key, &self.ca).unwrap();
        let (pem, k) = (
            self.dir.join(format!("{file}.pem")),
            self.dir.join(format!("{file}.key")),
        );
        std::fs::write(&pem, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (pem, k)
    }
}

/// `curl ARGS URL`: (exit code, status line's HTTP version, status, body).
fn curl(args: &[&str], url: &str) -> (i32, String, u16, String) {
    let out = Command::new("curl")
        .args([
            "-s",
            "-m",
            "10",
            "-o",
            "-",
            "-w",
            "\n%{http_version} %{http_code}",
        ])
        .args(args)
        .arg(url)
        .output()
        .expect("curl (scripts/test.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, tail) = text.rsplit_once('\n').unwrap_or(("", &text));
    let mut tail = tail.split(' ');
    let version = tail.next().unwrap_or("").to_string();
    let status = tail.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    (
        out.status.code().unwrap_or(-1),
        version,
        status,
        body.to_string(),
    )
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn https_with_h2_and_http1_a_wrong_ca_plain_http_and_a_reloaded_certificate() {
    let dir = scratch("tls-basics");
    let pki = Pki::new(&dir.join("pki"), "first");
    let other = Pki::new(&dir.join("pki"), "other");
    let (cert, key) = pki.issue("server", &["127.0.0.1", "localhost"], false);
    let server = Server::start(
        &[
            guest("hello").to_str().unwrap(),
            "--tls-cert",
            path(&cert),
            "--tls-key",
            path(&key),
            "--max-body-size",
            "64KiB",
        ],
        &dir,
    );
    let url = format!("https://{}/hello", server.addr);
    let ca = dir.join("pki/first-ca.pem");
    let other_ca = dir.join("pki/other-ca.pem");

    // ALPN picks HTTP/2 when offered, HTTP/1.1 otherwise.
    let (code, version, status, body) = curl(&["--cacert", path(&ca), "--http2"], &url);
    assert_eq!((code, status), (0, 200), "{body}");
    assert_eq!(version, "2");
    assert!(body.contains("Hello"), "{body}");
    let (code, version, status, _) = curl(&["--cacert", path(&ca), "--http1.1"], &url);
    assert_eq!((code, version.as_str(), status), (0, "1.1", 200));
    // Answers given before the request body is read reach an HTTP/2 client
    // (the stream is reset after the response, with NO_ERROR, not before
    // it): hello answers a POST 404 without reading it; one past
    // --max-body-size gets 413 from its length alone.
    for (name, size, want) in [("small", 48 << 10, 404), ("large", 4 << 20, 413)] {
        let file = dir.join(name);
        std::fs::write(&file, vec![b'x'; size]).unwrap();
        let data = format!("@{}", path(&file));
        for _ in 0..10 {
            let args = ["--cacert", path(&ca), "--http2", "--data-binary", &data];
            let (code, version, status, _) = curl(&args, &url);
            assert_eq!((code, version.as_str(), status), (0, "2", want), "{name}");
        }
    }
    // The admin listener speaks TLS with the same certificate.
    let admin = format!("https://{}/healthz", server.admin);
    assert_eq!(curl(&["--cacert", path(&ca)], &admin).2, 200);

    // A client that trusts another CA refuses the server (curl: 60).
    let (code, _, _, _) = curl(&["--cacert", path(&other_ca)], &url);
    assert_eq!(code, 60, "curl should not trust the server");

    // Plain HTTP to the TLS port: a plain 400 saying so, then the
    // connection closes; TLS clients go on being served.
    let plain = try_request(server.addr, "GET", "/hello", &[], b"").expect("a plain answer");
    assert_eq!(plain.status, 400);
    assert!(plain.text().contains("use https://"), "{}", plain.text());
    assert_eq!(curl(&["--cacert", path(&ca)], &url).2, 200);
    assert!(
        metric(
            &admin_metrics(&server, &ca),
            "tensorwasm_connections_closed_total",
            &["listener=\"serving\"", "reason=\"tls_failed\""]
        ) >= 1.0
    );

    // New files are picked up while serving: rotated to a certificate of
    // the other CA, clients of the first CA now refuse, the other's accept.
    let (new_cert, new_key) = other.issue("server2", &["127.0.0.1"], false);
    std::fs::copy(&new_key, &key).unwrap();
    std::fs::copy(&new_cert, &cert).unwrap();
    let until = Instant::now() + Duration::from_secs(15);
    while curl(&["--cacert", path(&other_ca)], &url).0 != 0 {
        assert!(
            Instant::now() < until,
            "the new certificate was not picked up: {}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(curl(&["--cacert", path(&ca)], &url).0, 60);
    // A broken file is logged, and the last good certificate stays.
    std::fs::write(&cert, "not a certificate").unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(curl(&["--cacert", path(&other_ca)], &url).2, 200);
    assert!(
        server.log().contains("keeping the old ones"),
        "{}",
        server.log()
    );
}

fn admin_metrics(server: &Server, ca: &Path) -> String {
    curl(
        &["--cacert", path(ca)],
        &format!("https://{}/metrics", server.admin),
    )
    .3
}

#[test]
fn bad_tls_flags_are_clear_errors_at_start() {
    let dir = scratch("tls-flags");
    let pki = Pki::new(&dir, "flags");
    let (cert, key) = pki.issue("server", &["127.0.0.1"], false);
    let junk = dir.join("junk.pem");
    std::fs::write(&junk, "hello").unwrap();
    let hello = guest("hello");
    for (args, says) in [
        (vec!["--tls-cert", path(&cert)], "--tls-key"),
        (
            vec!["--tls-cert", path(&junk), "--tls-key", path(&key)],
            "no certificate in it",
        ),
        (
            vec!["--tls-cert", path(&cert), "--tls-key", path(&junk)],
            "no private key",
        ),
        (
            vec!["--tls-cert", path(&cert), "--tls-key", path(&cert)],
            "no private key",
        ),
        (
            vec![
                "--tls-cert",
                path(&cert),
                "--tls-key",
                path(&key),
                "--tls-client-ca",
                path(&junk),
            ],
            "--tls-client-ca",
        ),
    ] {
        let mut all = vec!["serve", hello.to_str().unwrap(), "--listen", "127.0.0.1:0"];
        all.extend(args.iter().copied());
        all.extend(["--admin-listen", "off"]);
        let (code, _, err) = run(&all);
        assert_ne!(code, 0, "{args:?} started");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn mtls_verifies_clients_and_auth_admits_by_certificate_identity() {
    let dir = scratch("tls-mtls");
    let data = dir.join("data");
    let pki = Pki::new(&dir.join("pki"), "corp");
    let rogue = Pki::new(&dir.join("pki"), "rogue");
    let (cert, key) = pki.issue("server", &["127.0.0.1"], false);
    let billing = pki.issue("billing", &["spiffe://example.org/billing"], false);
    let reports = pki.issue("reports", &["reports.internal"], false);
    let stranger = pki.issue("stranger", &["spiffe://example.org/stranger"], false);
    let expired = pki.issue("old", &["spiffe://example.org/billing"], true);
    let forged = rogue.issue("forged", &["spiffe://example.org/billing"], false);
    let ca = dir.join("pki/corp-ca.pem");
    let file = deployment_file(
        &dir,
        &format!(
            r#"
[[deployment]]
name = "gw"
tenant = "acme"
world = {world:?}

[deployment.grants]
config = {{ "router.routes" = "* /hello app; POST /echo app", "audit.policy" = "all" }}
secrets = {{ "auth.identities" = "billing spiffe://example.org/billing read write:/echo; reports reports.internal read" }}
"#,
            world = root().join("worlds/gateway.wac"),
        ),
    );
    let server = Server::start(
        &[
            path(&file),
            "--data-dir",
            path(&data),
            "--tls-cert",
            path(&cert),
            "--tls-key",
            path(&key),
            "--tls-client-ca",
            path(&ca),
        ],
        &dir.join("cache"),
    );
    let base = format!("https://{}", server.addr);
    let with = |(c, k): &(PathBuf, PathBuf), extra: &[&str], route: &str| {
        let mut args = vec!["--cacert", path(&ca), "--cert", path(c), "--key", path(k)];
        args.extend_from_slice(extra);
        curl(&args, &format!("{base}{route}"))
    };

    // Known identities get their scopes: billing may POST /echo, reports
    // may only read.
    assert_eq!(with(&billing, &[], "/hello").2, 200);
    let echoed = with(&billing, &["-d", "paid"], "/echo");
    assert_eq!((echoed.2, echoed.3.as_str()), (200, "paid"), "{echoed:?}");
    assert_eq!(with(&reports, &[], "/hello").2, 200);
    // An upload the gateway refuses without reading it: the 403 reaches
    // the client over HTTP/2 (every time: it was often lost, curl exit 92).
    for _ in 0..10 {
        let denied = with(&reports, &["--http2", "-d", "x"], "/echo");
        assert_eq!((denied.0, denied.2), (0, 403), "{denied:?}");
        assert!(denied.3.contains("insufficient_scope"), "{denied:?}");
    }
    // A verified certificate that no entry names is anonymous: 401.
    assert_eq!(with(&stranger, &[], "/hello").2, 401);
    // Its own copy of the identity header is replaced by its certificate's.
    let spoof = with(
        &reports,
        &[
            "-H",
            "x-client-identity: spiffe://example.org/billing",
            "-d",
            "x",
        ],
        "/echo",
    );
    assert_eq!(spoof.2, 403, "{spoof:?}");

    // Refused at the handshake: no certificate, one of another CA, an
    // expired one (curl reports a TLS or receive failure, never a status).
    for (name, args) in [
        ("none", vec!["--cacert", path(&ca)]),
        (
            "rogue CA",
            vec![
                "--cacert",
                path(&ca),
                "--cert",
                path(&forged.0),
                "--key",
                path(&forged.1),
            ],
        ),
        (
            "expired",
            vec![
                "--cacert",
                path(&ca),
                "--cert",
                path(&expired.0),
                "--key",
                path(&expired.1),
            ],
        ),
    ] {
        let (code, _, status, body) = curl(&args, &format!("{base}/hello"));
        assert!(code != 0 && status == 0, "{name}: {code} {status} {body}");
    }
    let metrics_url = format!("https://{}/metrics", server.admin);
    let m = curl(
        &[
            "--cacert",
            path(&ca),
            "--cert",
            path(&billing.0),
            "--key",
            path(&billing.1),
        ],
        &metrics_url,
    )
    .3;
    assert!(
        metric(
            &m,
            "tensorwasm_connections_closed_total",
            &["listener=\"serving\"", "reason=\"tls_failed\""]
        ) >= 3.0,
        "{m}"
    );
    // And everyone else is still served.
    assert_eq!(with(&billing, &[], "/hello").2, 200);

    // The audit log names the entry and the certificate identity.
    drop(server);
    let (code, out, err) = run(&["audit", "query", "--data-dir", path(&data)]);
    assert_eq!(code, 0, "{err}");
    let records: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let paid = records
        .iter()
        .find(|r| r["method"] == "POST" && r["token"] == "billing")
        .unwrap_or_else(|| panic!("{out}"));
    assert_eq!(paid["client_identity"], "spiffe://example.org/billing");
    assert!(
        records
            .iter()
            .all(|r| r["client_identity"] != "spiffe://example.org/billing"
                || r["token"] == "billing"),
        "a forged header reached the audit log: {out}"
    );
}

#[test]
fn optional_mtls_admits_token_clients_and_strips_forged_identities() {
    let dir = scratch("tls-optional");
    let pki = Pki::new(&dir.join("pki"), "opt");
    let (cert, key) = pki.issue("server", &["127.0.0.1"], false);
    let billing = pki.issue("billing", &["spiffe://example.org/billing"], false);
    let ca = dir.join("pki/opt-ca.pem");
    let token = "tok-optional-1";
    let file = deployment_file(
        &dir,
        &format!(
            r#"
[[deployment]]
name = "gw"
tenant = "acme"
world = {world:?}

[deployment.grants]
config = {{ "router.routes" = "* /hello app" }}
secrets = {{ "auth.tokens" = "ci {hash} read", "auth.identities" = "billing spiffe://example.org/billing read" }}
"#,
            world = root().join("worlds/gateway.wac"),
            hash = tensor_wasm::platform::token::hash(token),
        ),
    );
    let server = Server::start(
        &[
            path(&file),
            "--tls-cert",
            path(&cert),
            "--tls-key",
            path(&key),
            "--tls-client-ca",
            path(&ca),
            "--tls-client-auth",
            "optional",
        ],
        &dir.join("cache"),
    );
    let url = format!("https://{}/hello", server.addr);
    let auth = format!("authorization: Bearer {token}");
    // Without a certificate: the token admits, a forged identity does not.
    assert_eq!(curl(&["--cacert", path(&ca), "-H", &auth], &url).2, 200);
    assert_eq!(curl(&["--cacert", path(&ca)], &url).2, 401);
    let forged = curl(
        &[
            "--cacert",
            path(&ca),
            "-H",
            "x-client-identity: spiffe://example.org/billing",
        ],
        &url,
    );
    assert_eq!(forged.2, 401, "{forged:?}");
    // With one: the certificate admits.
    let cert_args = [
        "--cacert",
        path(&ca),
        "--cert",
        path(&billing.0),
        "--key",
        path(&billing.1),
    ];
    assert_eq!(curl(&cert_args, &url).2, 200);
}
