//! The log as machines read it: `--log-format json` and the per-request
//! access log (`--access-log`).

use crate::support::*;
use serde_json::Value;
use std::time::{Duration, Instant};

/// The server's JSON log lines (every line must be one object).
fn json_lines(server: &Server) -> Vec<Value> {
    server
        .log()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// The access lines logged so far, waiting up to 5 s for `n` of them.
fn access_lines(server: &Server, n: usize) -> Vec<Value> {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let lines: Vec<Value> = json_lines(server)
            .into_iter()
            .filter(|l| l["target"] == "access")
            .collect();
        if lines.len() >= n || Instant::now() > until {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn json_logs_carry_one_access_line_per_request_when_asked() {
    let dir = scratch("json_access_log");
    let hello = guest("hello");
    let server = Server::start(
        &[
            hello.to_str().unwrap(),
            "--log-format",
            "json",
            "--access-log",
        ],
        &dir,
    );
    let ok = request(
        server.addr,
        "GET",
        "/hello",
        &[("x-request-id", "trace-me-1")],
        b"",
    );
    assert_eq!(ok.status, 200);
    let missing = request(server.addr, "POST", "/nope?secret=1", &[], b"x");
    let lines = access_lines(&server, 2);
    assert_eq!(lines.len(), 2, "{lines:?}");
    let line = |id: &str| lines.iter().find(|l| l["request_id"] == id).cloned();
    let first = line("trace-me-1").unwrap_or_else(|| panic!("{lines:?}"));
    assert_eq!(first["level"], "INFO");
    assert_eq!(first["tenant"], "default");
    assert_eq!(first["deployment"], "hello");
    assert_eq!(first["method"], "GET");
    assert_eq!(first["path"], "/hello");
    assert_eq!(first["status"], 200);
    assert!(first["micros"].as_u64().is_some_and(|us| us > 0), "{first}");
    assert!(first["timestamp"].is_string(), "{first}");
    // The server's own id when the client sent none; the query string is
    // never logged.
    let id = missing.header("x-request-id").expect("an id");
    let second = line(id).unwrap_or_else(|| panic!("{lines:?}"));
    assert_eq!(
        (second["method"].as_str(), second["path"].as_str()),
        (Some("POST"), Some("/nope"))
    );
    assert_eq!(second["status"], u64::from(missing.status));
    assert!(!server.log().contains("secret=1"));
}

#[test]
fn without_the_flag_there_is_no_access_line() {
    let dir = scratch("no_access_log");
    let hello = guest("hello");
    let server = Server::start(&[hello.to_str().unwrap(), "--log-format", "json"], &dir);
    assert_eq!(server.get("/hello").status, 200);
    std::thread::sleep(Duration::from_millis(300));
    assert!(access_lines(&server, 0).is_empty(), "{}", server.log());
    assert!(json_lines(&server).iter().any(|l| {
        l["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("serving on http://"))
    }));
}
