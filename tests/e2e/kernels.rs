//! Registry kernels through `wasi:cuda` (tensor-probe's `POST /cuda/run`):
//! published with `tensor-wasm kernel publish`, loaded by name or digest,
//! and under a trust policy only when a trusted key signed them. On a GPU
//! (TENSOR_WASM_TEST_DEVICE=cuda, scripts/gpu-check.sh) every load answers
//! as the policy says and the signed kernel launches; here (no GPU) every
//! load answers `no-device`, as the WIT says, and `tensor-wasm kernel
//! verify` (the same resolution) gives each verdict.

use crate::registry::{fails, ok, refused, zstd_frame_of};
use crate::support::{Server, deployment_file, guest, request, scratch};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

const ADD: &str = include_str!("../../kernels/examples/add_scalar.cu");

/// A data dir with `acme/add:1.0` signed by the trusted key `k`, and
/// variants of it: unsigned, signed by an untrusted key, tampered; and the
/// probe component signed by `k`.
struct Kernels {
    dir: PathBuf,
    data: String,
    kpub: String,
    add_digest: String,
}

fn publish(dir: &Path, data: &str, name: &str, text: &str, key: Option<&str>) -> String {
    let file = dir.join(format!("{}.cu", name.replace(['/', ':'], "_")));
    std::fs::write(&file, text).unwrap();
    let sign = key.map_or(String::new(), |k| format!("--sign {k}"));
    let out = ok(&format!(
        "kernel publish {} --name {name} {sign} --data-dir {data}",
        file.display()
    ));
    let digest = out.split_whitespace().find(|w| w.starts_with("blake3:"));
    digest.unwrap().to_string()
}

fn kernels(name: &str) -> Kernels {
    let dir = scratch(name);
    let data = dir.join("data").display().to_string();
    let (k, o) = (dir.join("k"), dir.join("o"));
    ok(&format!("key generate --out {}", k.display()));
    ok(&format!("key generate --out {}", o.display()));
    let (k, o) = (k.display().to_string(), o.display().to_string());
    let add_digest = publish(&dir, &data, "acme/add:1.0", ADD, Some(&k));
    publish(&dir, &data, "acme/raw:1.0", &format!("{ADD}// raw\n"), None);
    publish(
        &dir,
        &data,
        "acme/foreign:1.0",
        &format!("{ADD}// foreign\n"),
        Some(&o),
    );
    let bad = publish(
        &dir,
        &data,
        "acme/tampered:1.0",
        &format!("{ADD}// t\n"),
        Some(&k),
    );
    let blob = Path::new(&data).join(format!("registry/blobs/{}.zst", &bad[7..]));
    std::fs::write(blob, zstd_frame_of(b"// @kernel evil()\n")).unwrap();
    let hello = guest("hello").display().to_string();
    ok(&format!(
        "push {hello} --name acme/hello:1 --data-dir {data}"
    ));
    // The probe itself must be signed to run under the policy.
    let probe = guest("tensor_probe").display().to_string();
    ok(&format!(
        "push {probe} --name acme/probe:1 --sign {k} --data-dir {data}"
    ));
    Kernels {
        kpub: format!("{k}.pub"),
        dir,
        data,
        add_digest,
    }
}

fn run(server: &Server, host: &str, steps: &Value) -> Vec<Value> {
    let body = steps.to_string();
    let resp = request(
        server.addr,
        "POST",
        "/cuda/run",
        &[("host", host)],
        body.as_bytes(),
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    serde_json::from_slice::<Value>(&resp.body)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn kind(step: &Value) -> &str {
    step["error"]["kind"].as_str().unwrap_or("ok")
}

fn probe_deployments(dir: &Path, extra: &str) -> PathBuf {
    let probe = guest("tensor_probe");
    deployment_file(
        dir,
        &format!(
            "[[deployment]]\nname = \"k\"\ntenant = \"acme\"\ncomponent = {probe:?}\n\
             route = {{ host = \"k.test\" }}\nlimits = {{ tensor-memory = \"16MiB\" }}\n{extra}"
        ),
    )
}

#[test]
fn cuda_registry_kernels_load_only_when_a_trusted_key_signed_them() {
    let Kernels {
        dir,
        data,
        kpub,
        add_digest,
    } = kernels("kernels-policy");
    let file = probe_deployments(&dir, "");
    let cache = dir.join("cache");
    let args = [
        file.to_str().unwrap(),
        "--trust-key",
        &kpub,
        "--data-dir",
        &data,
    ];
    let server = Server::start(&args, &cache);
    let loads = json!([
        {"op": "load", "module": "acme/add:1.0"},
        {"op": "load-digest", "digest": &add_digest[7..]},
        {"op": "load", "module": "acme/raw:1.0"},
        {"op": "load", "module": "acme/foreign:1.0"},
        {"op": "load", "module": "acme/tampered:1.0"},
        {"op": "load", "module": "acme/hello:1"},
        {"op": "load", "module": "acme/missing:1.0"},
        {"op": "load", "module": "basics"},
    ]);
    let r = run(&server, "k.test", &loads);
    let got: Vec<&str> = r.iter().map(kind).collect();
    if std::env::var_os("TENSOR_WASM_TEST_DEVICE").is_none() {
        assert_eq!(got, ["no-device"; 8], "{r:#?}");
        verdicts_without_gpu(&data, &kpub);
        eprintln!(
            "cuda_registry_kernels: loads and launch SKIPPED (no GPU here; scripts/gpu-check.sh \
             runs them on the lent GPU with TENSOR_WASM_TEST_DEVICE=cuda)"
        );
        return;
    }
    let want = [
        "ok",
        "ok",
        "not-permitted",
        "not-permitted",
        "backend",
        "not-found",
        "not-found",
        "ok",
    ];
    assert_eq!(got, want, "{r:#?}");
    assert_refusals_name_why(&r);
    launch_signed_kernel(&server);
}

/// What the GPU host's loads answer, from `kernel verify` under the same
/// policy.
fn verdicts_without_gpu(data: &str, kpub: &str) {
    let verify = |name: &str| format!("kernel verify {name} --trust-key {kpub} --data-dir {data}");
    ok(&verify("acme/add:1.0"));
    ok(&verify("basics"));
    fails(
        &verify("acme/raw:1.0"),
        "acme/raw:1.0: refused: it is unsigned",
    );
    fails(&verify("acme/foreign:1.0"), "untrusted keys");
    fails(&verify("acme/tampered:1.0"), "corrupt");
    fails(&verify("acme/hello:1"), "is a component, not a kernel");
    fails(&verify("acme/missing:1.0"), "no artifact named");
}

#[test]
fn cuda_source_grants_are_refused_under_a_trust_policy() {
    let Kernels {
        dir, data, kpub, ..
    } = kernels("kernels-source");
    // Raw guest source would bypass signing: refused before listening.
    let with_source = probe_deployments(&dir, "grants = { cuda-source = true }\n");
    let err = refused(&format!(
        "{} --trust-key {kpub} --data-dir {data} --cache-dir {}",
        with_source.display(),
        dir.join("cache").display()
    ));
    assert!(
        err.contains("cuda-source") && err.contains("trust policy"),
        "{err}"
    );
}

/// Steps 2–5 of the policy test's loads say why each was refused.
fn assert_refusals_name_why(r: &[Value]) {
    let text = |i: usize| r[i]["error"]["message"].as_str().unwrap().to_string();
    assert!(
        text(2).contains("acme/raw:1.0: refused: it is unsigned"),
        "{}",
        text(2)
    );
    assert!(text(3).contains("untrusted keys"), "{}", text(3));
    assert!(text(4).contains("corrupt"), "{}", text(4));
    assert!(
        text(5).contains("is a component, not a kernel"),
        "{}",
        text(5)
    );
}

/// The signed kernel compiles, launches and computes; a launch past its
/// declared extent is refused.
fn launch_signed_kernel(server: &Server) {
    let x: Vec<f32> = (0..100).map(|i| i as f32 * 0.5).collect();
    let steps = json!([
        {"op": "alloc", "size": 400},
        {"op": "write", "buf": 0, "offset": 0, "f32": x},
        {"op": "load", "module": "acme/add:1.0"},
        {"op": "kernel", "module": 0, "name": "add_scalar", "params": ["pointer", "f32", "u32"]},
        {"op": "launch", "kernel": 0, "grid": [1], "block": [128],
         "args": [{"buf": 0}, {"f32": 1.5}, {"u32": 100}]},
        {"op": "read", "buf": 0, "offset": 0, "len": 400, "as": "f32"},
        {"op": "launch", "kernel": 0, "grid": [1], "block": [128],
         "args": [{"buf": 0}, {"f32": 1.5}, {"u32": 101}]},
    ]);
    let r = run(server, "k.test", &steps);
    for (i, step) in r.iter().enumerate().take(6) {
        assert_eq!(kind(step), "ok", "step {i}: {step}");
    }
    let want: Vec<f64> = x.iter().map(|v| (v + 1.5) as f64).collect();
    assert_eq!(r[5]["ok"], json!(want), "add_scalar");
    assert_eq!(kind(&r[6]), "out-of-bounds", "{}", r[6]);
}

#[test]
fn cuda_unsigned_kernels_load_without_a_policy() {
    let Kernels { dir, data, .. } = kernels("kernels-open");
    let file = probe_deployments(&dir, "");
    let server = Server::start(
        &[file.to_str().unwrap(), "--data-dir", &data],
        &dir.join("cache"),
    );
    let loads = json!([
        {"op": "load", "module": "acme/raw:1.0"},
        {"op": "load", "module": "acme/tampered:1.0"},
    ]);
    let r = run(&server, "k.test", &loads);
    let got: Vec<&str> = r.iter().map(kind).collect();
    if std::env::var_os("TENSOR_WASM_TEST_DEVICE").is_some() {
        // A corrupt blob is never compiled.
        assert_eq!(got, ["ok", "backend"], "{r:#?}");
    } else {
        assert_eq!(got, ["no-device"; 2], "{r:#?}");
    }
    fails(
        &format!("kernel verify acme/raw:1.0 --data-dir {data}"),
        "unsigned",
    );
}
