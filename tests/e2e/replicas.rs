//! Buckets in a real Redis (`[deployment.keyvalue]`), and two replicas of a
//! server sharing it behind a real load balancer (HAProxy): the embedded
//! store's semantics, one global rate limit, every acknowledged audit record
//! in Redis exactly once, failover on `kill -9`, and 503s (not panics) while
//! Redis is down. `redis-server` and `haproxy` come from Debian
//! (scripts/test.sh installs them).

use crate::support::*;
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Where Debian puts a daemon (`/usr/sbin` is not on every user's PATH).
fn daemon(name: &str) -> PathBuf {
    ["/usr/bin", "/usr/sbin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(name))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A real `redis-server` with its append-only file in `dir`, fsynced on
/// every write (`appendfsync always`: what Redis acknowledges is on disk).
struct Redis {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Redis {
    fn start(dir: &Path) -> Redis {
        Redis::start_on(dir, free_port())
    }

    fn start_on(dir: &Path, port: u16) -> Redis {
        std::fs::create_dir_all(dir).unwrap();
        let child = Command::new(daemon("redis-server"))
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/test.sh installs it from Debian)");
        wait_for_port(port, "redis-server");
        Redis {
            child,
            port,
            dir: dir.to_path_buf(),
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection()
            .unwrap()
    }

    /// Every field of the hash that holds `tenant`'s bucket `bucket`.
    fn bucket(&self, tenant: &str, bucket: &str) -> HashMap<String, Vec<u8>> {
        let hash = format!("tensor-wasm:kv/{}/{tenant}/{bucket}", tenant.len());
        redis::cmd("HGETALL")
            .arg(hash)
            .query(&mut self.conn())
            .unwrap()
    }

    /// `tensor-wasm audit verify --redis` with the key in `data`.
    fn verify_audit(&self, data: &Path) -> (i32, String, String) {
        run(&[
            "audit",
            "verify",
            "--redis",
            &self.url(),
            "--data-dir",
            data.to_str().unwrap(),
        ])
    }

    fn stop(mut self) -> (PathBuf, u16) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        (self.dir.clone(), self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real HAProxy balancing round-robin over `servers` (serving address,
/// admin address for the `/readyz` check), retrying a refused connection on
/// the other server.
struct Haproxy {
    child: Child,
    addr: SocketAddr,
}

impl Haproxy {
    fn start(dir: &Path, servers: &[(SocketAddr, SocketAddr)]) -> Haproxy {
        let port = free_port();
        let mut config = format!(
            "global\n  maxconn 2000\n\
             defaults\n  mode http\n  timeout connect 1s\n  timeout client 30s\n  \
             timeout server 30s\n  retries 3\n  option redispatch\n\
             frontend fe\n  bind 127.0.0.1:{port}\n  default_backend be\n\
             backend be\n  balance roundrobin\n  option httpchk GET /readyz\n"
        );
        for (i, (addr, admin)) in servers.iter().enumerate() {
            config.push_str(&format!(
                "  server r{i} {addr} check port {} inter 200ms fall 2 rise 1\n",
                admin.port()
            ));
        }
        let file = dir.join("haproxy.cfg");
        std::fs::write(&file, config).unwrap();
        let child = Command::new(daemon("haproxy"))
            .arg("-f")
            .arg(&file)
            .arg("-db")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("haproxy (scripts/test.sh installs it from Debian)");
        wait_for_port(port, "haproxy");
        Haproxy {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `[deployment.keyvalue]` table keeping `buckets` (all if `None`) in `redis`.
fn in_redis(redis: &Redis, buckets: Option<&str>) -> String {
    let buckets = buckets.map_or(String::new(), |b| format!("buckets = [{b}]\n"));
    format!(
        "[deployment.keyvalue]\nbackend = \"{}\"\n{buckets}",
        redis.url()
    )
}

#[test]
fn buckets_in_redis_keep_the_embedded_stores_semantics_per_tenant() {
    let dir = scratch("redis_buckets");
    let redis = Redis::start(&dir.join("redis"));
    let notes = guest("notes");
    let file = deployment_file(
        &dir,
        &format!(
            r#"
[[deployment]]
name = "a"
tenant = "alpha"
component = {notes:?}
route = {{ host = "a.test" }}
{all}
[[deployment]]
name = "b"
tenant = "beta"
component = {notes:?}
route = {{ host = "b.test" }}
{some}
[[deployment]]
name = "local"
tenant = "gamma"
component = {notes:?}
route = {{ host = "c.test" }}
"#,
            all = in_redis(&redis, None),
            some = in_redis(&redis, Some(r#""shared", "volatile:hot""#)),
        ),
    );
    let server = Server::start(&[file.to_str().unwrap()], &dir.join("cache"));
    let on = |host: &str, method: &str, path: &str, body: &[u8]| {
        request(server.addr, method, path, &[("host", host)], body)
    };

    // Set, get, list (in order), delete: the values are Redis's.
    for (k, v) in [("b", "2"), ("a", "1"), ("c", "x")] {
        assert_eq!(
            on("a.test", "PUT", &format!("/notes/{k}"), v.as_bytes()).status,
            204
        );
    }
    assert_eq!(on("a.test", "GET", "/notes/a", b"").text(), "1");
    assert_eq!(
        on("a.test", "GET", "/notes", b"").text(),
        r#"["a","b","c"]"#
    );
    let held = redis.bucket("alpha", "notes");
    assert_eq!(held.get("c").map(Vec::as_slice), Some(&b"x"[..]));
    assert_eq!(on("a.test", "DELETE", "/notes/b", b"").status, 204);
    assert_eq!(on("a.test", "GET", "/notes/b", b"").status, 404);
    assert!(!redis.bucket("alpha", "notes").contains_key("b"));

    // Increments: decimal u64, as the embedded store: absent is 0, a
    // non-number and an overflow are errors that change nothing.
    let incr = |by: &str| on("a.test", "POST", &format!("/notes/n/incr?by={by}"), b"");
    assert_eq!(incr("5").text(), r#"{"value":5}"#);
    assert_eq!(
        incr("18446744073709551610").text(),
        r#"{"value":18446744073709551615}"#
    );
    let over = incr("1");
    assert_eq!(over.status, 400, "{}", over.text());
    assert!(over.text().contains("overflows u64"), "{}", over.text());
    assert_eq!(
        on("a.test", "GET", "/notes/n", b"").text(),
        "18446744073709551615"
    );
    let word = on("a.test", "POST", "/notes/c/incr", b"");
    assert!(
        word.text().contains("not a decimal number"),
        "{}",
        word.text()
    );
    redis::cmd("HSET")
        .arg("tensor-wasm:kv/5/alpha/notes")
        .arg("z")
        .arg("+007")
        .exec(&mut redis.conn())
        .unwrap();
    let z = on("a.test", "POST", "/notes/z/incr?by=1", b"");
    assert_eq!(z.text(), r#"{"value":8}"#);

    // Tenants stay apart in one Redis; a deployment keeps only the buckets
    // it lists there, the rest in the server's own store.
    assert_eq!(on("b.test", "GET", "/notes/a", b"").status, 404);
    assert_eq!(
        on("b.test", "PUT", "/notes/k?bucket=shared", b"in redis").status,
        204
    );
    assert_eq!(on("b.test", "PUT", "/notes/k", b"on disk").status, 204);
    assert_eq!(
        on("b.test", "PUT", "/notes/v?bucket=volatile:hot", b"hot").status,
        204
    );
    assert_eq!(redis.bucket("beta", "shared").len(), 1);
    assert_eq!(redis.bucket("beta", "volatile:hot").len(), 1);
    assert!(redis.bucket("beta", "notes").is_empty());
    assert_eq!(on("b.test", "GET", "/notes/k", b"").text(), "on disk");
    assert_eq!(on("c.test", "PUT", "/notes/k", b"local").status, 204);
    assert!(redis.bucket("gamma", "notes").is_empty());

    // Redis down: calls that need it fail with a clear error, the others
    // are served; back up on the same port, the server reconnects.
    let (redis_dir, port) = redis.stop();
    let down = on("a.test", "GET", "/notes/a", b"");
    assert_eq!(down.status, 400, "{}", down.text());
    assert!(down.text().contains("could not be read"), "{}", down.text());
    assert_eq!(on("b.test", "GET", "/notes/k", b"").text(), "on disk");
    assert_eq!(on("c.test", "GET", "/notes/k", b"").text(), "local");
    // The log line may trail the response a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !server.log().contains("Redis read from redis://127.0.0.1") {
        assert!(Instant::now() < deadline, "{}", server.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let redis = Redis::start_on(&redis_dir, port);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = on("a.test", "GET", "/notes/a", b"");
        if r.status == 200 {
            assert_eq!(r.text(), "1", "the AOF kept what was acknowledged");
            break;
        }
        assert!(Instant::now() < deadline, "no reconnect: {}", r.text());
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(redis);
}

/// An answer: status, request id, when.
type Answer = (u16, String, Instant);

/// Tokens: a reader (rate limited) and an admin (not), hashed as auth wants.
fn gateway_file(dir: &Path, redis: &Redis, qps: u32, burst: u32) -> PathBuf {
    let tokens = [("reader", "tok-r", "read"), ("boss", "tok-b", "admin")]
        .iter()
        .map(|(id, t, s)| format!("{id} {} {s}", tensor_wasm::platform::token::hash(t)))
        .collect::<Vec<_>>()
        .join("; ");
    let world = root().join("worlds/gateway.wac");
    deployment_file(
        dir,
        &format!(
            r#"
[[deployment]]
name = "gw"
tenant = "acme"
world = {world:?}
instances = {{ reuse = 100 }}

[deployment.grants]
config = {{ "router.routes" = "* /hello app; POST /echo app", "ratelimit.default" = "{qps}/{burst}", "ratelimit.token.boss" = "off" }}
secrets = {{ "auth.tokens" = "{tokens}" }}

{kv}"#,
            kv = in_redis(redis, None),
        ),
    )
}

/// Calls `path` through `addr` from `clients` threads until `stop`; each
/// answer's status, request id and when it came (0: no answer).
fn traffic(
    addr: SocketAddr,
    clients: usize,
    method: &'static str,
    token: &'static str,
    stop: &Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<Vec<Answer>>> {
    (0..clients)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let auth = format!("Bearer {token}");
                let mut seen = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let headers = [("authorization", auth.as_str())];
                    let path = if method == "GET" { "/hello" } else { "/echo" };
                    let answer = match try_request(addr, method, path, &headers, b"x") {
                        Ok(r) => (r.status, r.header("x-request-id").unwrap_or("").to_string()),
                        Err(_) => (0, String::new()),
                    };
                    seen.push((answer.0, answer.1, Instant::now()));
                }
                seen
            })
        })
        .collect()
}

#[test]
fn replicas_behind_haproxy_share_one_rate_limit_and_lose_no_audit_record_on_kill_9() {
    let dir = scratch("redis_replicas");
    let redis = Redis::start(&dir.join("redis"));
    const QPS: u32 = 20;
    const BURST: u32 = 10;
    let file = gateway_file(&dir, &redis, QPS, BURST);
    // Replicas chain audit records in Redis with one key (docs/SCALING.md).
    let key = "5eed".repeat(16);
    for n in 1..=2 {
        let data = dir.join(format!("data-{n}"));
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("audit-key"), &key).unwrap();
    }
    let start = |n: usize| {
        let data = dir.join(format!("data-{n}"));
        Server::start(
            &[file.to_str().unwrap(), "--data-dir", data.to_str().unwrap()],
            &dir.join(format!("cache-{n}")),
        )
    };
    let (one, two) = (start(1), start(2));
    let lb = Haproxy::start(&dir, &[(one.addr, one.admin), (two.addr, two.admin)]);
    let auth = [("authorization", "Bearer tok-b")];
    let deadline = Instant::now() + Duration::from_secs(10);
    while try_request(lb.addr, "GET", "/hello", &auth, b"")
        .map(|r| r.status)
        .ok()
        != Some(200)
    {
        assert!(Instant::now() < deadline, "the balancer never answered");
        std::thread::sleep(Duration::from_millis(100));
    }

    // 32 clients on one token through the balancer: one global bound, as
    // if one server answered (two separate limits would admit twice).
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let clients = traffic(lb.addr, 32, "GET", "tok-r", &stop);
    std::thread::sleep(Duration::from_secs(4));
    stop.store(true, Ordering::Relaxed);
    let seen: Vec<Answer> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    let t = started.elapsed().as_secs_f64();
    let ok = seen.iter().filter(|a| a.0 == 200).count() as f64;
    let limited = seen.iter().filter(|a| a.0 == 429).count();
    let other: Vec<_> = seen.iter().filter(|a| ![200, 429].contains(&a.0)).collect();
    let bound = f64::from(QPS) * t + f64::from(BURST);
    eprintln!("2 replicas: {ok} admitted, {limited} limited in {t:.2} s (bound {bound:.1})");
    assert!(other.is_empty(), "{other:?}");
    assert!(ok <= bound * 1.01, "{ok} admitted > {bound:.1}");
    assert!(ok >= bound * 0.8, "only {ok} admitted of {bound:.1}");
    let served = |s: &Server| metric(&s.metrics(), "tensorwasm_requests_total", &[]);
    assert!(
        served(&one) > 100.0 && served(&two) > 100.0,
        "both replicas served"
    );

    // Audited uploads through the balancer; one replica is killed -9
    // halfway. Clients see only its in-flight requests fail; every
    // acknowledged upload has its audit record in Redis, exactly once.
    let stop = Arc::new(AtomicBool::new(false));
    let clients = traffic(lb.addr, 16, "POST", "tok-b", &stop);
    std::thread::sleep(Duration::from_millis(1500));
    let killed = Instant::now();
    one.kill9();
    std::thread::sleep(Duration::from_millis(2500));
    stop.store(true, Ordering::Relaxed);
    let per_client: Vec<Vec<Answer>> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let seen: Vec<&Answer> = per_client.iter().flatten().collect();
    let acked: Vec<&str> = seen
        .iter()
        .filter(|a| a.0 == 200)
        .map(|a| a.1.as_str())
        .collect();
    let failed: Vec<(u16, Duration)> = seen
        .iter()
        .filter(|a| a.0 != 200)
        .map(|a| (a.0, a.2.saturating_duration_since(killed)))
        .collect();
    eprintln!(
        "failover: {} acknowledged, {} failed (status, time after the kill): {failed:?}",
        acked.len(),
        failed.len()
    );
    // What failed was in flight on the killed replica as it died (accepted
    // or queued in its listen backlog): answered 502 within a moment of the
    // kill, a couple per client at most; afterwards everyone is served.
    assert!(failed.len() <= 32, "{} failures", failed.len());
    for (status, after) in &failed {
        assert_eq!(*status, 502, "{failed:?}");
        assert!(
            *after < Duration::from_millis(500),
            "a failure {after:?} after the kill"
        );
    }
    for client in &per_client {
        assert_eq!(
            client.last().map(|a| a.0),
            Some(200),
            "served after the failover"
        );
    }
    let mut records: HashMap<String, usize> = HashMap::new();
    for value in redis.bucket("acme", "audit").values() {
        let record: serde_json::Value = serde_json::from_slice(value).unwrap();
        if record["method"] == "POST" {
            *records
                .entry(record["request_id"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    for id in &acked {
        assert_eq!(records.get(*id), Some(&1), "acknowledged upload {id}");
    }
    drop(two);

    // Both replicas extended one chain, through the kill: intact, every
    // record chained; a record changed in Redis breaks it, by name.
    let verify = || redis.verify_audit(&dir.join("data-2"));
    let (code, out, err) = verify();
    assert_eq!(code, 0, "{out}{err}");
    let audited = redis.bucket("acme", "audit");
    assert!(
        out.contains(&format!("tenant `acme`: {} records", audited.len()))
            && out.contains("intact"),
        "{out}"
    );
    // Records in Redis are read like the embedded store's.
    let id = acked[acked.len() / 2];
    let (code, out, err) = run(&[
        "audit",
        "query",
        "--redis",
        &redis.url(),
        "--request-id",
        id,
    ]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "{out}");
    let record: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(
        (record["request_id"].as_str(), record["method"].as_str()),
        (Some(id), Some("POST"))
    );
    let (code, out, err) = run(&["audit", "tail", "--redis", &redis.url(), "-n", "3"]);
    assert_eq!((code, out.lines().count()), (0, 3), "{out}{err}");
    let victim = audited.keys().min().unwrap().clone();
    redis::cmd("HSET")
        .arg("tensor-wasm:kv/4/acme/audit")
        .arg(&victim)
        .arg("{\"forged\":true}")
        .exec(&mut redis.conn())
        .unwrap();
    let (code, out, err) = verify();
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains(&format!("BROKEN: record `{victim}`")) && out.contains("was altered"),
        "{out}"
    );
}

/// A server whose `audit-key` differs from the one that made a chain in
/// Redis refuses to extend it (its audited requests get 503, its log says
/// why) instead of breaking it.
#[test]
fn a_replica_with_another_audit_key_does_not_break_the_chain_in_redis() {
    let dir = scratch("redis_audit_key");
    let redis = Redis::start(&dir.join("redis"));
    let file = gateway_file(&dir, &redis, 1000, 1000);
    let start = |n: usize| {
        let data = dir.join(format!("data-{n}"));
        Server::start(
            &[file.to_str().unwrap(), "--data-dir", data.to_str().unwrap()],
            &dir.join(format!("cache-{n}")),
        )
    };
    let auth = [("authorization", "Bearer tok-b")];
    let one = start(1);
    for _ in 0..3 {
        let r = request(one.addr, "POST", "/echo", &auth, b"x");
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let two = start(2);
    let r = request(two.addr, "POST", "/echo", &auth, b"x");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("audit_unavailable"), "{}", r.text());
    let deadline = Instant::now() + Duration::from_secs(5);
    while !two.log().contains("made with another audit-key") {
        assert!(Instant::now() < deadline, "{}", two.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = request(one.addr, "POST", "/echo", &auth, b"x");
    assert_eq!(r.status, 200, "{}", r.text());
    let verify = |n: usize| redis.verify_audit(&dir.join(format!("data-{n}")));
    let (code, out, err) = verify(1);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("tenant `acme`: 4 records, 4 chain entries: intact"),
        "{out}"
    );
    let (code, out, _) = verify(2);
    assert_eq!(code, 1, "the other key cannot vouch for it: {out}");
}

/// The host's own audit record of an admin change goes where the deployment
/// keeps its audit bucket: into Redis, chained with the guests' records; and
/// while that Redis is down, into the server's database (the change is not
/// held hostage by a dead store).
#[test]
fn an_admin_change_is_audited_where_the_deployment_keeps_its_audit() {
    let dir = scratch("redis_admin_audit");
    let redis = Redis::start(&dir.join("redis"));
    let hello = guest("hello");
    let kv = in_redis(&redis, None);
    let file = deployment_file(
        &dir,
        &format!(
            "[[deployment]]\nname = \"one\"\ntenant = \"acme\"\ncomponent = {hello:?}\n\
             route = {{ path = \"/one\" }}\n{kv}\n\
             [[deployment]]\nname = \"two\"\ntenant = \"acme\"\ncomponent = {hello:?}\n\
             route = {{ path = \"/two\" }}\n{kv}"
        ),
    );
    let data = dir.join("data");
    let server = Server::start(
        &[file.to_str().unwrap(), "--data-dir", data.to_str().unwrap()],
        &dir.join("cache"),
    );
    let admin = std::fs::read_to_string(data.join("admin-token")).unwrap();
    let bearer = format!("Bearer {}", admin.trim());
    let undeploy = |name: &str| {
        let path = format!("/v1/deployments/{name}");
        let r = request(
            server.admin,
            "DELETE",
            &path,
            &[("authorization", &bearer)],
            b"",
        );
        assert_eq!(r.status, 200, "{}", r.text());
    };
    let admin_records = |source: &[&str]| -> Vec<String> {
        let mut args = vec!["audit", "tail", "--tenant", "acme"];
        args.extend_from_slice(source);
        let (code, out, err) = run(&args);
        assert_eq!(code, 0, "{err}");
        out.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|r| r["method"] == "ADMIN")
            .map(|r| r["deployment"].as_str().unwrap().to_string())
            .collect()
    };
    let url = redis.url();
    let data_dir = data.to_str().unwrap();
    undeploy("one");
    assert_eq!(admin_records(&["--redis", &url]), ["one"]);
    let (code, out, err) = redis.verify_audit(&data);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("intact"), "{out}");

    drop(redis.stop());
    undeploy("two");
    assert_eq!(admin_records(&["--data-dir", data_dir]), ["two"]);
    assert!(
        server
            .log()
            .contains("could not go where its audit bucket is"),
        "{}",
        server.log()
    );
}
