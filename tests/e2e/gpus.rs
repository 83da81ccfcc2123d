//! Where deployments compute (`--device cuda:all`, a deployment's
//! `device`): bad devices are one clear error everywhere; on a GPU
//! (TENSOR_WASM_TEST_DEVICE=cuda:all, scripts/gpu-check.sh) placement by
//! quota, per-GPU metrics, and what a tenant's faulting kernel does: its
//! deployment answers 503, the GPU is probed and, when the fault reached it,
//! taken out (its deployments 503, health and readiness 503); the CPU
//! deployment keeps serving; nothing answers wrongly or with a 500.

use crate::support::*;
use serde_json::{Value, json};

/// `tensor-wasm serve FILE ARGS` fails with one error line containing `want`.
fn refused(dir: &std::path::Path, table: &str, args: &[&str], want: &str) {
    let probe = guest("tensor_probe");
    let file = deployment_file(
        dir,
        &format!("[[deployment]]\nname = \"a\"\ntenant = \"t\"\ncomponent = {probe:?}\n{table}\n"),
    );
    let mut all = vec!["serve", file.to_str().unwrap(), "--listen", "127.0.0.1:0"];
    all.extend_from_slice(&["--admin-listen", "off"]);
    all.extend_from_slice(args);
    let (code, _, stderr) = run(&all);
    assert_ne!(code, 0, "{table} {args:?} should fail:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "one error line:\n{stderr}");
    assert!(errors[0].contains(want), "{table} {args:?}: {}", errors[0]);
}

#[test]
fn bad_devices_are_one_clear_error() {
    let dir = scratch("bad_devices");
    refused(
        &dir,
        "device = \"gpu\"",
        &[],
        "`device`: expected auto, cpu, cuda",
    );
    refused(&dir, "device = \"cuda:0,0\"", &[], "names cuda:0 twice");
    refused(
        &dir,
        "device = \"cuda:1\"",
        &["--device", "cpu"],
        "this server computes on the CPU",
    );
    let (code, _, err) = run(&["serve", "--device", "cuda:x"]);
    assert_ne!(code, 0);
    assert!(err.contains("expected auto, cpu, cuda"), "{err}");
    if std::env::var_os("TENSOR_WASM_TEST_DEVICE").is_none() {
        refused(&dir, "", &["--device", "cuda:all"], "--device cuda:all");
    }
}

/// `op` on `host` with f32 inputs; the answer.
fn op(server: &Server, host: &str, op: &str, inputs: &[&[f64]]) -> Resp {
    let inputs: Vec<Value> = inputs
        .iter()
        .map(|d| json!({"data": d, "shape": [d.len()]}))
        .collect();
    let body = json!({"op": op, "inputs": inputs}).to_string();
    request(
        server.addr,
        "POST",
        "/op",
        &[("host", host)],
        body.as_bytes(),
    )
}

fn steps(server: &Server, host: &str, steps: &Value) -> Resp {
    let body = steps.to_string();
    request(
        server.addr,
        "POST",
        "/cuda/run",
        &[("host", host)],
        body.as_bytes(),
    )
}

/// Sum of a per-GPU series over every GPU.
fn over_gpus(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{gpu=")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A kernel that writes to device address 16: an illegal address, which
/// ends the CUDA context it runs in.
const WILD: &str = "extern \"C\" __global__ void wild(float *x) { \
                    ((volatile float *)16)[threadIdx.x] = x[0]; }";

fn wild_spec(probe: &std::path::Path) -> Value {
    json!({
        "tenant": "lab", "component": probe, "device": "cuda:0",
        "route": {"host": "wild.test"}, "grants": {"cuda-source": true},
        "limits": {"tensor-memory": "64MiB"},
    })
}

#[test]
fn deployments_are_placed_and_a_faulted_context_is_contained() {
    let dir = scratch("gpu_placement");
    let data = dir.join("data");
    let probe = guest("tensor_probe");
    let file = deployment_file(
        &dir,
        &format!(
            "[[deployment]]\nname = \"wild\"\ntenant = \"lab\"\ncomponent = {probe:?}\n\
             device = \"cuda:0\"\nroute = {{ host = \"wild.test\" }}\ngrants = {{ cuda-source = true }}\n\
             limits = {{ tensor-memory = \"64MiB\" }}\n\n\
             [[deployment]]\nname = \"steady\"\ntenant = \"acme\"\ncomponent = {probe:?}\n\
             route = {{ host = \"steady.test\" }}\nlimits = {{ tensor-memory = \"64MiB\" }}\n\n\
             [[deployment]]\nname = \"cpu\"\ntenant = \"misc\"\ncomponent = {probe:?}\n\
             device = \"cpu\"\nroute = {{ host = \"cpu.test\" }}\n"
        ),
    );
    let on_gpu = std::env::var("TENSOR_WASM_TEST_DEVICE").is_ok_and(|d| d.starts_with("cuda"));
    if !on_gpu {
        // `device = "cuda:0"` is refused on a CPU server; `cpu` serves.
        refused(
            &dir,
            "device = \"cuda:0\"",
            &["--device", "cpu"],
            "this server computes on the CPU",
        );
        let file = deployment_file(
            &dir,
            &format!(
                "[[deployment]]\nname = \"cpu\"\ntenant = \"misc\"\ncomponent = {probe:?}\ndevice = \"cpu\"\n"
            ),
        );
        let server = Server::start(&[file.to_str().unwrap()], &dir.join("cache"));
        let r = op(&server, "x", "add", &[&[1.0, 2.0], &[10.0, 20.0]]);
        assert_eq!(r.status, 200, "{}", r.text());
        eprintln!(
            "deployments_are_placed_and_a_faulted_context_is_contained: GPU part SKIPPED (no GPU \
             here; scripts/gpu-check.sh runs it with TENSOR_WASM_TEST_DEVICE=cuda:all)"
        );
        return;
    }
    let args = [file.to_str().unwrap(), "--data-dir", data.to_str().unwrap()];
    let server = Server::start(&args, &dir.join("cache"));
    let token = std::fs::read_to_string(data.join("admin-token")).unwrap();
    let token = format!("Bearer {}", token.trim());

    // `wild` runs kernels of its own on the GPU `steady` shares: warned.
    assert!(
        server.log().contains("run kernels of their own"),
        "{}",
        server.log()
    );
    // Every GPU is up and reports its memory; the two GPU tenants' quotas
    // are reserved (the CPU tenant's is not).
    let m = server.metrics();
    let gpus = over_gpus(&m, "tensorwasm_gpu_up");
    assert!(gpus >= 1.0, "{m}");
    assert_eq!(over_gpus(&m, "tensorwasm_gpu_tenants"), 2.0, "{m}");
    assert_eq!(
        over_gpus(&m, "tensorwasm_gpu_reserved_bytes"),
        (128u64 << 20) as f64
    );
    assert!(metric(&m, "tensorwasm_gpu_memory_bytes", &["gpu=\"cuda:0\""]) > 1e9);

    // A quota no GPU can hold is refused, with what each GPU has left.
    let spec = json!({"tenant": "big", "component": probe, "route": {"host": "big.test"},
                      "limits": {"tensor-memory": "100TiB"}});
    let body = spec.to_string();
    let headers = [("authorization", token.as_str())];
    let r = request(
        server.admin,
        "PUT",
        "/v1/deployments/big",
        &headers,
        body.as_bytes(),
    );
    assert!(r.status >= 400, "{}", r.text());
    assert!(r.text().contains("no GPU has room"), "{}", r.text());

    for host in ["steady.test", "cpu.test", "wild.test"] {
        let r = op(
            &server,
            host,
            "add",
            &[&[1.0, 2.0, 3.0], &[10.0, 20.0, 30.0]],
        );
        assert_eq!(r.status, 200, "{host}: {}", r.text());
        assert_eq!(
            serde_json::from_slice::<Value>(&r.body).unwrap()["data"],
            json!([11.0, 22.0, 33.0])
        );
    }

    // The illegal address fails that request, with the driver's error.
    let r = steps(
        &server,
        "wild.test",
        &json!([
            {"op": "load-source", "source": WILD, "kind": "cuda"},
            {"op": "kernel", "module": 0, "name": "wild", "params": ["pointer"]},
            {"op": "alloc", "size": 64},
            {"op": "launch", "kernel": 0, "grid": [1], "block": [32], "args": [{"buf": 0}]},
            {"op": "read", "buf": 0, "offset": 0, "len": 4, "as": "f32"},
        ]),
    );
    let answer = r.text();
    assert!(answer.contains("ILLEGAL_ADDRESS"), "{}: {answer}", r.status);

    // Its deployment answers 503 from now on, once the fault is seen.
    let r = op(&server, "wild.test", "add", &[&[1.0], &[2.0]]);
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("gpu_unavailable"), "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("30"));
    // The host probes the GPU on its own context. On the H200 (driver 580)
    // one context's fault fails every context of the process, so the probe
    // fails and the GPU is taken out (docs/GPU-RESULTS.md run 24); were the
    // contexts isolated, it would pass and only `wild` would be refused.
    let mut m = server.metrics();
    for _ in 0..50 {
        // Set by the health check once it probed the GPU after the fault.
        if over_gpus(&m, "tensorwasm_gpu_faulted_contexts") >= 1.0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        m = server.metrics();
    }
    let out = over_gpus(&m, "tensorwasm_gpu_up") < gpus;
    eprintln!(
        "after the fault: {}",
        if out {
            "the GPU failed its probe and was taken out (the fault reached every context of the process)"
        } else {
            "the GPU passed its probe (the fault stayed in its context)"
        }
    );
    // Never a wrong answer or a 500: the CPU deployment serves; the other
    // GPU tenant serves correctly, or (its GPU out) is refused with 503.
    for _ in 0..20 {
        let r = op(&server, "cpu.test", "mul", &[&[1.5, -2.0], &[2.0, 4.0]]);
        assert_eq!(r.status, 200, "{}", r.text());
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["data"], json!([3.0, -8.0]));
        let r = op(&server, "steady.test", "mul", &[&[1.5, -2.0], &[2.0, 4.0]]);
        if out && gpus == 1.0 {
            assert_eq!(r.status, 503, "{}", r.text());
            assert!(r.text().contains("was taken out"), "{}", r.text());
        } else {
            assert_eq!(r.status, 200, "{}", r.text());
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(v["data"], json!([3.0, -8.0]));
        }
    }
    let body = wild_spec(&probe).to_string();
    let put = |body: &str| {
        request(
            server.admin,
            "PUT",
            "/v1/deployments/wild",
            &headers,
            body.as_bytes(),
        )
    };
    assert!(
        server.log().contains("ILLEGAL_ADDRESS"),
        "the fault is logged:\n{}",
        server.log()
    );
    if out {
        // Every GPU out: health and readiness say so (a new process is the
        // way back); deploying onto it is one clear error.
        if gpus == 1.0 {
            for path in ["/healthz", "/readyz"] {
                let r = request(server.admin, "GET", path, &[], b"");
                assert_eq!(r.status, 503, "{path}: {}", r.text());
                assert!(r.text().contains("every GPU was taken out"), "{}", r.text());
            }
        }
        let r = put(&body);
        assert!(r.status >= 400, "{}", r.text());
        assert!(r.text().contains("cuda:0 was taken out"), "{}", r.text());
        return;
    }
    // The GPU works: redeploying gives the tenant a new context.
    assert_eq!(over_gpus(&m, "tensorwasm_gpu_faulted_contexts"), 1.0, "{m}");
    let r = put(&body);
    assert!(r.status < 300, "{}: {}", r.status, r.text());
    let r = op(&server, "wild.test", "add", &[&[1.0], &[2.0]]);
    assert_eq!(r.status, 200, "{}", r.text());
    let m = server.metrics();
    assert_eq!(over_gpus(&m, "tensorwasm_gpu_faulted_contexts"), 0.0, "{m}");
}
