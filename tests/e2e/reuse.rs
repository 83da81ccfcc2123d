//! Warm instances (`instances = { reuse = N, idle }`,
//! `--max-instance-reuse-count`): what a request sees of earlier ones, and
//! when an instance is dropped instead of reused.

use crate::support::*;
use std::time::Duration;

/// A deployment file of `hostile` deployments `(name, tenant, instances)`,
/// each routed by the host `NAME.test`.
fn hostile_deployments(
    dir: &std::path::Path,
    deployments: &[(&str, &str, &str)],
) -> std::path::PathBuf {
    let text: String = deployments
        .iter()
        .map(|(name, tenant, instances)| {
            format!(
                "[[deployment]]\nname = \"{name}\"\ntenant = \"{tenant}\"\ncomponent = {:?}\nroute = {{ host = \"{name}.test\" }}\ninstances = {{ {instances} }}\n\n",
                guest("hostile")
            )
        })
        .collect();
    deployment_file(dir, &text)
}

/// GET `path` on `host`; the body as text (asserting a 200).
fn text(server: &Server, host: &str, path: &str) -> String {
    let r = request(server.addr, "GET", path, &[("host", host)], b"");
    assert_eq!(r.status, 200, "{host}{path}: {}", r.text());
    r.text()
}

#[test]
fn a_global_grows_with_reuse_within_its_deployment_only() {
    let dir = scratch("reuse_isolation");
    let file = hostile_deployments(
        &dir,
        &[
            ("a", "t1", "reuse = 4"),
            ("b", "t2", "reuse = 100"),
            ("fresh", "t1", ""),
            ("brief", "t1", "reuse = 100, idle = \"300ms\""),
        ],
    );
    let server = Server::start(&[file.to_str().unwrap()], &dir.join("cache"));
    let count = |host: &str| text(&server, host, "/count");

    // One instance serves `a`'s requests one after another, up to 4.
    assert_eq!(["1", "2", "3"].to_vec(), [0; 3].map(|_| count("a.test")));
    // Another deployment (another tenant) never sees `a`'s instance.
    assert_eq!(count("b.test"), "1");
    assert_eq!(count("a.test"), "4");
    // Retired after 4 requests: the next one starts over.
    assert_eq!(count("a.test"), "1");
    assert_eq!(count("b.test"), "2");
    // Without reuse every request gets a fresh instance.
    assert_eq!([0; 3].map(|_| count("fresh.test")), ["1", "1", "1"]);
    // Dropped once idle past `idle`.
    assert_eq!(count("brief.test"), "1");
    assert_eq!(count("brief.test"), "2");
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(count("brief.test"), "1");

    // The request id and client address are the current request's.
    for id in ["first-id", "second-id"] {
        let r = request(
            server.addr,
            "GET",
            "/whoami",
            &[("host", "b.test"), ("x-request-id", id)],
            b"",
        );
        assert_eq!(r.status, 200);
        assert!(
            r.text().starts_with(&format!("{id} 127.0.0.1:")),
            "{}",
            r.text()
        );
    }

    let m = server.metrics();
    let (a, b) = ("deployment=\"a\"", "deployment=\"b\"");
    assert_eq!(
        metric(&m, "tensorwasm_instance_reuses_total", &[a]),
        3.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "tensorwasm_instantiation_duration_seconds_count", &[a]),
        2.0,
        "{m}"
    );
    let retired = "reason=\"retired\"";
    assert_eq!(
        metric(&m, "tensorwasm_instance_discards_total", &[a, retired]),
        1.0,
        "{m}"
    );
    let idle = "reason=\"idle\"";
    let brief = "deployment=\"brief\"";
    assert!(
        metric(&m, "tensorwasm_instance_discards_total", &[brief, idle]) >= 1.0,
        "{m}"
    );
    assert_eq!(metric(&m, "tensorwasm_idle_instances", &[b]), 1.0, "{m}");
    assert_eq!(
        metric(
            &m,
            "tensorwasm_instance_reuses_total",
            &["deployment=\"fresh\""]
        ),
        0.0,
        "{m}"
    );
}

#[test]
fn concurrent_requests_each_get_an_instance_of_their_own() {
    let dir = scratch("reuse_concurrent");
    let server = Server::start(
        &[
            guest("hostile").to_str().unwrap(),
            "--max-instance-reuse-count",
            "1000",
        ],
        &dir,
    );
    // Four requests at once: four instances, none waiting for another.
    let t0 = std::time::Instant::now();
    let slow: Vec<_> = (0..4)
        .map(|_| {
            let addr = server.addr;
            std::thread::spawn(move || request(addr, "GET", "/slow?ms=600", &[], b"").status)
        })
        .collect();
    for s in slow {
        assert_eq!(s.join().unwrap(), 200);
    }
    assert!(
        t0.elapsed() < Duration::from_millis(2000),
        "{:?}",
        t0.elapsed()
    );
    let m = server.metrics();
    let dep = "deployment=\"hostile\"";
    assert_eq!(metric(&m, "tensorwasm_idle_instances", &[dep]), 4.0, "{m}");
    // Then one at a time: the most recently used instance serves them all.
    assert_eq!(text(&server, "localhost", "/count"), "1");
    assert_eq!(text(&server, "localhost", "/count"), "2");
}

#[test]
fn a_failed_request_never_poisons_the_next_ones_instance() {
    let dir = scratch("reuse_poison");
    let server = Server::start(
        &[
            guest("hostile").to_str().unwrap(),
            "--max-instance-reuse-count",
            "1000",
            "--request-timeout",
            "2s",
            "--max-memory",
            "64MiB",
            "--max-body-size",
            "64KiB",
        ],
        &dir,
    );
    let count = || text(&server, "localhost", "/count");
    assert_eq!(count(), "1");
    assert_eq!(count(), "2");
    // Each failure ends the instance it ran in; the next request starts over.
    for (path, status) in [("/panic", 500), ("/loop", 504), ("/stall-body", 504)] {
        assert_eq!(server.get(path).status, status, "{path}");
        assert_eq!(count(), "1", "after {path}");
        assert_eq!(count(), "2", "after {path}");
    }
    // A body past the cap: 413, and the instance that read it is dropped.
    let big = request(
        server.addr,
        "POST",
        "/count",
        &[("transfer-encoding", "chunked")],
        &chunked_body(3, 30_000),
    );
    assert_eq!(big.status, 413, "{}", big.text());
    assert_eq!(count(), "1", "after an oversized body");
    // Memory kept across requests meets the instance's cap, then starts over.
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(server.get("/grow?mb=12").status);
    }
    assert!(statuses.starts_with(&[200, 200]), "{statuses:?}");
    assert!(statuses.contains(&500), "{statuses:?}");
    let after = statuses.iter().position(|s| *s == 500).unwrap();
    assert_eq!(statuses.get(after + 1), Some(&200), "{statuses:?}");
    // The deadline is each request's: two 1.2 s requests under a 2 s budget
    // both finish, and the instance lives on.
    assert_eq!(count(), "1");
    for _ in 0..2 {
        assert_eq!(server.get("/slow?ms=1200").status, 200);
    }
    assert_eq!(count(), "2");

    let m = server.metrics();
    for reason in ["trap", "deadline", "body", "memory_cap"] {
        let r = format!("reason=\"{reason}\"");
        assert!(
            metric(&m, "tensorwasm_instance_discards_total", &[&r]) >= 1.0,
            "{reason}: {m}"
        );
    }
}

#[test]
fn a_full_instance_pool_drops_idle_instances_to_make_room() {
    let dir = scratch("reuse_pool_full");
    let file = hostile_deployments(
        &dir,
        &[("a", "t1", "reuse = 100, idle = \"1h\""), ("b", "t2", "")],
    );
    let server = Server::start(
        &[file.to_str().unwrap(), "--max-instances", "1"],
        &dir.join("cache"),
    );
    // `a`'s idle instance holds the only slot; `b` needs it.
    assert_eq!(text(&server, "a.test", "/count"), "1");
    assert_eq!(text(&server, "b.test", "/count"), "1");
    assert_eq!(text(&server, "a.test", "/count"), "1");
    let m = server.metrics();
    let evicted = ["deployment=\"a\"", "reason=\"evicted\""];
    assert_eq!(
        metric(&m, "tensorwasm_instance_discards_total", &evicted),
        1.0,
        "{m}"
    );
}

#[test]
fn the_default_world_reuses_its_instances_unless_told_not_to() {
    for (reuse, expect_reuse) in [(None, true), (Some("1"), false)] {
        let dir = scratch(&format!("reuse_default_{expect_reuse}"));
        let mut args = Vec::new();
        if let Some(n) = reuse {
            args = vec!["--max-instance-reuse-count", n];
        }
        let server = Server::start(&args, &dir);
        for _ in 0..5 {
            let r = server.get("/hello");
            assert_eq!(r.status, 200, "{}", r.text());
        }
        let m = server.metrics();
        let reused = metric(
            &m,
            "tensorwasm_instance_reuses_total",
            &["deployment=\"default\""],
        );
        assert_eq!(reused >= 4.0, expect_reuse, "{m}");
    }
}

#[test]
fn instance_flags_are_checked() {
    let dir = scratch("reuse_flags");
    let file = deployment_file(
        &dir,
        &format!(
            "[[deployment]]\nname = \"a\"\ntenant = \"t\"\ncomponent = {:?}\n",
            guest("hello")
        ),
    );
    let (code, _, err) = run(&[
        "serve",
        file.to_str().unwrap(),
        "--max-instance-reuse-count",
        "10",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("per deployment"), "{err}");
    let (code, _, err) = run(&[
        "serve",
        guest("hello").to_str().unwrap(),
        "--max-instance-reuse-count",
        "0",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("at least 1"), "{err}");
}
