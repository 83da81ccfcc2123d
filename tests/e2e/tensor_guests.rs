//! Guests using each TensorWasm interface over HTTP, and hostile tensor
//! guests: quota exhaustion, leaked, dropped and forged handles.

use crate::reference::{self as r, Nd};
use crate::support::*;
use serde_json::{Value, json};
use std::path::Path;

/// Writes a small safetensors file: `w` [2, 3] f32, `b` [3] f32, `ids` [2] i64.
pub(crate) fn write_safetensors(path: &Path) {
    let w: Vec<f32> = vec![1.0, -2.0, 3.5, 0.25, 5.0, -6.0];
    let b: Vec<f32> = vec![0.5, 1.5, -2.5];
    let ids: Vec<i64> = vec![7, -3];
    let mut data = Vec::new();
    w.iter().for_each(|x| data.extend(x.to_le_bytes()));
    b.iter().for_each(|x| data.extend(x.to_le_bytes()));
    ids.iter().for_each(|x| data.extend(x.to_le_bytes()));
    let mut header = json!({
        "__metadata__": {"format": "pt", "source": "tensor_guests test"},
        "w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
        "b": {"dtype": "F32", "shape": [3], "data_offsets": [24, 36]},
        "ids": {"dtype": "I64", "shape": [2], "data_offsets": [36, 52]},
    })
    .to_string();
    while !header.len().is_multiple_of(8) {
        header.push(' ');
    }
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend(header.as_bytes());
    file.extend(data);
    std::fs::write(path, file).unwrap();
}

fn json_of(resp: &Resp) -> Value {
    serde_json::from_slice(&resp.body)
        .unwrap_or_else(|_| panic!("not JSON ({}): {}", resp.status, resp.text()))
}

fn rows(v: &Value) -> Vec<Vec<f64>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

fn nd(rows: &[Vec<f64>]) -> Nd {
    Nd::new(
        &[rows.len(), rows[0].len()],
        rows.iter().flatten().copied().collect(),
    )
}

fn assert_rows_close(got: &[Vec<f64>], want: &Nd) {
    let flat: Vec<f64> = got.iter().flatten().copied().collect();
    assert_eq!(flat.len(), want.data.len());
    for (g, w) in flat.iter().zip(&want.data) {
        assert!((g - w).abs() <= 1e-4 * (1.0 + w.abs()), "got {g}, want {w}");
    }
}

#[test]
fn each_interface_works_from_a_guest_over_http() {
    let dir = scratch("tensor_interfaces");
    write_safetensors(&dir.join("model.safetensors"));
    let file = deployment_file(
        &dir,
        &format!(
            r#"
[[deployment]]
name = "service"
tenant = "acme"
component = {service:?}
route = {{ host = "svc.test" }}

[[deployment]]
name = "probe"
tenant = "acme"
component = {probe:?}
limits = {{ timeout = "20s" }}
grants = {{ weights = {{ model = "model.safetensors" }} }}
"#,
            service = guest("tensor_service"),
            probe = guest("tensor_probe"),
        ),
    );
    let server = Server::start(&[file.to_str().unwrap()], &dir.join("cache"));
    let post = |path: &str, body: &Value| {
        request(
            server.addr,
            "POST",
            path,
            &[("host", "svc.test")],
            body.to_string().as_bytes(),
        )
    };

    // wasi:tensor: an MLP and an attention block, checked against f64.
    let x = vec![vec![0.5, -1.0, 2.0], vec![1.5, 0.25, -0.75]];
    let w1 = vec![
        vec![0.1, -0.2, 0.3, 0.4],
        vec![0.5, 0.6, -0.7, 0.8],
        vec![-0.9, 1.0, 1.1, -1.2],
    ];
    let b1 = vec![0.01, -0.02, 0.03, 0.5];
    let w2 = vec![
        vec![1.0, -1.0],
        vec![0.5, 0.5],
        vec![-0.25, 2.0],
        vec![0.75, 0.0],
    ];
    let resp = post(
        "/mlp",
        &json!({"input": x, "layers": [
            {"weight": w1, "bias": b1, "activation": "relu"},
            {"weight": w2, "activation": "none"}]}),
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    let h = r::unary(
        &r::binary(
            &r::matmul(&nd(&x), &nd(&w1), false, false),
            &Nd::new(&[4], b1.clone()),
            |a, b| a + b,
        ),
        |v| v.max(0.0),
    );
    assert_rows_close(
        &rows(&json_of(&resp)["output"]),
        &r::matmul(&h, &nd(&w2), false, false),
    );

    let ident = vec![
        vec![1.0, 0.0, 0.0, 0.0],
        vec![0.0, 1.0, 0.0, 0.0],
        vec![0.0, 0.0, 1.0, 0.0],
        vec![0.0, 0.0, 0.0, 1.0],
    ];
    let seq = vec![
        vec![0.1, 0.2, 0.3, 0.4],
        vec![-0.5, 0.6, 0.7, -0.8],
        vec![0.9, -1.0, 1.1, 1.2],
    ];
    let resp = post(
        "/attention",
        &json!({"x": seq, "wq": ident, "wk": ident, "wv": ident, "wo": ident, "heads": 2, "causal": true}),
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    // Reference: heads split the width; with identity projections q = k = v = x.
    let xs = nd(&seq);
    let split = r::permute(&Nd::new(&[1, 3, 2, 2], xs.data.clone()), &[0, 2, 1, 3]);
    let att = r::attention(&split, &split, &split, None, 1.0 / 2f64.sqrt(), true);
    let merged = r::permute(&att, &[0, 2, 1, 3]);
    assert_rows_close(
        &rows(&json_of(&resp)["output"]),
        &Nd::new(&[3, 4], merged.data),
    );
    // A tensor error in a service is a 422 with the variant.
    let resp = post(
        "/mlp",
        &json!({"input": [[1.0, 2.0]], "layers": [{"weight": [[1.0, 2.0, 3.0]]}]}),
    );
    assert_eq!(resp.status, 422);
    assert!(resp.text().contains("invalid-shape"), "{}", resp.text());

    // wasi:tensor/weights: granted file, listed in file order, read back.
    let v = json_of(&server.get("/weights?name=model&tensor=w"));
    let names: Vec<&str> = v["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["w", "b", "ids"]);
    assert_eq!(v["tensors"][2]["dtype"], "i64");
    assert_eq!(v["tensor"]["shape"], json!([2, 3]));
    assert_eq!(
        v["tensor"]["data"],
        json!([1.0, -2.0, 3.5, 0.25, 5.0, -6.0])
    );
    let v = json_of(&server.get("/weights?name=model&tensor=ids"));
    assert_eq!(v["tensor"]["data"], json!([7, -3]));
    let v = json_of(&server.get("/weights?name=other"));
    assert_eq!(v["error"]["kind"], "not-granted");
    let v = json_of(&server.get("/weights?name=model&tensor=nope"));
    assert_eq!(v["error"]["kind"], "not-found");

    // tensor.from-bytes (read in place from guest memory) and back, for
    // each element size; a length that does not fit the shape is refused.
    for (dtype, size) in [("u8", 1usize), ("f16", 2), ("f32", 4), ("i64", 8)] {
        let n = 4099;
        let body: Vec<u8> = (0..n * size).map(|i| (i * 131 % 251) as u8).collect();
        let path = format!("/bytes?shape={n}&dtype={dtype}");
        let resp = request(server.addr, "POST", &path, &[], &body);
        assert_eq!(resp.status, 200, "{dtype}: {}", resp.text());
        assert!(resp.body == body, "{dtype}: bytes changed on the way");
        let resp = request(server.addr, "POST", &path, &[], &body[1..]);
        assert_eq!(resp.status, 422, "{dtype}");
        assert!(resp.text().contains("invalid-argument"), "{}", resp.text());
    }

    // wasi:cuda: without a GPU every family answers no-device (on the GPU
    // check, tests/e2e/cuda.rs covers it).
    let v = json_of(&server.get("/cuda"));
    if std::env::var_os("TENSOR_WASM_TEST_DEVICE").is_none() {
        for (family, answer) in v.as_object().unwrap() {
            assert_eq!(answer, "no-device", "wasi:cuda {family}");
        }
    } else {
        assert_eq!(v["alloc"], "ok", "{v}");
        assert_eq!(v["tensor-into-buffer"], "ok", "{v}");
    }

    // wasi:scheduler: a fresh request has most of its 20 s budget.
    let v = json_of(&server.get("/scheduler"));
    assert_eq!(v["yield"], "continue");
    let left = v["remaining_ns"].as_u64().unwrap();
    assert!(left > 15_000_000_000 && left <= 20_000_000_000, "{left}");

    // Weights are not charged to the tenant, and nothing is left held.
    let m = server.metrics();
    assert_eq!(
        metric(&m, "tensorwasm_tensor_bytes", &["tenant=\"acme\""]),
        0.0,
        "{m}"
    );
}

#[test]
fn hostile_tensor_guests_are_contained() {
    hostile_tensor_suite("tensor_hostile", 1);
}

/// The same with warm instances: a request that leaves tensors behind gets
/// its instance dropped (freeing them), so reuse never grows a tenant's
/// memory, and the other tenant's reused instances keep computing.
#[test]
fn hostile_tensor_guests_are_contained_with_reused_instances() {
    let m = hostile_tensor_suite("tensor_hostile_reuse", 100);
    let greedy = "deployment=\"greedy\"";
    let left = "reason=\"handles_left\"";
    assert!(
        metric(&m, "tensorwasm_instance_discards_total", &[greedy, left]) >= 5.0,
        "{m}"
    );
    assert!(
        metric(
            &m,
            "tensorwasm_instance_reuses_total",
            &["deployment=\"steady\""]
        ) >= 10.0,
        "{m}"
    );
}

/// Runs the hostile tensor cases with `reuse` requests per instance;
/// returns the metrics at the end.
fn hostile_tensor_suite(name: &str, reuse: u32) -> String {
    let dir = scratch(name);
    let file = deployment_file(
        &dir,
        &format!(
            r#"
[[deployment]]
name = "greedy"
tenant = "greedy"
component = {probe:?}
route = {{ host = "greedy.test" }}
limits = {{ tensor-memory = "16MiB" }}
instances = {{ reuse = {reuse} }}

[[deployment]]
name = "steady"
tenant = "steady"
component = {probe:?}
route = {{ host = "steady.test" }}
limits = {{ tensor-memory = "64MiB" }}
instances = {{ reuse = {reuse} }}
"#,
            probe = guest("tensor_probe"),
        ),
    );
    let server = Server::start(&[file.to_str().unwrap()], &dir.join("cache"));
    let addr = server.addr;
    let greedy = |path: &str| request(addr, "GET", path, &[("host", "greedy.test")], b"");

    // The other tenant keeps computing correct results throughout.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let steady = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let body = json!({"op": "matmul", "inputs": [
                {"data": [1.0, 2.0, 3.0, 4.0], "shape": [2, 2]},
                {"data": [5.0, 6.0, 7.0, 8.0], "shape": [2, 2]}]})
            .to_string();
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || n < 20 {
                let resp = request(
                    addr,
                    "POST",
                    "/op",
                    &[("host", "steady.test")],
                    body.as_bytes(),
                );
                assert_eq!(resp.status, 200, "{}", resp.text());
                assert_eq!(json_of(&resp)["data"], json!([19.0, 22.0, 43.0, 50.0]));
                n += 1;
            }
            n
        })
    };

    // Allocating past the cap: quota-exceeded with the numbers, not a crash.
    let v = json_of(&greedy("/quota?mb=100"));
    assert_eq!(v["error"], "quota-exceeded", "{v}");
    assert_eq!(v["allocated_mb"], 16);
    assert_eq!(v["detail"]["limit"], 16 << 20);
    assert_eq!(v["detail"]["requested"], 1 << 20);
    // Leaked handles are freed when the instance ends: the cap is reusable.
    for _ in 0..5 {
        let resp = greedy("/leak?mb=12");
        assert_eq!(resp.status, 200, "{}", resp.text());
    }
    let resp = greedy("/leak?mb=40");
    assert_eq!(resp.status, 422);
    assert!(resp.text().contains("quota-exceeded"));
    // Using a dropped or forged handle traps that request only.
    for path in ["/dropped-handle", "/foreign-handle"] {
        let resp = greedy(path);
        assert_eq!(resp.status, 500, "{path}: {}", resp.text());
    }
    // Many at once against the same cap.
    let handles: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                request(addr, "GET", "/leak?mb=4", &[("host", "greedy.test")], b"").status
            })
        })
        .collect();
    let statuses: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 422),
        "{statuses:?}"
    );
    assert!(statuses.contains(&200), "{statuses:?}");

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let served = steady.join().unwrap();
    assert!(served >= 20);
    assert_eq!(greedy("/quota?mb=1").status, 200);

    // Accounting is back to zero for both tenants.
    let m = server.metrics();
    assert_eq!(
        metric(&m, "tensorwasm_tensor_bytes", &["tenant=\"greedy\""]),
        0.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "tensorwasm_tensor_bytes", &["tenant=\"steady\""]),
        0.0,
        "{m}"
    );
    assert!(
        metric(
            &m,
            "tensorwasm_guest_traps_total",
            &["deployment=\"greedy\""]
        ) >= 2.0,
        "{m}"
    );
    let log = server.log();
    assert!(log.contains("unknown handle index"), "{log}");
    m
}

#[test]
fn bad_weights_grants_are_refused_at_start() {
    let dir = scratch("tensor_bad_weights");
    std::fs::write(
        dir.join("junk.safetensors"),
        b"\x10\0\0\0\0\0\0\0{not json}     ",
    )
    .unwrap();
    // A GGUF header that promises a tensor and ends.
    std::fs::write(
        dir.join("junk.gguf"),
        b"GGUF\x03\0\0\0\x01\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0",
    )
    .unwrap();
    for (weights, needle) in [
        ("missing.safetensors", "does not exist"),
        ("junk.safetensors", "not a valid safetensors file"),
        ("junk.gguf", "not a valid GGUF file"),
    ] {
        let file = deployment_file(
            &dir,
            &format!(
                "[[deployment]]\nname = \"m\"\ntenant = \"t\"\ncomponent = {:?}\ngrants = {{ weights = {{ model = \"{weights}\" }} }}\n",
                guest("tensor_probe")
            ),
        );
        let (code, _, stderr) = run(&[
            "serve",
            file.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "off",
        ]);
        assert_eq!(code, 1, "{stderr}");
        assert!(stderr.contains(needle), "{stderr}");
        assert!(
            stderr.contains("error:") && !stderr.contains("panicked"),
            "{stderr}"
        );
    }
}

/// Four tenants at once: one keeps exhausting its tensor cap while the other
/// three keep getting correct products (each its own data, checked against
/// an f64 reference); afterwards every tenant's accounting is back to zero.
/// On the GPU check each tenant is its own CUDA context.
#[test]
fn four_tenants_one_exhausting_its_cap() {
    let dir = scratch("tensor_four_tenants");
    let mut toml = String::new();
    for (name, cap) in [
        ("t0", "16MiB"),
        ("t1", "64MiB"),
        ("t2", "64MiB"),
        ("t3", "64MiB"),
    ] {
        toml += &format!(
            "[[deployment]]\nname = \"{name}\"\ntenant = \"{name}\"\ncomponent = {:?}\n\
             route = {{ host = \"{name}.test\" }}\nlimits = {{ tensor-memory = \"{cap}\" }}\n\n",
            guest("tensor_probe")
        );
    }
    let file = deployment_file(&dir, &toml);
    let server = Server::start(&[file.to_str().unwrap()], &dir.join("cache"));
    let addr = server.addr;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let steady: Vec<_> = (1..4)
        .map(|t| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let host = format!("t{t}.test");
                let (m, k, n) = (48, 64, 32);
                let mut served = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) || served < 10 {
                    let seed = (t * 1000 + served) as f64;
                    let a: Vec<f64> = (0..m * k)
                        .map(|i| ((i as f64 + seed) * 0.37).sin())
                        .collect();
                    let b: Vec<f64> = (0..k * n)
                        .map(|i| ((i as f64 - seed) * 0.11).cos())
                        .collect();
                    let body = json!({"op": "matmul", "inputs": [
                        {"data": a, "shape": [m, k]}, {"data": b, "shape": [k, n]}]})
                    .to_string();
                    let resp = request(addr, "POST", "/op", &[("host", &host)], body.as_bytes());
                    assert_eq!(resp.status, 200, "{host}: {}", resp.text());
                    let got = json_of(&resp);
                    let want = r::matmul(&Nd::new(&[m, k], a), &Nd::new(&[k, n], b), false, false);
                    let data = got["data"].as_array().expect("data");
                    for (g, w) in data.iter().zip(&want.data) {
                        let g = g.as_f64().unwrap_or(f64::NAN);
                        assert!(
                            (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                            "{host}: {g} vs {w}"
                        );
                    }
                    served += 1;
                }
                served
            })
        })
        .collect();
    let greedy = |path: &str| request(addr, "GET", path, &[("host", "t0.test")], b"");
    for _ in 0..10 {
        let v = json_of(&greedy("/quota?mb=100"));
        assert_eq!(v["error"], "quota-exceeded", "{v}");
        assert_eq!(v["detail"]["limit"], 16 << 20, "{v}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for h in steady {
        assert!(h.join().unwrap() >= 10);
    }
    let m = server.metrics();
    for t in ["t0", "t1", "t2", "t3"] {
        let tenant = format!("tenant=\"{t}\"");
        assert_eq!(
            metric(&m, "tensorwasm_tensor_bytes", &[tenant.as_str()]),
            0.0,
            "{m}"
        );
    }
}

/// `--device` is parsed strictly, `auto` says at start-up what it picked,
/// and `cuda` on a machine without a GPU is one clear error.
#[test]
fn device_selection_is_explicit() {
    let (code, _, stderr) = run(&["serve", "--device", "gpu0"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("expected auto, cpu, cuda, cuda:N, cuda:N,M,... or cuda:all"),
        "{stderr}"
    );

    if std::env::var_os("TENSOR_WASM_TEST_DEVICE").is_some() {
        return; // the GPU check pins every host's device itself
    }
    let dir = scratch("tensor_device");
    let server = Server::start(
        &[guest("tensor_probe").to_str().unwrap(), "--device", "auto"],
        &dir,
    );
    let log = server.log();
    let picked = log
        .lines()
        .find(|l| l.contains("tensor backend: "))
        .unwrap_or_else(|| panic!("no backend line in: {log}"))
        .to_string();
    drop(server);
    if picked.contains("tensor backend: cpu") {
        let (code, _, stderr) = run(&[
            "serve",
            guest("tensor_probe").to_str().unwrap(),
            "--device",
            "cuda",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "off",
        ]);
        assert_eq!(code, 1, "{stderr}");
        assert!(
            stderr.contains("--device cuda:0") && !stderr.contains("panicked"),
            "{stderr}"
        );
        eprintln!("device_selection_is_explicit: no GPU here; `--device cuda` refused cleanly");
    } else {
        assert!(picked.contains("tensor backend: cuda:0"), "{picked}");
    }
}

/// The sum of A·B for matmul-job's integer matrices, computed here.
fn job_checksum(n: i64) -> i64 {
    let a = |i: i64, j: i64| (i * j) % 7 - 3;
    let b = |i: i64, j: i64| (i + 2 * j) % 5 - 2;
    (0..n)
        .flat_map(|i| (0..n).map(move |j| (i, j)))
        .map(|(i, j)| (0..n).map(|p| a(i, p) * b(p, j)).sum::<i64>())
        .sum()
}

#[test]
fn headless_jobs_run_with_tensor_access() {
    let dir = scratch("tensor_job");
    write_safetensors(&dir.join("model.safetensors"));
    let job = guest("matmul-job");
    let weights = format!("model={}", dir.join("model.safetensors").display());
    let cache = dir.join("cache");
    let (code, out, err) = run(&[
        "run",
        job.to_str().unwrap(),
        "--cache-dir",
        cache.to_str().unwrap(),
        "--weights",
        &weights,
        "--timeout",
        "30s",
        "--",
        "48",
        "model",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("checksum {}\n", job_checksum(48))),
        "{out}"
    );
    assert!(out.contains("weight w [2, 3] Dtype::F32"), "{out}");
    assert!(
        out.contains("scheduler YieldStatus::Continue remaining Some("),
        "{out}"
    );
    assert!(!err.contains("INFO"), "a job's stderr is its own: {err}");
    // Past its tensor cap: the job sees quota-exceeded and fails.
    let (code, _, err) = run(&[
        "run",
        job.to_str().unwrap(),
        "--cache-dir",
        cache.to_str().unwrap(),
        "--tensor-memory",
        "1KiB",
        "--",
        "48",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("tensor quota exceeded"), "{err}");
    // A served component is not a job.
    let (code, _, err) = run(&[
        "run",
        guest("hello").to_str().unwrap(),
        "--cache-dir",
        cache.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("does not export wasi:cli/run"), "{err}");
}

#[test]
fn a_heavy_op_does_not_hold_up_other_requests() {
    let dir = scratch("tensor_heavy");
    // One serving thread: without offloading, everything would queue behind the product.
    let server = Server::start(
        &[
            guest("tensor_probe").to_str().unwrap(),
            "--threads",
            "1",
            "--tensor-memory",
            "2GiB",
        ],
        &dir.join("cache"),
    );
    let addr = server.addr;
    // About a second of products on either backend (the GPU check pins a GPU).
    let heavy_path = if std::env::var_os("TENSOR_WASM_TEST_DEVICE").is_some() {
        "/bench/matmul?n=4096&reps=400"
    } else {
        "/bench/matmul?n=1536&reps=6"
    };
    let heavy = std::thread::spawn(move || {
        let resp = request(addr, "GET", heavy_path, &[], b"");
        (resp.status, std::time::Instant::now())
    });
    std::thread::sleep(std::time::Duration::from_millis(150));
    let body = json!({"op": "add", "inputs": [
        {"data": [1.0, 2.0], "shape": [2]}, {"data": [3.0, 4.0], "shape": [2]}]})
    .to_string();
    for _ in 0..5 {
        let resp = request(addr, "POST", "/op", &[], body.as_bytes());
        assert_eq!(json_of(&resp)["data"], json!([4.0, 6.0]));
    }
    let small_done = std::time::Instant::now();
    let (status, heavy_done) = heavy.join().unwrap();
    assert_eq!(status, 200);
    assert!(
        small_done < heavy_done,
        "small requests waited for the heavy product"
    );
}

/// A GGUF file with metadata of several types and F32, F16, Q8_0, Q4_0 and
/// Q4_1 tensors; returns each tensor's expected values.
fn write_gguf(path: &Path) -> Vec<(&'static str, Vec<u64>, Vec<f64>)> {
    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s.as_bytes());
    }
    let mut f = b"GGUF".to_vec();
    f.extend(3u32.to_le_bytes());
    f.extend(5u64.to_le_bytes()); // tensors
    f.extend(5u64.to_le_bytes()); // metadata entries
    string(&mut f, "general.architecture");
    f.extend(8u32.to_le_bytes());
    string(&mut f, "llama");
    string(&mut f, "general.alignment");
    f.extend(4u32.to_le_bytes());
    f.extend(32u32.to_le_bytes());
    string(&mut f, "llama.rope.freq_base");
    f.extend(6u32.to_le_bytes());
    f.extend(100000f32.to_le_bytes());
    string(&mut f, "tokenizer.ggml.tokens");
    f.extend(9u32.to_le_bytes());
    f.extend(8u32.to_le_bytes());
    f.extend(2u64.to_le_bytes());
    string(&mut f, "<|im_start|>");
    string(&mut f, "hi");
    string(&mut f, "tokenizer.ggml.token_type");
    f.extend(9u32.to_le_bytes());
    f.extend(5u32.to_le_bytes());
    f.extend(2u64.to_le_bytes());
    f.extend(3i32.to_le_bytes());
    f.extend((-1i32).to_le_bytes());

    // Tensor data, each at a 32-byte-aligned offset.
    let mut data: Vec<u8> = Vec::new();
    let mut expected = Vec::new();
    let mut infos: Vec<(&str, Vec<u64>, u32, u64)> = Vec::new();
    let mut add = |name: &'static str, dims: Vec<u64>, ty: u32, bytes: Vec<u8>, want: Vec<f64>| {
        while !data.len().is_multiple_of(32) {
            data.push(0);
        }
        infos.push((name, dims.clone(), ty, data.len() as u64));
        data.extend(bytes);
        expected.push((name, dims.iter().rev().copied().collect(), want));
    };
    let fv: Vec<f32> = vec![1.0, -2.0, 3.0, 4.5, 5.0, -6.25];
    add(
        "f",
        vec![3, 2],
        0,
        fv.iter().flat_map(|x| x.to_le_bytes()).collect(),
        fv.iter().map(|&x| x as f64).collect(),
    );
    let hv = [0.5f32, -1.25, 2.0, 1024.0];
    add(
        "h",
        vec![4],
        1,
        hv.iter()
            .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
            .collect(),
        hv.iter().map(|&x| x as f64).collect(),
    );
    let d = half::f16::from_f32(0.25);
    let mut q8 = d.to_le_bytes().to_vec();
    let q8v: Vec<i8> = (0..32).map(|i| i as i8 * 4 - 60).collect();
    q8.extend(q8v.iter().map(|&q| q as u8));
    add(
        "q8",
        vec![32],
        8,
        q8,
        q8v.iter().map(|&q| q as f64 * 0.25).collect(),
    );
    let nib: Vec<u8> = (0..32).map(|i| (i * 7 % 16) as u8).collect();
    let packed: Vec<u8> = (0..16).map(|j| nib[j] | (nib[j + 16] << 4)).collect();
    let mut q4 = half::f16::from_f32(0.5).to_le_bytes().to_vec();
    q4.extend(&packed);
    add(
        "q4",
        vec![32],
        2,
        q4,
        nib.iter().map(|&q| (q as f64 - 8.0) * 0.5).collect(),
    );
    let mut q41 = half::f16::from_f32(0.125).to_le_bytes().to_vec();
    q41.extend(half::f16::from_f32(-1.0).to_le_bytes());
    q41.extend(&packed);
    add(
        "q41",
        vec![32],
        3,
        q41,
        nib.iter().map(|&q| q as f64 * 0.125 - 1.0).collect(),
    );

    for (name, dims, ty, offset) in &infos {
        string(&mut f, name);
        f.extend((dims.len() as u32).to_le_bytes());
        dims.iter().for_each(|d| f.extend(d.to_le_bytes()));
        f.extend(ty.to_le_bytes());
        f.extend(offset.to_le_bytes());
    }
    while !f.len().is_multiple_of(32) {
        f.push(0);
    }
    f.extend(data);
    std::fs::write(path, f).unwrap();
    expected
}

#[test]
fn gguf_weights_are_dequantized_with_typed_metadata() {
    let dir = scratch("tensor_gguf");
    let expected = write_gguf(&dir.join("model.gguf"));
    let file = deployment_file(
        &dir,
        &format!(
            "[[deployment]]\nname = \"g\"\ntenant = \"t\"\ncomponent = {:?}\ngrants = {{ weights = {{ llm = \"model.gguf\" }} }}\n",
            guest("tensor_probe")
        ),
    );
    let server = Server::start(&[file.to_str().unwrap()], &dir.join("cache"));
    for (name, shape, want) in &expected {
        let v = json_of(&server.get(&format!("/weights?name=llm&tensor={name}")));
        assert_eq!(v["tensor"]["shape"], json!(shape), "{name}");
        let got: Vec<f64> = v["tensor"]["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(&got, want, "{name}");
    }
    let v = json_of(&server.get("/weights?name=llm&meta=tokenizer.ggml.tokens"));
    let names: Vec<&str> = v["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["f", "h", "q8", "q4", "q41"]);
    assert_eq!(v["tensors"][1]["dtype"], "f16");
    assert_eq!(v["tensors"][2]["dtype"], "f32");
    assert_eq!(v["metadata"], json!(["<|im_start|>", "hi"]));
    assert_eq!(v["metadata_keys"][0], "general.architecture");
    let meta =
        |k: &str| json_of(&server.get(&format!("/weights?name=llm&meta={k}")))["metadata"].clone();
    assert_eq!(meta("general.architecture"), json!("llama"));
    assert_eq!(meta("general.alignment"), json!(32));
    assert_eq!(meta("llama.rope.freq_base"), json!(100000.0));
    assert_eq!(meta("tokenizer.ggml.token_type"), json!([3, -1]));
    assert_eq!(meta("absent"), Value::Null);
}
