//! The embedded default world, a plain component, the middleware world, and
//! the compose/inspect commands.

use crate::support::*;
use std::io::BufReader;
use std::net::TcpStream;

#[test]
fn default_world_serves_welcome_hello_and_echo_behind_the_gateway() {
    let dir = scratch("default_world");
    let data = dir.join("data");
    let server = Server::start(&["--data-dir", data.to_str().unwrap()], &dir);
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
    // /echo is behind auth: the default world's token is in the data dir,
    // readable only by its owner, and named (not shown) in the log.
    let payload: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let anonymous = request(server.addr, "POST", "/echo", &[], &payload);
    assert_eq!(anonymous.status, 401, "{}", anonymous.text());
    let token_file = data.join("default-token");
    let token = std::fs::read_to_string(&token_file).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert!(server.log().contains("default-token"));
    assert!(!server.log().contains(token.trim()));
    let auth = format!("Bearer {}", token.trim());
    let echo = request(
        server.addr,
        "POST",
        "/echo",
        &[("authorization", &auth)],
        &payload,
    );
    assert_eq!(echo.status, 200);
    assert_eq!(echo.body, payload);
    // The router answers unknown paths and methods itself.
    let missing = server.get("/nope");
    assert_eq!(missing.status, 404);
    assert!(missing.text().contains("not_found"));
    let delete = request(server.addr, "DELETE", "/hello", &[], b"");
    assert_eq!(delete.status, 405);
    assert_eq!(delete.header("allow"), Some("GET, HEAD"));
    // The echo was audited.
    let (code, out, err) = run(&["audit", "tail", "--data-dir", data.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.contains("\"token\":\"default\""), "{out}");
    // A restart keeps the token.
    drop(server);
    let server = Server::start(&["--data-dir", data.to_str().unwrap()], &dir);
    let again = request(
        server.addr,
        "POST",
        "/echo",
        &[("authorization", &auth)],
        b"x",
    );
    assert_eq!(again.status, 200);
    let m = server.metrics();
    assert!(
        metric(
            &m,
            "tensorwasm_requests_total",
            &["deployment=\"default\"", "status=\"200\""]
        ) >= 1.0,
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
    let world = root().join("worlds/guarded-hello.wac");
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

#[test]
fn shell_completions_and_man_pages_come_from_the_cli() {
    let (code, script, err) = crate::support::run(&["completions", "bash"]);
    assert_eq!(code, 0, "{err}");
    let file = crate::support::scratch("completions").join("tensor-wasm.bash");
    std::fs::write(&file, script).unwrap();
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {} && complete -p tensor-wasm",
            file.display()
        ))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("tensor-wasm"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, _, err) = crate::support::run(&["completions", "tcsh"]);
    assert!(code != 0 && err.contains("invalid value"), "{err}");
    let dir = crate::support::scratch("man");
    let (code, out, err) = crate::support::run(&["man", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("man pages"), "{out}");
    let serve = std::fs::read_to_string(dir.join("tensor-wasm-serve.1")).unwrap();
    assert!(serve.contains("max\\-instance\\-reuse\\-count"), "{serve}");
}
