//! Start-up and shutdown: the compiled-artifact cache, corrupt cache entries,
//! graceful shutdown, admin endpoints.

use crate::support::*;
use std::time::Duration;

#[test]
fn second_start_loads_from_cache_and_corrupt_entries_are_rebuilt() {
    let dir = scratch("cache");
    let cache = dir.join("cache");
    let hello = guest("hello");
    let first = Server::start(&[hello.to_str().unwrap()], &cache);
    assert!(
        first.log().contains("hello.wasm: compiled in"),
        "{}",
        first.log()
    );
    drop(first);

    let second = Server::start(&[hello.to_str().unwrap()], &cache);
    assert!(
        second.log().contains("hello.wasm: loaded from cache"),
        "{}",
        second.log()
    );
    assert_eq!(second.get("/hello").status, 200);
    drop(second);

    // Corrupt every entry: flip a byte in the middle.
    for entry in std::fs::read_dir(&cache).unwrap() {
        let path = entry.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
    }
    let third = Server::start(&[hello.to_str().unwrap()], &cache);
    let log = third.log();
    assert!(
        log.contains("discarding cache entry") && log.contains("checksum mismatch"),
        "{log}"
    );
    assert!(log.contains("hello.wasm: compiled in"), "{log}");
    assert_eq!(third.get("/hello").status, 200);
    drop(third);
    let fourth = Server::start(&[hello.to_str().unwrap()], &cache);
    assert!(
        fourth.log().contains("loaded from cache"),
        "{}",
        fourth.log()
    );
}

#[test]
fn graceful_shutdown_finishes_in_flight_requests() {
    let dir = scratch("shutdown");
    let server = Server::start(&[guest("hostile").to_str().unwrap()], &dir);
    let addr = server.addr;
    let admin = server.admin;
    assert_eq!(request(admin, "GET", "/healthz", &[], b"").status, 200);
    assert_eq!(request(admin, "GET", "/readyz", &[], b"").status, 200);
    let slow = std::thread::spawn(move || request(addr, "GET", "/slow?ms=1500", &[], b""));
    std::thread::sleep(Duration::from_millis(400));
    let t0 = std::time::Instant::now();
    let status = server.terminate();
    let r = slow.join().unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "slept 1500 ms\n");
    assert!(status.success(), "exit status {status:?}");
    assert!(
        t0.elapsed() >= Duration::from_millis(800),
        "exited before the request finished"
    );
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "still accepting after shutdown"
    );
}
