//! Live deployments through the admin API: deploy, replace under load,
//! roll back, undeploy; refusals that change nothing; conflicts; what
//! survives a `kill -9`; the CLI client.

use crate::support::{
    Server, audit_records, guest, metric, read_response, request, run, scratch, token_hash,
    write_request,
};
use serde_json::{Value, json};
use std::io::BufReader;
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// One admin call: (status, JSON body).
fn call(
    server: &Server,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
    if_match: Option<u64>,
) -> (u16, Value) {
    let auth = format!("Bearer {token}");
    let tag = if_match.map(|r| format!("\"{r}\""));
    let mut headers = vec![("authorization", auth.as_str())];
    if let Some(t) = &tag {
        headers.push(("if-match", t.as_str()));
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let resp = request(server.admin, method, path, &headers, body.as_bytes());
    (
        resp.status,
        serde_json::from_slice(&resp.body).unwrap_or(Value::Null),
    )
}

/// `hello` (the start-up spec, revision 0, at `/`) on a server with its own
/// data dir; the server, its admin token and the data dir.
fn start(name: &str) -> (Server, String, std::path::PathBuf) {
    let dir = scratch(name);
    let data = dir.join("data");
    let hello = guest("hello");
    let args = [
        hello.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ];
    let server = Server::start(&args, &dir.join("cache"));
    let token = std::fs::read_to_string(data.join("admin-token")).unwrap();
    (server, token.trim().to_string(), dir)
}

fn probe_spec() -> Value {
    json!({ "tenant": "default", "component": guest("init_probe") })
}

/// Which revision answered: hello's welcome page or the probe's line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Hello,
    Probe,
}

/// `clients` keep-alive clients sending `GET /` until `stop`; each returns
/// its answers in order, or the first failure.
fn clients(
    server: &Server,
    clients: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<Result<Vec<Answer>, String>>> {
    (0..clients)
        .map(|_| {
            let (addr, stop) = (server.addr, stop.clone());
            std::thread::spawn(move || {
                let stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
                let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
                let mut reader = BufReader::new(stream);
                let mut seen = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    write_request(&mut writer, "GET", "/", &[], b"", false);
                    let r = read_response(&mut reader)
                        .map_err(|e| format!("after {} requests: {e}", seen.len()))?;
                    let text = r.text();
                    seen.push(match (r.status, text.as_str()) {
                        (200, t) if t.starts_with("Welcome to TensorWasm") => Answer::Hello,
                        (200, t) if t.starts_with("initialized=") => Answer::Probe,
                        (s, t) => return Err(format!("{s} {t}")),
                    });
                }
                Ok(seen)
            })
        })
        .collect()
}

#[test]
fn live_deploy_replace_under_load_roll_back_and_undeploy() {
    let (server, token, dir) = start("live_swap");
    let (status, _) = call(&server, "GET", "/v1/deployments/hello", &token, None, None);
    assert_eq!(status, 200);
    // A new deployment on its own route.
    let mut spec = probe_spec();
    spec["route"] = json!({ "path": "/probe" });
    let (status, body) = call(
        &server,
        "PUT",
        "/v1/deployments/probe",
        &token,
        Some(spec),
        None,
    );
    assert_eq!(
        (status, body["revision"].as_u64()),
        (201, Some(1)),
        "{body}"
    );
    assert!(server.get("/probe").text().starts_with("initialized="));

    swap_under_load(&server, &token);
    roll_back_and_undeploy(&server, &token);
    audited(&dir.join("data"));
}

/// What a deployment holds — its weights, on a GPU its tenant's context and
/// reservation — is returned when it is undeployed, and loaded again when it
/// comes back.
#[test]
fn undeploying_returns_weights_and_gpu_reservations() {
    let (server, token, dir) = start("live_release");
    let model = dir.join("model.safetensors");
    crate::tensor_guests::write_safetensors(&model);
    let spec = json!({
        "tenant": "acme",
        "component": guest("tensor_probe"),
        "route": { "path": "/weights" },
        "limits": { "tensor-memory": "64MiB" },
        "grants": { "weights": { "model": model } },
    });
    let gpu = server.tensor_device().starts_with("cuda");
    let held = || {
        let m = server.metrics();
        (
            metric(&m, "tensorwasm_weights_bytes", &["tenant=\"acme\""]),
            metric(&m, "tensorwasm_gpu_reserved_bytes", &[]),
            metric(&m, "tensorwasm_gpu_tenants", &[]),
        )
    };
    let before = held();
    assert_eq!(before.0, 0.0);
    for round in 0..2 {
        let (status, body) = call(
            &server,
            "PUT",
            "/v1/deployments/w",
            &token,
            Some(spec.clone()),
            None,
        );
        assert!(status == 200 || status == 201, "{status} {body}");
        let served = server.get("/weights?name=model&tensor=w");
        assert_eq!(served.status, 200, "round {round}: {}", served.text());
        let (weights, reserved, tenants) = held();
        assert!(weights > 0.0, "round {round}: weights resident");
        if gpu {
            assert_eq!(reserved, before.1 + 64.0 * 1024.0 * 1024.0, "round {round}");
            assert_eq!(tenants, before.2 + 1.0, "round {round}");
        }
        let (status, body) = call(&server, "DELETE", "/v1/deployments/w", &token, None, None);
        assert_eq!(status, 200, "{body}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while held() != before && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(
            held(),
            before,
            "round {round}: everything returned after undeploy"
        );
    }
    if gpu {
        assert!(
            server
                .log()
                .contains("tenant `acme` has no deployment here any more"),
            "{}",
            server.log()
        );
    }
}

/// Replaces `hello` while 16 keep-alive clients keep it busy: no request
/// fails, and each client sees the old revision, then only the new one.
fn swap_under_load(server: &Server, token: &str) {
    // Replace `hello` while 16 clients keep it busy.
    let stop = Arc::new(AtomicBool::new(false));
    let load = clients(server, 16, &stop);
    std::thread::sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    let (status, body) = call(
        server,
        "PUT",
        "/v1/deployments/hello",
        token,
        Some(probe_spec()),
        Some(0),
    );
    let put = t0.elapsed();
    assert_eq!(
        (
            status,
            body["revision"].as_u64(),
            body["replaced"].as_bool()
        ),
        (200, Some(1), Some(true)),
        "{body}"
    );
    let served = Instant::now();
    while !server.get("/").text().starts_with("initialized=") {
        assert!(
            served.elapsed() < Duration::from_secs(5),
            "the new revision never served"
        );
    }
    let first = t0.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let (mut old, mut new) = (0, 0);
    for client in load {
        let seen = client
            .join()
            .unwrap()
            .expect("no failed request during the swap");
        // Each client's answers switch revision once, old to new, never back.
        let switched = seen
            .iter()
            .position(|a| *a == Answer::Probe)
            .unwrap_or(seen.len());
        assert!(
            seen[switched..].iter().all(|a| *a == Answer::Probe),
            "{seen:?}"
        );
        old += switched;
        new += seen.len() - switched;
    }
    assert!(old > 0 && new > 0, "old {old} new {new}");
    eprintln!(
        "swap under load: PUT {put:?}, first request on the new revision after {first:?}; {old} requests on the old, {new} on the new, 0 failed"
    );
}

/// Rolls `hello` back to its start-up spec, then undeploys it.
fn roll_back_and_undeploy(server: &Server, token: &str) {
    // Roll back to the start-up spec, then undeploy.
    let (status, body) = call(
        server,
        "POST",
        "/v1/deployments/hello/rollback",
        token,
        None,
        None,
    );
    assert_eq!(
        (status, body["revision"].as_u64()),
        (200, Some(2)),
        "{body}"
    );
    assert!(server.get("/").text().starts_with("Welcome to TensorWasm"));
    let (status, body) = call(server, "DELETE", "/v1/deployments/hello", token, None, None);
    assert_eq!(
        (status, body["revision"].as_u64()),
        (200, Some(3)),
        "{body}"
    );
    let gone = server.get("/");
    assert_eq!(gone.status, 404, "{}", gone.text());
    assert!(server.get("/probe").text().starts_with("initialized="));
    let (status, history) = call(
        server,
        "GET",
        "/v1/deployments/hello/revisions",
        token,
        None,
        None,
    );
    assert_eq!(status, 200);
    let actions: Vec<(u64, &str)> = history["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["revision"].as_u64().unwrap(),
                r["action"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            (0, "deploy"),
            (1, "deploy"),
            (2, "rollback"),
            (3, "undeploy")
        ]
    );
    assert_eq!(history["revisions"][2]["from"], 0);
}

/// Every change is in the tenant's audit log, naming the token and revision.
fn audited(data: &std::path::Path) {
    let changes: Vec<Value> = audit_records(data, "default")
        .into_iter()
        .filter(|r| r["deployment"] == "hello")
        .collect();
    let audited: Vec<u64> = changes
        .iter()
        .map(|r| r["admin"]["revision"].as_u64().unwrap())
        .collect();
    assert_eq!(audited, [1, 2, 3], "{changes:?}");
    assert!(
        changes
            .iter()
            .all(|r| r["token"] == "admin"
                && r["request_id"].as_str().is_some_and(|s| s.len() == 32)),
        "{changes:?}"
    );
}

#[test]
fn live_refusals_change_nothing() {
    let (server, token, dir) = start("live_refusals");
    let data = dir.join("data");
    // A read-only token and one for another tenant.
    let line = |id: &str, t: &str, scope: &str| format!("{id} {} {scope}\n", token_hash(t));
    std::fs::write(
        data.join("admin-tokens"),
        line("ro", "tw_ro", "read") + &line("acme", "tw_acme", "deploy:acme"),
    )
    .unwrap();
    drop(server);
    let hello = guest("hello");
    let args = [
        hello.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ];
    let server = Server::start(&args, &dir.join("cache"));
    refused_by_scope(&server, &token);
    refused_specs(&server, &token);
    refused_conflicts(&server, &token);
    racing_deploys(&server, &token);
}

/// `PUT /v1/deployments/hello` with `spec` and `token`.
fn put(server: &Server, token: &str, spec: Value) -> (u16, Value) {
    call(
        server,
        "PUT",
        "/v1/deployments/hello",
        token,
        Some(spec),
        None,
    )
}

/// `hello` still serves its start-up spec.
fn unchanged(server: &Server, token: &str) {
    assert!(server.get("/").text().starts_with("Welcome to TensorWasm"));
    let (_, h) = call(server, "GET", "/v1/deployments/hello", token, None, None);
    assert_eq!(h["revision"], 0, "{h}");
}

/// No token, a read-only one, one for another tenant.
fn refused_by_scope(server: &Server, token: &str) {
    let resp = request(
        server.admin,
        "PUT",
        "/v1/deployments/hello",
        &[],
        probe_spec().to_string().as_bytes(),
    );
    assert_eq!(resp.status, 401);
    assert_eq!(put(server, "tw_ro", probe_spec()).0, 403);
    let (status, body) = put(server, "tw_acme", probe_spec());
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("deploy:default"),
        "{body}"
    );
    unchanged(server, token);
}

/// Malformed specs, one that fails to link, a taken route, a stale If-Match.
fn refused_specs(server: &Server, token: &str) {
    let (status, body) = put(
        server,
        token,
        json!({ "tenant": "default", "componen": "x.wasm" }),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown field `componen`"),
        "{body}"
    );
    let (status, body) = put(server, token, json!(["not", "an", "object"]));
    assert_eq!(status, 400, "{body}");
    let resp = request(
        server.admin,
        "PUT",
        "/v1/deployments/hello",
        &[("authorization", &format!("Bearer {token}"))],
        b"{not json",
    );
    assert_eq!(resp.status, 400, "{}", resp.text());
    // The guard middleware alone imports a handler nobody provides: it fails to link.
    let (status, body) = put(
        server,
        token,
        json!({ "tenant": "default", "component": guest("guard") }),
    );
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot satisfy"),
        "{body}"
    );
    unchanged(server, token);
}

/// A taken route, a stale If-Match, nothing to undeploy or roll back to.
fn refused_conflicts(server: &Server, token: &str) {
    let hello = guest("hello");
    // Another deployment on the same route: a conflict.
    let (status, body) = call(
        server,
        "PUT",
        "/v1/deployments/twin",
        token,
        Some(json!({ "tenant": "default", "component": hello })),
        None,
    );
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        call(server, "GET", "/v1/deployments/twin", token, None, None).0,
        404
    );
    // A stale If-Match: 409 with the current revision.
    let (status, body) = call(
        server,
        "PUT",
        "/v1/deployments/hello",
        token,
        Some(probe_spec()),
        Some(7),
    );
    assert_eq!(
        (status, body["current_revision"].as_u64()),
        (409, Some(0)),
        "{body}"
    );
    unchanged(server, token);
    assert_eq!(
        call(server, "DELETE", "/v1/deployments/nope", token, None, None).0,
        404
    );
    let (status, _) = call(
        server,
        "POST",
        "/v1/deployments/hello/rollback",
        token,
        None,
        None,
    );
    assert_eq!(status, 404);
}

/// Two deploys of one name at once, both at revision 0.
fn racing_deploys(server: &Server, token: &str) {
    // Two deploys of one name at once, both at revision 0: one wins, the
    // other gets 409 naming the revision it lost to (or the one building).
    let racers: Vec<_> = (0..2)
        .map(|_| {
            let (addr, token) = (server.admin, token.to_string());
            std::thread::spawn(move || {
                let auth = format!("Bearer {token}");
                let r = request(
                    addr,
                    "PUT",
                    "/v1/deployments/hello",
                    &[("authorization", &auth), ("if-match", "\"0\"")],
                    probe_spec().to_string().as_bytes(),
                );
                (
                    r.status,
                    serde_json::from_slice::<Value>(&r.body).unwrap_or(Value::Null),
                )
            })
        })
        .collect();
    let mut results: Vec<(u16, Value)> = racers.into_iter().map(|r| r.join().unwrap()).collect();
    results.sort_by_key(|r| r.0);
    assert_eq!((results[0].0, results[1].0), (200, 409), "{results:?}");
    assert!(results[1].1["current_revision"].is_u64(), "{results:?}");
    assert!(server.get("/").text().starts_with("initialized="));
    // Undeployed, its history stays its tenant's.
    let (status, _) = call(server, "DELETE", "/v1/deployments/hello", token, None, None);
    assert_eq!(status, 200);
    let revisions = "/v1/deployments/hello/revisions";
    assert_eq!(call(server, "GET", revisions, "tw_acme", None, None).0, 403);
    assert_eq!(call(server, "GET", revisions, "tw_ro", None, None).0, 200);
}

#[test]
fn live_deployments_survive_kill_9_and_the_cli_drives_them() {
    let (server, token, dir) = start("live_kill9");
    let data = dir.join("data");
    // A deployment file with a relative path: the CLI sends it absolute.
    let file = dir.join("apps.toml");
    std::fs::copy(guest("init_probe"), dir.join("probe.wasm")).unwrap();
    std::fs::write(&file, "[[deployment]]\nname = \"probe\"\ntenant = \"acme\"\ncomponent = \"probe.wasm\"\nroute = { path = \"/probe\" }\n").unwrap();
    let (code, out, err) = cli(&server, &data, &["deploy", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("deployment `probe`: revision 1 (created)"),
        "{out}"
    );
    let (code, out, _) = cli(&server, &data, &["deployments", "list"]);
    assert_eq!(code, 0);
    assert!(
        out.lines()
            .any(|l| l.starts_with("probe") && l.contains("acme")),
        "{out}"
    );
    let (code, _, err) = cli(&server, &data, &["undeploy", "nope"]);
    assert!(
        code != 0 && err.contains("404") && err.contains("no deployment `nope`"),
        "{err}"
    );
    // Acknowledged, then killed at once.
    let (status, _) = call(
        &server,
        "PUT",
        "/v1/deployments/hello",
        &token,
        Some(probe_spec()),
        None,
    );
    assert_eq!(status, 200);
    server.kill9();
    let hello = guest("hello");
    let args = [
        hello.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ];
    let server = Server::start(&args, &dir.join("cache"));
    assert!(server.get("/probe").text().starts_with("initialized="));
    assert!(server.get("/").text().starts_with("initialized="));
    let (_, h) = call(&server, "GET", "/v1/deployments/hello", &token, None, None);
    assert_eq!(h["revision"], 1, "{h}");
    roll_back_with_the_cli(&server, &data);
    drop(server);
    // An undeploy survives a restart too.
    let server = Server::start(&args, &dir.join("cache"));
    assert_eq!(server.get("/probe").status, 404);
    assert!(server.get("/").text().starts_with("Welcome to TensorWasm"));
}

/// Rolls `hello` back and undeploys `probe` with the CLI.
fn roll_back_with_the_cli(server: &Server, data: &std::path::Path) {
    let (code, out, err) = cli(server, data, &["deployments", "rollback", "hello"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("revision 2 (rolled back)"), "{out}");
    assert!(server.get("/").text().starts_with("Welcome to TensorWasm"));
    let (code, out, _) = cli(server, data, &["deployments", "history", "hello"]);
    assert_eq!(code, 0);
    assert!(out.contains("rollback of 0"), "{out}");
    let (code, out, _) = cli(server, data, &["undeploy", "probe", "--json"]);
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["undeployed"],
        true,
        "{out}"
    );
}

/// `tensor-wasm ARGS` against `server`'s admin API, with the token in `data`.
fn cli(server: &Server, data: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let admin = format!("http://{}", server.admin);
    let mut all = args.to_vec();
    all.extend(["--admin", &admin, "--data-dir", data.to_str().unwrap()]);
    run(&all)
}

/// A deployment file of `(name, component, path)`.
fn apps(entries: &[(&str, &str, &str)]) -> String {
    entries
        .iter()
        .map(|(name, component, path)| {
            let file = guest(component);
            format!("[[deployment]]\nname = \"{name}\"\ntenant = \"acme\"\ncomponent = {file:?}\nroute = {{ path = \"{path}\" }}\n\n")
        })
        .collect()
}

/// Whether `path` is answered by the init probe.
fn probed(server: &Server, path: &str) -> bool {
    server.get(path).text().starts_with("initialized=")
}

#[test]
fn sighup_rereads_the_deployment_file_with_the_same_swap() {
    let dir = scratch("live_sighup");
    let data = dir.join("data");
    let file = dir.join("apps.toml");
    std::fs::write(
        &file,
        apps(&[("a", "hello", "/a"), ("b", "init_probe", "/b")]),
    )
    .unwrap();
    let args = [file.to_str().unwrap(), "--data-dir", data.to_str().unwrap()];
    let server = Server::start(&args, &dir.join("cache"));
    let token = std::fs::read_to_string(data.join("admin-token")).unwrap();
    let spec = json!({ "tenant": "acme", "component": guest("hello"), "route": { "path": "/c" } });
    let (status, _) = call(
        &server,
        "PUT",
        "/v1/deployments/c",
        token.trim(),
        Some(spec),
        None,
    );
    assert_eq!(status, 201);
    // `a` changes, `b` goes, `d` comes; `c`, last set by the API, stays.
    std::fs::write(
        &file,
        apps(&[
            ("a", "init_probe", "/a"),
            ("c", "init_probe", "/c"),
            ("d", "init_probe", "/d"),
        ]),
    )
    .unwrap();
    hup(&server);
    // The reread applies its changes one after another (`b`'s undeploy
    // last): wait for all of them.
    let t0 = Instant::now();
    while !(probed(&server, "/d") && server.get("/b").status == 404) {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "SIGHUP did not deploy `d` and undeploy `b`: {}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(probed(&server, "/a"));
    assert!(!probed(&server, "/c"));
    let (_, history) = call(
        &server,
        "GET",
        "/v1/deployments/a/revisions",
        token.trim(),
        None,
        None,
    );
    assert_eq!(history["revisions"][1]["by"], "sighup", "{history}");
    // A file that no longer parses changes nothing.
    std::fs::write(&file, "[[deployment]\nname = ").unwrap();
    hup(&server);
    unparsed_file_changes_nothing(&server);
}

/// After a SIGHUP with a broken file: the log says so, `a` and `d` serve on.
fn unparsed_file_changes_nothing(server: &Server) {
    let t0 = Instant::now();
    while !server.log().contains("SIGHUP: nothing changed") {
        assert!(t0.elapsed() < Duration::from_secs(10), "{}", server.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(probed(server, "/a") && probed(server, "/d"));
}

fn hup(server: &Server) {
    let sent = std::process::Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}
