//! The operator's view with the real parts: a real Prometheus (Debian's
//! `prometheus` package; `scripts/test.sh` installs it) scrapes a loaded
//! host and evaluates docs/alerts.yaml, every PromQL expression of the
//! dashboard and the rules must return series, `promtool` checks and
//! unit-tests the rules, and `tensor-wasm observe --once` reads the host.

use crate::support::*;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const TOKEN: &str = "tok-observe-1";

/// `name` on the PATH or in /usr/bin, else a failure saying how to get it.
fn tool(name: &str) -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!("`{name}` is not installed: `apt-get install prometheus` (scripts/test.sh does it)")
    })
}

/// A Prometheus server on 127.0.0.1, stopped on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
}

impl Prometheus {
    /// Scrapes `target` every second as job `tensor-wasm`, evaluating
    /// `rules` every second.
    fn start(dir: &Path, target: SocketAddr, rules: &Path) -> Prometheus {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 rule_files: [{rules:?}]\n\
                 scrape_configs:\n  - job_name: tensor-wasm\n    static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new(tool("prometheus"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--enable-feature=exemplar-storage")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        Prometheus {
            child,
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
        }
    }

    /// GET `path` of the HTTP API, its `data`; `None` while it does not answer.
    fn api(&self, path: &str) -> Option<Value> {
        let r = try_request(self.addr, "GET", path, &[], b"").ok()?;
        let v: Value = serde_json::from_slice(&r.body).ok()?;
        assert_eq!(v["status"], "success", "{path}: {v}");
        Some(v["data"].clone())
    }

    /// The result of the instant query `expr`, which must evaluate.
    fn query(&self, expr: &str) -> Vec<Value> {
        let data = self
            .api(&format!("/api/v1/query?query={}", encode(expr)))
            .unwrap_or_else(|| panic!("no answer to {expr}"));
        data["result"].as_array().cloned().unwrap_or_default()
    }

    /// Waits (≤ 60 s) until `ready` holds.
    fn wait(&self, what: &str, ready: impl Fn(&Prometheus) -> bool) {
        let until = Instant::now() + Duration::from_secs(60);
        while !ready(self) {
            assert!(
                Instant::now() < until,
                "prometheus: {what} did not happen in 60 s"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encodes a query parameter.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}

/// Two tenants: the gateway world (every request audited: a durable
/// keyvalue write; warm instances; a concurrency limit) and a tensor service.
fn deployments(dir: &Path) -> PathBuf {
    let tokens = format!("watcher {} read", tensor_wasm::platform::token::hash(TOKEN));
    deployment_file(
        dir,
        &format!(
            r#"
[[deployment]]
name = "gw"
tenant = "acme"
world = {world:?}
instances = {{ reuse = 1000 }}
limits = {{ concurrency = 32 }}

[deployment.grants]
config = {{ "router.routes" = "* /hello app", "audit.policy" = "all" }}
secrets = {{ "auth.tokens" = "{tokens}" }}

[[deployment]]
name = "svc"
tenant = "beta"
component = {service:?}
route = {{ host = "svc.test" }}
"#,
            world = root().join("worlds/gateway.wac"),
            service = guest("tensor_service"),
        ),
    )
}

/// Keeps both deployments busy until `stop`.
fn traffic(addr: SocketAddr, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let auth = format!("Bearer {TOKEN}");
        let mlp = br#"{"input": [[0.5, -1.0]], "layers": [{"weight": [[1.0], [2.0]], "activation": "relu"}]}"#;
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            let r = request(addr, "GET", "/hello", &[("authorization", &auth)], b"");
            assert_eq!(r.status, 200, "{}", r.text());
            let r = request(addr, "POST", "/mlp", &[("host", "svc.test")], mlp);
            assert_eq!(r.status, 200, "{}", r.text());
            n += 2;
            std::thread::sleep(Duration::from_millis(20));
        }
        n
    })
}

/// Dashboard variables as a query sees them with "All" chosen.
fn expand(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$tenant", ".*")
        .replace("$deployment", ".*")
}

#[test]
fn prometheus_scrapes_a_loaded_host_and_every_dashboard_and_rule_expression_returns_series() {
    let dir = scratch("observability_prometheus");
    let data = dir.join("data");
    let file = deployments(&dir);
    // Traces go to a dead collector: every request is sampled, so latency
    // buckets carry trace-id exemplars, and the spans are dropped.
    let server = Server::start(
        &[
            file.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
            "--otlp-endpoint",
            "http://127.0.0.1:9",
        ],
        &dir.join("cache"),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let load = traffic(server.addr, stop.clone());
    let rules = root().join("docs/alerts.yaml");
    let prom = Prometheus::start(&dir, server.admin, &rules);

    // A few scrapes with traffic between them, and every rule evaluated.
    prom.wait("four scrapes of the host", |p| {
        p.api("/api/v1/query?query=count_over_time(up%7Bjob%3D%22tensor-wasm%22%7D%5B1m%5D)")
            .and_then(|d| d["result"][0]["value"][1].as_str().map(str::to_owned))
            .is_some_and(|n| n.parse::<f64>().unwrap_or(0.0) >= 4.0)
    });
    assert_eq!(prom.query("up{job=\"tensor-wasm\"} == 1").len(), 1);
    let groups = || {
        prom.api("/api/v1/rules").unwrap()["groups"]
            .as_array()
            .unwrap()
            .clone()
    };
    prom.wait("every rule evaluated twice", |_| {
        std::thread::sleep(Duration::from_secs(2));
        groups().iter().all(|g| {
            g["rules"].as_array().unwrap().iter().all(|r| {
                r["lastEvaluation"]
                    .as_str()
                    .is_some_and(|t| !t.starts_with("0001"))
            })
        })
    });
    let mut recorded = Vec::new();
    let mut alerts = 0;
    for group in groups() {
        for rule in group["rules"].as_array().unwrap() {
            // Evaluated without error (an alert's whole expression, its
            // threshold included).
            assert_eq!(rule["health"], "ok", "rule failed: {rule}");
            match rule["type"].as_str() {
                Some("recording") => recorded.push(rule["name"].as_str().unwrap().to_string()),
                _ => alerts += 1,
            }
        }
    }
    assert_eq!(
        (recorded.len(), alerts),
        (11, 11),
        "docs/alerts.yaml changed: update this test"
    );
    // The series the alerts compare against exist for the loaded deployments.
    for name in &recorded {
        assert!(
            !prom.query(name).is_empty(),
            "recording rule {name} returned no series"
        );
    }
    // The alerts' own inputs that are not recorded.
    for expr in [
        "min_over_time(tensorwasm_queued_requests[10m])",
        "histogram_quantile(0.99, sum by (instance, le) (rate(tensorwasm_keyvalue_commit_duration_seconds_bucket[10m])))",
        "rate(tensorwasm_trace_spans_dropped_total[10m])",
    ] {
        assert!(!prom.query(expr).is_empty(), "{expr} returned no series");
    }
    // No alert fires on a healthy host.
    let firing = prom.query("ALERTS{alertstate=\"firing\"}");
    assert!(firing.is_empty(), "alerts fired: {firing:?}");

    // Every dashboard query, with its variables at "All".
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("docs/dashboards/tensor-wasm-overview.json")).unwrap(),
    )
    .unwrap();
    let mut exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect();
    for var in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(q) = var["query"]["query"].as_str() {
            // label_values(METRIC{…}, LABEL) → the series it reads.
            let inner = q
                .trim_start_matches("label_values(")
                .rsplit_once(',')
                .unwrap()
                .0;
            exprs.push(inner.to_string());
        }
    }
    assert!(exprs.len() >= 30, "{} dashboard queries", exprs.len());
    for expr in &exprs {
        let result = prom.query(&expand(expr));
        assert!(
            !result.is_empty(),
            "dashboard query returned no series: {expr}"
        );
    }
    // Both tenants and the gateway's audit writes show up with their labels.
    let used = prom.query("tensorwasm:tensor_quota:used_ratio");
    let tenants: Vec<&str> = used
        .iter()
        .filter_map(|r| r["metric"]["tenant"].as_str())
        .collect();
    assert!(
        tenants.contains(&"acme") && tenants.contains(&"beta"),
        "{tenants:?}"
    );
    let audit = prom.query("sum by (deployment) (tensorwasm_audit_write_duration_seconds_count)");
    assert_eq!(audit[0]["metric"]["deployment"], "gw", "{audit:?}");
    // Counted by op: a series per op the tensor service ran.
    let ops = prom
        .query("sum by (op) (tensorwasm_tensor_ops_total{tenant=\"beta\",deployment=\"svc\"}) > 0");
    assert!(!ops.is_empty(), "the tensor service's ops are not counted");
    for s in &ops {
        let op = s["metric"]["op"].as_str().unwrap_or_default();
        assert!(!op.is_empty(), "an op series without its op: {s:?}");
    }

    // Latency buckets carry exemplars naming the sampled requests' traces.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let exemplars = prom
        .api(&format!(
            "/api/v1/query_exemplars?query=tensorwasm_request_duration_seconds_bucket&start={}&end={}",
            now - 600,
            now + 60
        ))
        .unwrap();
    let trace_ids: Vec<String> = exemplars
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["exemplars"].as_array().cloned().unwrap_or_default())
        .filter_map(|e| e["labels"]["trace_id"].as_str().map(str::to_owned))
        .collect();
    assert!(!trace_ids.is_empty(), "no exemplars: {exemplars}");
    assert!(trace_ids.iter().all(|t| t.len() == 32), "{trace_ids:?}");

    stop.store(true, Ordering::Relaxed);
    assert!(load.join().unwrap() > 0);

    // promtool: the rules are valid and their unit tests pass.
    let promtool = |args: &[&str]| {
        let out = Command::new(tool("promtool"))
            .args(args)
            .current_dir(root().join("docs"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "promtool {args:?}:\n{text}");
        text
    };
    assert!(promtool(&["check", "rules", "alerts.yaml"]).contains("22 rules found"));
    assert!(promtool(&["test", "rules", "alerts-test.yaml"]).contains("SUCCESS"));
}

#[test]
fn observe_once_prints_deployments_and_tenants_and_says_when_the_server_is_away() {
    let dir = scratch("observability_observe");
    let file = deployments(&dir);
    let server = Server::start(&[file.to_str().unwrap()], &dir.join("cache"));
    let stop = Arc::new(AtomicBool::new(false));
    let load = traffic(server.addr, stop.clone());
    std::thread::sleep(Duration::from_millis(300));
    let admin = server.admin.to_string();
    let (code, out, err) = run(&["observe", "--admin", &admin, "--once", "--interval", "1s"]);
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("health: ok"), "{out}");
    assert!(
        out.contains("backend: cpu") || out.contains("backend: cuda"),
        "{out}"
    );
    let row = |name: &str| {
        out.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no row {name}:\n{out}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    // DEPLOYMENT REQ/S P50 P99 5XX/S IN-FLIGHT QUEUED IDLE OPS/S REQUESTS
    let gw = row("acme/gw");
    assert!(gw[1].parse::<f64>().unwrap() > 1.0, "req/s: {gw:?}");
    assert_ne!(gw[2], "-", "p50: {gw:?}");
    assert_eq!(gw[4], "0.0", "5xx/s: {gw:?}");
    let svc = row("beta/svc");
    assert!(svc[8].parse::<f64>().unwrap() > 0.0, "ops/s: {svc:?}");
    // TENANT TENSOR MEMORY QUOTA USED WEIGHTS
    assert!(out.lines().any(|l| l.starts_with("TENANT")), "{out}");
    row("acme");
    row("beta");

    let gone = server.admin;
    drop(server);
    let (code, _, err) = run(&["observe", "--admin", &gone.to_string(), "--once"]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot reach the admin listener"), "{err}");
}
