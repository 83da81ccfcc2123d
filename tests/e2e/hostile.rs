//! Guests that loop, exhaust memory, trap, or never finish: each such request
//! gets its 5xx within budget, the metrics count it, and a concurrent healthy
//! load keeps getting 200s throughout.

use crate::support::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[test]
fn hostile_guests_fail_alone_while_healthy_load_succeeds() {
    hostile_suite("hostile", "1");
}

/// The same with warm instances: no hostile request poisons the instance
/// the next request gets.
#[test]
fn hostile_guests_fail_alone_with_reused_instances() {
    let m = hostile_suite("hostile_reuse", "1000");
    let dep = "deployment=\"hostile\"";
    assert!(
        metric(&m, "tensorwasm_instance_reuses_total", &[dep]) > 20.0,
        "{m}"
    );
    for reason in ["trap", "deadline", "memory_cap"] {
        let r = format!("reason=\"{reason}\"");
        assert!(
            metric(&m, "tensorwasm_instance_discards_total", &[dep, &r]) >= 1.0,
            "{reason}: {m}"
        );
    }
}

/// Runs the hostile cases beside a healthy load with `reuse` requests per
/// instance; returns the metrics at the end.
fn hostile_suite(name: &str, reuse: &str) -> String {
    let dir = scratch(name);
    let hostile = guest("hostile");
    let server = Server::start(
        &[
            hostile.to_str().unwrap(),
            "--request-timeout",
            "2s",
            "--max-memory",
            "64MiB",
            "--max-instance-reuse-count",
            reuse,
        ],
        &dir,
    );
    let stop = Arc::new(AtomicBool::new(false));
    let healthy = load(server.addr, "/ok", 4, stop.clone());

    let budget = Duration::from_secs(2);
    let cases: [(&str, u16, &str); 5] = [
        ("/loop", 504, "deadline_exceeded"),
        ("/oom", 500, "memory_limit"),
        ("/panic", 500, "guest_trap"),
        ("/stall", 504, "deadline_exceeded"),
        ("/stall-body", 504, "deadline_exceeded"),
    ];
    for (path, status, code) in cases {
        let t0 = Instant::now();
        let r = server.get(path);
        let took = t0.elapsed();
        assert_eq!(r.status, status, "{path}: {}", r.text());
        assert!(r.text().contains(code), "{path}: {}", r.text());
        assert!(
            took < budget + Duration::from_millis(1500),
            "{path} took {took:?}"
        );
    }
    // Hostile requests in parallel with each other, too.
    let parallel: Vec<_> = ["/loop", "/oom", "/panic", "/stall"]
        .into_iter()
        .map(|p| {
            let addr = server.addr;
            std::thread::spawn(move || request(addr, "GET", p, &[], b"").status)
        })
        .collect();
    for (p, h) in ["/loop", "/oom", "/panic", "/stall"].iter().zip(parallel) {
        let status = h.join().unwrap();
        assert!(status >= 500, "{p}: {status}");
    }

    stop.store(true, Ordering::Relaxed);
    let (ok, bad) = healthy.join().unwrap();
    assert!(bad.is_empty(), "healthy requests failed: {bad:?}");
    assert!(ok > 20, "only {ok} healthy requests completed");

    let m = server.metrics();
    let dep = "deployment=\"hostile\"";
    assert!(
        metric(&m, "tensorwasm_deadline_kills_total", &[dep]) >= 4.0,
        "{m}"
    );
    assert!(
        metric(&m, "tensorwasm_memory_cap_kills_total", &[dep]) >= 2.0,
        "{m}"
    );
    assert!(
        metric(&m, "tensorwasm_guest_traps_total", &[dep]) >= 4.0,
        "{m}"
    );
    assert!(
        metric(&m, "tensorwasm_requests_total", &[dep, "status=\"504\""]) >= 4.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "tensorwasm_in_flight_requests", &[dep]),
        0.0,
        "{m}"
    );
    // Still serving.
    assert_eq!(server.get("/ok").status, 200);
    m
}

#[test]
fn oversized_bodies_get_413() {
    let dir = scratch("body_cap");
    let server = Server::start(
        &[guest("hello").to_str().unwrap(), "--max-body-size", "64KiB"],
        &dir,
    );
    let big = vec![b'x'; 100_000];
    let r = request(server.addr, "POST", "/echo", &[], &big);
    assert_eq!(r.status, 413, "{}", r.text());
    // Chunked, so the size is only known while reading.
    let r = request(
        server.addr,
        "POST",
        "/echo",
        &[("transfer-encoding", "chunked")],
        &chunked_body(4, 30_000),
    );
    assert_eq!(r.status, 413, "{}", r.text());
    let small = request(server.addr, "POST", "/echo", &[], b"fits");
    assert_eq!((small.status, small.text().as_str()), (200, "fits"));
}

#[test]
fn a_full_instance_pool_answers_503() {
    let dir = scratch("pool_full");
    let server = Server::start(
        &[guest("hostile").to_str().unwrap(), "--max-instances", "1"],
        &dir,
    );
    let addr = server.addr;
    let slow = std::thread::spawn(move || request(addr, "GET", "/slow?ms=1000", &[], b"").status);
    std::thread::sleep(Duration::from_millis(300));
    let r = server.get("/ok");
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(slow.join().unwrap(), 200);
    // An answered request's instance is dropped just after its response
    // leaves: the next request, even straight after it, waits for the slot.
    for i in 0..200 {
        let r = server.get("/ok");
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
    }
}
