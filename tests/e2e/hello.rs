//! The embedded default world, a plain component, the middleware world, and
//! the compose/inspect commands.

use crate::support::*;
use std::io::BufReader;
use std::net::TcpStream;

#[test]
fn default_world_serves_welcome_hello_and_echo() {
    let dir = scratch("default_world");
    let server = Server::start(&[], &dir);
    let welcome = server.get("/");
    assert_eq!(welcome.status, 200);
    assert!(
        welcome.text().contains("Welcome to TensorWasm"),
        "{}",
        welcome.text()
    );
    assert!(welcome.text().contains("/hello"));
    let hello = server.get("/hello");
    assert_eq!(
        (hello.status, hello.text().as_str()),
        (200, "Hello from TensorWasm!\n")
    );
    let payload: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let echo = request(server.addr, "POST", "/echo", &[], &payload);
    assert_eq!(echo.status, 200);
    assert_eq!(echo.body, payload);
    let missing = server.get("/nope");
    assert_eq!(missing.status, 404);
    assert!(missing.text().contains("not_found"));
    // The guard middleware in front of hello answers other methods itself.
    let delete = request(server.addr, "DELETE", "/hello", &[], b"");
    assert_eq!(delete.status, 405);
    assert_eq!(delete.header("allow"), Some("GET, HEAD, POST, OPTIONS"));
    let m = server.metrics();
    assert!(
        metric(
            &m,
            "tensorwasm_requests_total",
            &["deployment=\"default\"", "status=\"200\""]
        ) >= 3.0,
        "{m}"
    );
    assert!(
        metric(&m, "tensorwasm_requests_total", &["status=\"405\""]) >= 1.0,
        "{m}"
    );
}

#[test]
fn keep_alive_serves_many_requests_on_one_connection() {
    let dir = scratch("keep_alive");
    let server = Server::start(&[guest("hello").to_str().unwrap()], &dir);
    let stream = TcpStream::connect(server.addr).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    for _ in 0..20 {
        write_request(&mut writer, "GET", "/hello", &[], b"", false);
        let r = read_response(&mut reader).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "Hello from TensorWasm!\n");
    }
    // The plain hello component has no guard: DELETE reaches it and 404s.
    assert_eq!(
        request(server.addr, "DELETE", "/hello", &[], b"").status,
        404
    );
}

#[test]
fn middleware_world_from_file_and_compose_and_inspect() {
    let dir = scratch("middleware_world");
    let world = root().join("worlds/default.wac");
    let hello = format!("tensorwasm:hello={}", guest("hello").display());
    let guard = format!("tensorwasm:guard={}", guest("guard").display());
    let server = Server::start(
        &[world.to_str().unwrap(), "--dep", &hello, "--dep", &guard],
        &dir,
    );
    assert_eq!(server.get("/hello").status, 200);
    assert_eq!(request(server.addr, "PUT", "/hello", &[], b"x").status, 405);
    drop(server);

    let out = dir.join("composed.wasm");
    let (code, _, err) = run(&[
        "compose",
        world.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--dep",
        &hello,
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, stdout, err) = run(&["inspect", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        stdout.contains("exports:\n  wasi:http/incoming-handler@0.2.12 (instance)"),
        "{stdout}"
    );
    assert!(stdout.contains("wasi:http/types@0.2.12"), "{stdout}");
    // The guard's import of incoming-handler was filled by hello: not an import any more.
    let imports = stdout.split("exports:").next().unwrap();
    assert!(!imports.contains("incoming-handler"), "{stdout}");

    let server = Server::start(&[out.to_str().unwrap()], &dir.join("cache"));
    assert_eq!(server.get("/").status, 200);
    assert_eq!(request(server.addr, "PATCH", "/", &[], b"").status, 405);
}

#[test]
fn precompiled_artifact_serves() {
    let dir = scratch("precompiled");
    let out = dir.join("hello.cwasm");
    let (code, _, err) = run(&[
        "compile",
        guest("hello").to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let server = Server::start(&[out.to_str().unwrap()], &dir);
    assert_eq!(server.get("/hello").text(), "Hello from TensorWasm!\n");
    assert!(server.log().contains("loaded precompiled artifact"));
}
