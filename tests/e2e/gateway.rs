//! The gateway world (router → auth → ratelimit → audit → app) over real
//! HTTP, with its state in the real keyvalue database: scopes, rate limits
//! under concurrency, audit records, request ids, secrets kept out of logs,
//! and what survives a `kill -9`.

use crate::support::*;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Tokens of the tests: (id, token, scopes).
const TOKENS: &[(&str, &str, &str)] = &[
    ("reader", "tok-reader-1", "read"),
    ("writer", "tok-writer-2", "write:/echo write:/notes"),
    ("boss", "tok-boss-3", "admin"),
];

fn tokens_config() -> String {
    TOKENS
        .iter()
        .map(|(id, token, scopes)| {
            format!(
                "{id} {} {scopes}",
                tensor_wasm::platform::token::hash(token)
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A deployment file serving `world` for `tenant` with this gateway config.
fn deployment(dir: &Path, world: &Path, deps: &str, config: &str, secrets: &str) -> PathBuf {
    deployment_file(
        dir,
        &format!(
            r#"
[[deployment]]
name = "gw"
tenant = "acme"
world = {world:?}
deps = {{ {deps} }}

[deployment.grants]
config = {{ {config} }}
secrets = {{ {secrets} }}
"#
        ),
    )
}

/// `tensor-wasm audit query ARGS` against `data`: the records, one JSON value each.
fn audit_records(data: &Path, args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["audit", "query", "--data-dir", data.to_str().unwrap()];
    all.extend_from_slice(args);
    let (code, out, err) = run(&all);
    assert_eq!(code, 0, "{err}");
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn scopes_decide_401_403_or_200_and_mutations_are_audited() {
    let dir = scratch("gateway_scopes");
    let data = dir.join("data");
    let world = root().join("worlds/gateway.wac");
    let config = r#""router.routes" = "GET,HEAD =/ welcome; * /hello app; POST /echo app; * /admin app", "auth.admin-paths" = "/admin""#;
    let secrets = format!(
        r#""auth.tokens" = "{}", "app.key" = "sup3r-s3cret-value""#,
        tokens_config()
    );
    let file = deployment(&dir, &world, "", config, &secrets);
    let server = Server::start(
        &[file.to_str().unwrap(), "--data-dir", data.to_str().unwrap()],
        &dir.join("cache"),
    );
    let call = |method: &str, path: &str, token: Option<&str>| {
        let auth = token.map(bearer);
        let mut headers = Vec::new();
        if let Some(a) = &auth {
            headers.push(("authorization", a.as_str()));
        }
        request(server.addr, method, path, &headers, b"payload")
    };

    // The welcome page is public; the router answers 404 and 405 itself.
    assert_eq!(call("GET", "/", None).status, 200);
    let missing = call("GET", "/nowhere", None);
    assert_eq!(missing.status, 404, "{}", missing.text());
    assert!(missing.text().contains("not_found"));
    let wrong = call("PUT", "/echo", Some("tok-boss-3"));
    assert_eq!(wrong.status, 405);
    assert_eq!(wrong.header("allow"), Some("POST"));

    // No token, a bad token, a malformed header: 401 with a Bearer challenge.
    let none = call("GET", "/hello", None);
    assert_eq!(none.status, 401);
    assert_eq!(
        none.header("www-authenticate"),
        Some("Bearer realm=\"tensorwasm\"")
    );
    let bad = call("GET", "/hello", Some("tok-reader-1x"));
    assert_eq!(bad.status, 401);
    assert!(
        bad.header("www-authenticate")
            .unwrap()
            .contains("invalid_token")
    );
    let basic = request(
        server.addr,
        "GET",
        "/hello",
        &[("authorization", "Basic dXNlcjpwdw==")],
        b"",
    );
    assert_eq!(basic.status, 401);

    // Scopes: read covers GET anywhere; write:/echo covers POST /echo only;
    // admin covers everything, /admin included.
    assert_eq!(call("GET", "/hello", Some("tok-reader-1")).status, 200);
    let denied = call("POST", "/echo", Some("tok-reader-1"));
    assert_eq!(denied.status, 403, "{}", denied.text());
    assert!(denied.text().contains("insufficient_scope"));
    assert!(
        denied
            .header("www-authenticate")
            .unwrap()
            .contains("error=\"insufficient_scope\"")
    );
    assert_eq!(call("GET", "/hello", Some("tok-writer-2")).status, 403);
    let echoed = call("POST", "/echo", Some("tok-writer-2"));
    assert_eq!((echoed.status, echoed.text().as_str()), (200, "payload"));
    assert_eq!(call("POST", "/echo", Some("tok-boss-3")).status, 200);
    // /admin is admin-class even for GET: a read token cannot reach it;
    // an admin token gets through to the app (which has no such page).
    assert_eq!(call("GET", "/admin", Some("tok-reader-1")).status, 403);
    assert_eq!(call("GET", "/admin/x", Some("tok-boss-3")).status, 404);

    // N mutating requests that got through: exactly N audit records, each
    // with its request id, token id and client; GETs and refused requests
    // leave none.
    let mut ids = Vec::new();
    for i in 0..12 {
        let id = format!("req-{i}");
        let token = if i % 2 == 0 {
            "tok-writer-2"
        } else {
            "tok-boss-3"
        };
        let r = request(
            server.addr,
            "POST",
            "/echo",
            &[("authorization", &bearer(token)), ("x-request-id", &id)],
            b"x",
        );
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-request-id"), Some(id.as_str()));
        ids.push(id);
    }
    // A fresh id is made when the client sends none (or an invalid one).
    let made = call("GET", "/hello", Some("tok-reader-1"));
    assert_eq!(made.header("x-request-id").map(str::len), Some(32));
    let invalid = request(server.addr, "GET", "/", &[("x-request-id", "bad id!")], b"");
    assert_ne!(invalid.header("x-request-id"), Some("bad id!"));

    let records = audit_records(&data, &["--tenant", "acme"]);
    // 2 POSTs above (writer, boss) + 12 here.
    assert_eq!(records.len(), 14, "{records:#?}");
    for id in &ids {
        let found = audit_records(&data, &["--request-id", id]);
        assert_eq!(found.len(), 1, "{id}");
        let r = &found[0];
        assert_eq!(r["method"], "POST");
        assert_eq!(r["path"], "/echo");
        assert_eq!(r["tenant"], "acme");
        assert_eq!(r["deployment"], "gw");
        assert!(r["client"].as_str().unwrap().starts_with("127.0.0.1:"));
        assert!(["writer", "boss"].contains(&r["token"].as_str().unwrap()));
        assert!(r["time"].as_str().unwrap().ends_with('Z'));
    }
    assert!(audit_records(&data, &["--tenant", "other"]).is_empty());
    assert_eq!(audit_records(&data, &["--since", "1h"]).len(), 14);
    let (code, tail, err) = run(&[
        "audit",
        "tail",
        "-n",
        "3",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(tail.lines().count(), 3);
    assert!(
        tail.lines().last().unwrap().contains("\"req-11\""),
        "{tail}"
    );

    // Secrets (the token hashes, app.key) and tokens never reach the logs
    // or the metrics.
    let log = server.log();
    let metrics = server.metrics();
    for needle in [
        "sup3r-s3cret-value",
        "tok-writer-2",
        &tensor_wasm::platform::token::hash("tok-boss-3"),
    ] {
        assert!(!log.contains(needle), "{needle} in the log:\n{log}");
        assert!(!metrics.contains(needle), "{needle} in the metrics");
    }
}

#[test]
fn thirty_two_clients_on_one_token_get_no_more_than_qps_t_plus_burst() {
    rate_limit_holds("gateway_ratelimit", 1);
}

/// The same with warm instances, where each remembers the slot it last took
/// a token from.
#[test]
fn the_rate_limit_holds_with_reused_instances() {
    rate_limit_holds("gateway_ratelimit_reuse", 1000);
}

/// 32 clients on one token against a 40/s, burst 16 limit, each instance
/// serving up to `reuse` requests: admitted within QPS·t + BURST.
fn rate_limit_holds(name: &str, reuse: u32) {
    const QPS: f64 = 40.0;
    // BURST = 16 slots of one token each: the bucket is exact to one token.
    const BURST: f64 = 16.0;
    let dir = scratch(name);
    let world = root().join("worlds/gateway.wac");
    let config = format!(
        r#""router.routes" = "* /hello app", "ratelimit.default" = "{QPS}/{BURST}", "ratelimit.token.boss" = "off""#
    );
    let secrets = format!(r#""auth.tokens" = "{}""#, tokens_config());
    let file = deployment(&dir, &world, "", &config, &secrets);
    let text = std::fs::read_to_string(&file).unwrap();
    let text = text.replace(
        "deps = {",
        &format!("instances = {{ reuse = {reuse} }}\ndeps = {{"),
    );
    std::fs::write(&file, text).unwrap();
    let server = Server::start(&[file.to_str().unwrap()], &dir.join("cache"));
    let addr = server.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let clients: Vec<_> = (0..32)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let auth = bearer("tok-reader-1");
                let (mut ok, mut limited, mut other) = (0u32, 0u32, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    let r = request(addr, "GET", "/hello", &[("authorization", &auth)], b"");
                    match r.status {
                        200 => ok += 1,
                        429 => {
                            limited += 1;
                            assert!(r.header("retry-after").unwrap().parse::<u64>().unwrap() >= 1);
                            assert_eq!(r.header("ratelimit-limit"), Some("16"));
                            assert_eq!(r.header("ratelimit-remaining"), Some("0"));
                            assert!(r.header("ratelimit-reset").is_some());
                        }
                        s => other.push(format!("{s} {}", r.text())),
                    }
                }
                (ok, limited, other)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(4));
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut limited) = (0, 0);
    for c in clients {
        let (o, l, other) = c.join().unwrap();
        assert!(other.is_empty(), "{other:?}");
        ok += o;
        limited += l;
    }
    let t = started.elapsed().as_secs_f64();
    let bound = QPS * t + BURST;
    eprintln!("rate limit: {ok} admitted, {limited} limited in {t:.2} s (bound {bound:.1})");
    assert!(
        f64::from(ok) <= bound * 1.01,
        "{ok} admitted > {bound:.1} + 1%"
    );
    // The limiter does not starve its own bucket under contention either.
    assert!(
        f64::from(ok) >= bound * 0.85,
        "only {ok} admitted of {bound:.1}"
    );
    assert!(limited > ok, "{limited} limited");
    // A token with its own `off` policy is not limited.
    for _ in 0..60 {
        let r = request(
            addr,
            "GET",
            "/hello",
            &[("authorization", &bearer("tok-boss-3"))],
            b"",
        );
        assert_eq!(r.status, 200);
    }
}

/// The gateway in front of `notes` (keyvalue), as a world of the test's.
fn notes_world(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(root().join("worlds/gateway.wac"))
        .unwrap()
        .replace("new tensorwasm:hello", "new tensorwasm:notes");
    let world = dir.join("notes-gateway.wac");
    std::fs::write(&world, text).unwrap();
    world
}

#[test]
fn acknowledged_writes_and_audit_records_survive_kill_9() {
    let dir = scratch("gateway_kill9");
    let data = dir.join("data");
    let world = notes_world(&dir);
    let deps = format!("\"tensorwasm:notes\" = {:?}", guest("notes"));
    let config = r#""router.routes" = "* /notes app""#;
    let secrets = format!(r#""auth.tokens" = "{}""#, tokens_config());
    let file = deployment(&dir, &world, &deps, config, &secrets);
    let args = [file.to_str().unwrap(), "--data-dir", data.to_str().unwrap()];
    let server = Server::start(&args, &dir.join("cache"));
    let addr = server.addr;

    // Writers PUT distinct notes and bump counters; each remembers what was
    // acknowledged (a 2xx) and its request id.
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let auth = bearer("tok-writer-2");
                let (mut puts, mut counter) = (Vec::new(), 0u64);
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("w{w}-{i}");
                    let id = format!("kill9-{key}");
                    let value = format!("value of {key}");
                    let headers = [
                        ("authorization", auth.as_str()),
                        ("x-request-id", id.as_str()),
                    ];
                    let sent = try_request(
                        addr,
                        "PUT",
                        &format!("/notes/{key}"),
                        &headers,
                        value.as_bytes(),
                    );
                    match sent {
                        Ok(r) if r.status == 204 => {
                            puts.push((key.clone(), value.clone(), id.clone()))
                        }
                        Ok(r) => panic!("PUT answered {} {}", r.status, r.text()),
                        Err(_) => break, // the server died mid-request
                    }
                    let incr = try_request(
                        addr,
                        "POST",
                        &format!("/notes/count-{w}/incr"),
                        &headers[..1],
                        b"",
                    );
                    match incr {
                        Ok(r) if r.status == 200 => {
                            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
                            counter = v["value"].as_u64().unwrap();
                        }
                        Ok(r) => panic!("incr answered {} {}", r.status, r.text()),
                        Err(_) => break,
                    }
                    i += 1;
                }
                (puts, counter)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    server.kill9();
    stop.store(true, Ordering::Relaxed);
    let results: Vec<_> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    let acknowledged: usize = results.iter().map(|(p, _)| p.len()).sum();
    assert!(
        acknowledged >= 20,
        "only {acknowledged} writes before the kill"
    );
    let all_audited = |records: &[serde_json::Value], when: &str| {
        let recorded: std::collections::HashSet<&str> = records
            .iter()
            .filter_map(|r| r["request_id"].as_str())
            .collect();
        for (_, _, id) in results.iter().flat_map(|(p, _)| p) {
            assert!(
                recorded.contains(id.as_str()),
                "{when}: no audit record for {id}"
            );
        }
    };
    // Read at once, as an operator investigating the crash would, before any
    // server has run on the data again (the file may need repair first).
    all_audited(
        &audit_records(&data, &["--tenant", "acme"]),
        "right after the kill",
    );

    // Restarted on the same data: every acknowledged write is there.
    let server = Server::start(&args, &dir.join("cache"));
    let auth = bearer("tok-boss-3");
    for (w, (puts, counter)) in results.iter().enumerate() {
        for (key, value, _) in puts {
            let r = request(
                server.addr,
                "GET",
                &format!("/notes/{key}"),
                &[("authorization", &auth)],
                b"",
            );
            assert_eq!((r.status, r.text()), (200, value.clone()), "{key}");
        }
        let r = request(
            server.addr,
            "POST",
            &format!("/notes/count-{w}/incr?by=0"),
            &[("authorization", &auth)],
            b"",
        );
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert!(
            v["value"].as_u64().unwrap() >= *counter,
            "count-{w}: {v} < {counter}"
        );
    }
    // ... and every acknowledged PUT has its audit record.
    all_audited(
        &audit_records(&data, &["--tenant", "acme"]),
        "after the restart",
    );
    eprintln!("kill -9: {acknowledged} acknowledged writes, all present with their audit records");
}

#[test]
fn a_python_component_is_served_behind_the_gateway_unchanged() {
    // Built by this test with a second toolchain (componentize-py from PyPI).
    let dir = scratch("gateway_python");
    let app = dir.join("python-hello.wasm");
    let built = std::process::Command::new("bash")
        .arg(root().join("components/python-hello/build.sh"))
        .arg(&app)
        .output()
        .expect("run components/python-hello/build.sh");
    assert!(
        built.status.success(),
        "building the Python component failed:\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let text = std::fs::read_to_string(root().join("worlds/gateway.wac"))
        .unwrap()
        .replace("new tensorwasm:hello", "new tensorwasm:python-hello");
    let world = dir.join("python-gateway.wac");
    std::fs::write(&world, text).unwrap();
    let deps = format!("\"tensorwasm:python-hello\" = {app:?}");
    let config = r#""router.routes" = "GET =/ welcome; * /py app""#;
    let secrets = format!(r#""auth.tokens" = "{}""#, tokens_config());
    let data = dir.join("data");
    let file = deployment(&dir, &world, &deps, config, &secrets);
    let server = Server::start(
        &[file.to_str().unwrap(), "--data-dir", data.to_str().unwrap()],
        &dir.join("cache"),
    );
    // The public welcome route reaches the Python app directly ...
    let welcome = server.get("/");
    assert_eq!(
        (welcome.status, welcome.text().as_str()),
        (200, "Hello from Python! GET /\n")
    );
    // ... the rest only through auth, rate limit and audit.
    assert_eq!(server.get("/py/x").status, 401);
    let auth = bearer("tok-boss-3");
    let r = request(
        server.addr,
        "GET",
        "/py/x?q=1",
        &[("authorization", &auth)],
        b"",
    );
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "Hello from Python! GET /py/x?q=1\n")
    );
    let r = request(
        server.addr,
        "POST",
        "/py/y",
        &[("authorization", &auth), ("x-request-id", "py-1")],
        b"",
    );
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "Hello from Python! other /py/y\n")
    );
    let records = audit_records(&data, &["--request-id", "py-1"]);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["token"], "boss");
}

#[test]
fn the_audit_chain_catches_altered_removed_and_reordered_records() {
    let dir = scratch("gateway_chain");
    let data = dir.join("data");
    let world = root().join("worlds/gateway.wac");
    let config = r#""router.routes" = "POST /echo app""#;
    let secrets = format!(r#""auth.tokens" = "{}""#, tokens_config());
    let file = deployment(&dir, &world, "", config, &secrets);
    let args = [file.to_str().unwrap(), "--data-dir", data.to_str().unwrap()];
    let server = Server::start(&args, &dir.join("cache"));
    let post = |server: &Server, i: usize| {
        let id = format!("chain-{i}");
        let r = request(
            server.addr,
            "POST",
            "/echo",
            &[
                ("authorization", &bearer("tok-boss-3")),
                ("x-request-id", &id),
            ],
            b"x",
        );
        assert_eq!(r.status, 200, "{}", r.text());
    };
    for i in 0..4 {
        post(&server, i);
    }
    // Concurrent requests chain in commit order, never forking the chain.
    std::thread::scope(|s| {
        for i in 4..12 {
            let server = &server;
            s.spawn(move || post(server, i));
        }
    });
    assert!(server.terminate().success());
    let verify = || {
        run(&[
            "audit",
            "verify",
            "--tenant",
            "acme",
            "--data-dir",
            data.to_str().unwrap(),
        ])
    };
    let (code, out, err) = verify();
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("tenant `acme`: 12 records, 12 chain entries: intact"),
        "{out}"
    );
    assert!(data.join("audit-key").is_file());

    // Tamper with the database as someone without the key would, each case
    // on a fresh copy of the intact file.
    let db_file = data.join("keyvalue.redb");
    let intact = std::fs::read(&db_file).unwrap();
    let table = "kv/4/acme/audit";
    let def = redb::TableDefinition::<&str, &[u8]>::new(table);
    use redb::{ReadableDatabase, ReadableTable};
    let keys = || -> Vec<String> {
        let db = redb::Database::open(&db_file).unwrap();
        let txn = db.begin_read().unwrap();
        let t = txn.open_table(def).unwrap();
        t.iter()
            .unwrap()
            .map(|kv| kv.unwrap().0.value().to_string())
            .collect()
    };
    let records = keys();
    assert_eq!(records.len(), 12);
    type Records<'t> = redb::Table<'t, &'static str, &'static [u8]>;
    let tamper = |change: &dyn Fn(&mut Records)| {
        std::fs::write(&db_file, &intact).unwrap();
        let db = redb::Database::open(&db_file).unwrap();
        let txn = db.begin_write().unwrap();
        change(&mut txn.open_table(def).unwrap());
        txn.commit().unwrap();
        drop(db);
        let (code, out, err) = verify();
        assert_eq!(code, 1, "{out}{err}");
        out
    };
    let altered = tamper(&|t| {
        t.insert(records[3].as_str(), b"{\"forged\":true}".as_slice())
            .unwrap();
    });
    assert!(
        altered.contains(&format!("record `{}`", records[3])) && altered.contains("was altered"),
        "{altered}"
    );
    let removed = tamper(&|t| {
        t.remove(records[5].as_str()).unwrap();
    });
    assert!(
        removed.contains(&format!("record `{}`", records[5])) && removed.contains("was removed"),
        "{removed}"
    );
    let reordered = tamper(&|t| {
        // Two records trade places: each key now holds the other's record.
        let a = t
            .get(records[1].as_str())
            .unwrap()
            .unwrap()
            .value()
            .to_vec();
        let b = t
            .get(records[2].as_str())
            .unwrap()
            .unwrap()
            .value()
            .to_vec();
        t.insert(records[1].as_str(), b.as_slice()).unwrap();
        t.insert(records[2].as_str(), a.as_slice()).unwrap();
    });
    assert!(reordered.contains("was altered"), "{reordered}");
    let added = tamper(&|t| {
        t.insert("0000000000000000001-forged", b"{}".as_slice())
            .unwrap();
    });
    assert!(added.contains("is not in the chain"), "{added}");
}
