//! `wasi:cuda` from a guest (tensor-probe's `POST /cuda/run` scripts): on a
//! GPU (TENSOR_WASM_TEST_DEVICE=cuda, scripts/gpu-check.sh) vetted kernels
//! with scalar and pointer arguments, offsets, 2-D grids, streams, events,
//! tensor↔buffer, and every misuse the host must refuse; here (no GPU)
//! every step answers `no-device`.

use crate::support::*;
use crate::tensor_ops::Rng;
use serde_json::{Value, json};

fn run(server: &Server, host: &str, steps: &Value) -> Vec<Value> {
    let resp = request(
        server.addr,
        "POST",
        "/cuda/run",
        &[("host", host)],
        steps.to_string().as_bytes(),
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    let v: Value = serde_json::from_slice(&resp.body).unwrap();
    v.as_array().unwrap().clone()
}

fn ok(r: &Value, what: &str) -> Value {
    assert!(r.get("ok").is_some(), "{what}: {r}");
    r["ok"].clone()
}

fn err(r: &Value, kind: &str, what: &str) {
    assert_eq!(r["error"]["kind"], kind, "{what}: {r}");
}

/// f32 values read back (compared as f32: JSON parsing may be off by an
/// f64 ulp).
fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn f32s(rng: &mut Rng, n: usize) -> Vec<f64> {
    (0..n)
        .map(|_| rng.uniform(-4.0, 4.0) as f32 as f64)
        .collect()
}

fn add32(a: f64, b: f64) -> f32 {
    a as f32 + b as f32
}

const ADD: [&str; 4] = ["pointer", "pointer", "pointer", "u32"];

#[test]
fn cuda_kernels_from_a_guest() {
    let dir = scratch("cuda_kernels");
    let probe = guest("tensor_probe");
    let file = deployment_file(
        &dir,
        &format!(
            "[[deployment]]\nname = \"vetted\"\ntenant = \"acme\"\ncomponent = {probe:?}\n\
             route = {{ host = \"vetted.test\" }}\nlimits = {{ tensor-memory = \"64MiB\" }}\n\n\
             [[deployment]]\nname = \"own\"\ntenant = \"lab\"\ncomponent = {probe:?}\n\
             route = {{ host = \"own.test\" }}\ngrants = {{ cuda-source = true }}\n"
        ),
    );
    let server = Server::start(&[file.to_str().unwrap()], &dir.join("cache"));
    if std::env::var_os("TENSOR_WASM_TEST_DEVICE").is_none() {
        let r = run(
            &server,
            "vetted.test",
            &json!([{"op": "info"}, {"op": "alloc", "size": 16}, {"op": "load", "module": "basics"},
                    {"op": "stream"}, {"op": "load-source", "source": "x", "kind": "cuda"},
                    {"op": "tensor-into-buffer", "f32": [1.0], "shape": [1]}]),
        );
        for step in &r {
            err(step, "no-device", "CPU host");
        }
        eprintln!(
            "cuda_kernels_from_a_guest: GPU part SKIPPED (no GPU here; scripts/gpu-check.sh runs it \
             on the lent H100 with TENSOR_WASM_TEST_DEVICE=cuda)"
        );
        return;
    }
    let mut rng = Rng::new();
    let n = 1000;
    let (a, b) = (f32s(&mut rng, n), f32s(&mut rng, n));
    let alpha = 2.5f32;
    let ints: Vec<i64> = (0..10).map(|i| i * 1_000_000_007 - 3).collect();
    let (rows, cols) = (33usize, 47usize);
    let m = f32s(&mut rng, rows * cols);
    let bytes = n as u64 * 4;
    let steps = json!([
        {"op": "info"},                                                   // 0
        {"op": "alloc", "size": bytes},                                   // 1: buf 0 = a
        {"op": "alloc", "size": bytes},                                   // 2: buf 1 = b
        {"op": "alloc", "size": bytes},                                   // 3: buf 2 = out
        {"op": "write", "buf": 0, "offset": 0, "f32": a},                 // 4
        {"op": "write", "buf": 1, "offset": 0, "f32": b},                 // 5
        {"op": "load", "module": "basics"},                               // 6: module 0
        {"op": "kernel", "module": 0, "name": "vector_add", "params": ADD}, // 7: kernel 0
        {"op": "launch", "kernel": 0, "grid": [4], "block": [256],
         "args": [{"buf": 0}, {"buf": 1}, {"buf": 2}, {"u32": n}]},       // 8
        {"op": "read", "buf": 2, "offset": 0, "len": bytes, "as": "f32"}, // 9
        // Offsets: out[200..700] = a[100..600] + b[0..500].
        {"op": "launch", "kernel": 0, "grid": [2], "block": [256],
         "args": [{"buf": 0, "offset": 400}, {"buf": 1}, {"buf": 2, "offset": 800}, {"u32": 500}]}, // 10
        {"op": "read", "buf": 2, "offset": 0, "len": bytes, "as": "f32"}, // 11
        // saxpy: f32 and u64 scalars; b := alpha a + b.
        {"op": "kernel", "module": 0, "name": "saxpy",
         "params": ["f32", "pointer", "pointer", "u64"]},                 // 12: kernel 1
        {"op": "launch", "kernel": 1, "grid": [2], "block": [128],
         "args": [{"f32": alpha}, {"buf": 0}, {"buf": 1}, {"u64": n}]},   // 13
        {"op": "read", "buf": 1, "offset": 0, "len": bytes, "as": "f32"}, // 14
        // i64 and i32 scalars.
        {"op": "alloc", "size": 80},                                      // 15: buf 3
        {"op": "write", "buf": 3, "offset": 0, "i64": ints},              // 16
        {"op": "kernel", "module": 0, "name": "scale_i64", "params": ["pointer", "i64", "i32"]}, // 17: kernel 2
        {"op": "launch", "kernel": 2, "grid": [1], "block": [32],
         "args": [{"buf": 3}, {"i64": -3}, {"i32": 10}]},                  // 18
        {"op": "read", "buf": 3, "offset": 0, "len": 80, "as": "i64"},    // 19
        // f64 scalar.
        {"op": "alloc", "size": 56},                                      // 20: buf 4
        {"op": "kernel", "module": 0, "name": "fill_f64", "params": ["pointer", "f64", "u32"]}, // 21: kernel 3
        {"op": "launch", "kernel": 3, "grid": [1], "block": [7],
         "args": [{"buf": 4}, {"f64": 3.25}, {"u32": 7}]},                 // 22
        {"op": "read", "buf": 4, "offset": 0, "len": 56, "as": "f64"},    // 23
        // A 2-D grid; extents that are products of two scalars.
        {"op": "alloc", "size": rows * cols * 4},                         // 24: buf 5
        {"op": "alloc", "size": rows * cols * 4},                         // 25: buf 6
        {"op": "write", "buf": 5, "offset": 0, "f32": m},                 // 26
        {"op": "kernel", "module": 0, "name": "transpose_f32",
         "params": ["pointer", "pointer", "u32", "u32"]},                 // 27: kernel 4
        {"op": "launch", "kernel": 4, "grid": [2, 3], "block": [32, 16],
         "args": [{"buf": 5}, {"buf": 6}, {"u32": rows}, {"u32": cols}]}, // 28
        {"op": "read", "buf": 6, "offset": 0, "len": rows * cols * 4, "as": "f32"}, // 29
        {"op": "params", "kernel": 1},                                    // 30
    ]);
    let r = run(&server, "vetted.test", &steps);
    let info = ok(&r[0], "info");
    assert!(info["compute"][0].as_u64().unwrap() >= 7, "{info}");
    assert!(info["max_threads"].as_u64().unwrap() >= 256, "{info}");
    assert!(info["name"].as_str().unwrap().contains("NVIDIA"), "{info}");
    for (i, step) in r.iter().enumerate().skip(1) {
        ok(step, &format!("step {i}"));
    }
    let sum: Vec<f32> = (0..n).map(|i| add32(a[i], b[i])).collect();
    assert_eq!(floats(&r[9]["ok"]), sum, "vector_add");
    let mut shifted = sum.clone();
    for i in 0..500 {
        shifted[200 + i] = add32(a[100 + i], b[i]);
    }
    assert_eq!(floats(&r[11]["ok"]), shifted, "vector_add with offsets");
    for (i, got) in floats(&r[14]["ok"]).iter().enumerate() {
        let (got, want) = (*got as f64, alpha as f64 * a[i] + b[i]);
        assert!(
            (got - want).abs() <= 1e-6 * (1.0 + want.abs()),
            "saxpy {i}: {got} vs {want}"
        );
    }
    let scaled: Vec<i64> = ints.iter().map(|v| v.wrapping_mul(-3)).collect();
    assert_eq!(r[19]["ok"], json!(scaled), "scale_i64");
    assert_eq!(r[23]["ok"], json!(vec![3.25; 7]), "fill_f64");
    let t = floats(&r[29]["ok"]);
    for i in 0..rows {
        for j in 0..cols {
            assert_eq!(
                t[j * rows + i],
                m[i * cols + j] as f32,
                "transpose ({i}, {j})"
            );
        }
    }
    assert_eq!(r[30]["ok"], json!(["f32", "pointer", "pointer", "u64"]));

    // Misuse: each refused with its own error; the instance goes on.
    let misuse = json!([
        {"op": "alloc", "size": 4000},                                    // 0: buf 0
        {"op": "alloc", "size": 4000},                                    // 1: buf 1
        {"op": "load", "module": "basics"},                               // 2: module 0
        {"op": "kernel", "module": 0, "name": "vector_add", "params": ADD}, // 3: kernel 0
        {"op": "kernel", "module": 0, "name": "vector_add",
         "params": ["pointer", "pointer", "u32"]},                        // 4
        {"op": "kernel", "module": 0, "name": "nope", "params": []},      // 5
        {"op": "load", "module": "nope"},                                 // 6
        {"op": "load-digest", "digest": "xyz"},                           // 7
        {"op": "load-digest", "digest": "0".repeat(64)},                  // 8
        {"op": "load-source", "source": "extern \"C\" __global__ void k() {}", "kind": "cuda"}, // 9
        {"op": "launch", "kernel": 0, "grid": [4], "block": [256],
         "args": [{"buf": 0}, {"buf": 1}, {"buf": 1}]},                   // 10: too few
        {"op": "launch", "kernel": 0, "grid": [4], "block": [256],
         "args": [{"buf": 0}, {"buf": 1}, {"buf": 1}, {"f32": 3.0}]},     // 11: wrong kind
        {"op": "launch", "kernel": 0, "grid": [4], "block": [256],
         "args": [{"buf": 0}, {"buf": 1}, {"buf": 1}, {"u32": 1001}]},    // 12: n past the buffers
        {"op": "launch", "kernel": 0, "grid": [1], "block": [1],
         "args": [{"buf": 0, "offset": 4004}, {"buf": 1}, {"buf": 1}, {"u32": 0}]}, // 13: offset past the end
        {"op": "launch", "kernel": 0, "grid": [1], "block": [1],
         "args": [{"buf": 0, "offset": 2}, {"buf": 1}, {"buf": 1}, {"u32": 1}]}, // 14: misaligned
        {"op": "launch", "kernel": 0, "grid": [1], "block": [2048],
         "args": [{"buf": 0}, {"buf": 1}, {"buf": 1}, {"u32": 1}]},       // 15: block too big
        {"op": "launch", "kernel": 0, "grid": [0], "block": [1],
         "args": [{"buf": 0}, {"buf": 1}, {"buf": 1}, {"u32": 1}]},       // 16: empty grid
        {"op": "launch", "kernel": 0, "grid": [1], "block": [1, 1, 128],
         "args": [{"buf": 0}, {"buf": 1}, {"buf": 1}, {"u32": 1}]},       // 17: block z
        {"op": "launch", "kernel": 0, "grid": [1], "block": [1], "shared": 1 << 20,
         "args": [{"buf": 0}, {"buf": 1}, {"buf": 1}, {"u32": 1}]},       // 18: shared memory
        {"op": "write", "buf": 0, "offset": 3996, "bytes": [1, 2, 3, 4, 5, 6, 7, 8]}, // 19
        {"op": "read", "buf": 0, "offset": 4000, "len": 1},               // 20
        {"op": "alloc", "size": 0},                                       // 21
        {"op": "alloc", "size": 1u64 << 31},                              // 22: over 64 MiB
        {"op": "copy", "dst": 0, "src": 0, "src_offset": 0, "offset": 8, "len": 16}, // 23: overlap
        {"op": "copy", "dst": 1, "src": 0, "src_offset": 3990, "offset": 0, "len": 16}, // 24
        {"op": "write", "buf": 0, "offset": 0, "bytes": [9, 8, 7, 6, 5, 4, 3, 2]}, // 25
        {"op": "copy", "dst": 1, "src": 0, "src_offset": 0, "offset": 3992, "len": 8}, // 26
        {"op": "read", "buf": 1, "offset": 3990, "len": 10},              // 27
        {"op": "launch", "kernel": 0, "grid": [4], "block": [256],
         "args": [{"buf": 0}, {"buf": 0}, {"buf": 1}, {"u32": 1000}]},    // 28: correct again
        {"op": "sync"},                                                   // 29
    ]);
    let r = run(&server, "vetted.test", &misuse);
    for i in [0, 1, 2, 3, 25, 26, 28, 29] {
        ok(&r[i], &format!("misuse script step {i}"));
    }
    err(&r[4], "signature-mismatch", "declared fewer params");
    err(&r[5], "not-found", "unknown kernel");
    err(&r[6], "not-found", "unknown module");
    err(&r[7], "invalid-argument", "malformed digest");
    err(&r[8], "not-found", "unknown digest");
    err(&r[9], "not-permitted", "guest source without the grant");
    err(&r[10], "signature-mismatch", "too few args");
    err(&r[11], "signature-mismatch", "wrong kind");
    err(&r[12], "out-of-bounds", "extent past the buffer");
    assert!(
        r[12]["error"]["message"].as_str().unwrap().contains("4004"),
        "{}",
        r[12]
    );
    err(&r[13], "out-of-bounds", "offset past the end");
    err(&r[14], "invalid-argument", "misaligned pointer");
    for (i, step) in r.iter().enumerate().take(19).skip(15) {
        err(step, "invalid-launch", &format!("launch config step {i}"));
    }
    err(&r[19], "out-of-bounds", "write past the end");
    err(&r[20], "out-of-bounds", "read past the end");
    err(&r[21], "invalid-argument", "zero-size alloc");
    err(&r[22], "quota-exceeded", "alloc over the cap");
    err(&r[23], "invalid-argument", "overlapping copy");
    err(&r[24], "out-of-bounds", "copy past the source");
    assert_eq!(
        r[27]["ok"],
        json!([0, 0, 9, 8, 7, 6, 5, 4, 3, 2]),
        "copy-from"
    );

    // Streams and events; tensor ↔ buffer (moved, and copied when shared).
    let streams = json!([
        {"op": "alloc", "size": 800},                                     // 0: buf 0
        {"op": "load", "module": "basics"},                               // 1
        {"op": "kernel", "module": 0, "name": "fill_f64", "params": ["pointer", "f64", "u32"]}, // 2
        {"op": "stream"},                                                 // 3: stream 0
        {"op": "record", "stream": 0},                                    // 4: event 0
        {"op": "launch", "kernel": 0, "grid": [1], "block": [128],
         "args": [{"buf": 0}, {"f64": -1.5}, {"u32": 100}], "stream": 0}, // 5
        {"op": "record", "stream": 0},                                    // 6: event 1
        {"op": "event-sync", "event": 1},                                 // 7
        {"op": "complete", "event": 1},                                   // 8
        {"op": "elapsed", "start": 0, "end": 1},                          // 9
        {"op": "stream"},                                                 // 10: stream 1
        {"op": "wait", "stream": 1, "event": 1},                          // 11
        {"op": "write", "buf": 0, "offset": 0, "f64": [7.0], "stream": 1}, // 12
        {"op": "sync-stream", "stream": 1},                               // 13
        {"op": "read", "buf": 0, "offset": 0, "len": 24, "as": "f64"},    // 14
        {"op": "tensor-into-buffer", "f32": [1.0, 2.0, 3.0, 4.0], "shape": [2, 2]}, // 15: buf 1
        {"op": "kernel", "module": 0, "name": "vector_add", "params": ADD}, // 16
        {"op": "launch", "kernel": 1, "grid": [1], "block": [4],
         "args": [{"buf": 1}, {"buf": 1}, {"buf": 1}, {"u32": 4}]},       // 17
        {"op": "buffer-into-tensor", "buf": 1, "shape": [2, 2]},          // 18
        {"op": "tensor-into-buffer", "f32": [5.0, 6.0], "shape": [2], "keep": true}, // 19: buf 2
        {"op": "buffer-into-tensor", "buf": 2, "shape": [3]},             // 20: wrong size
        {"op": "sync"},                                                   // 21
    ]);
    let r = run(&server, "vetted.test", &streams);
    for (i, step) in r.iter().enumerate() {
        if i != 20 {
            ok(step, &format!("streams script step {i}"));
        }
    }
    assert_eq!(r[8]["ok"], json!(true));
    assert!(r[9]["ok"].as_f64().unwrap() >= 0.0, "{}", r[9]);
    assert_eq!(r[14]["ok"], json!([7.0, -1.5, -1.5]));
    assert_eq!(r[18]["ok"]["values"], json!([2.0, 4.0, 6.0, 8.0]));
    assert_eq!(r[18]["ok"]["doubled"], json!([4.0, 8.0, 12.0, 16.0]));
    ok(&r[19], "tensor-into-buffer of a shared tensor (copied)");
    err(
        &r[20],
        "invalid-argument",
        "buffer-into-tensor of the wrong size",
    );

    // A deployment granted `cuda-source` compiles its own kernels; bad
    // source is an invalid-argument carrying the compiler's message.
    let source = "extern \"C\" __global__ void twice(float *x, unsigned n) {\n\
                  unsigned i = blockIdx.x * blockDim.x + threadIdx.x; if (i < n) x[i] *= 2.0f; }";
    let own = json!([
        {"op": "load-source", "source": source, "kind": "cuda"},          // 0
        {"op": "kernel", "module": 0, "name": "twice", "params": ["pointer", "u32"]}, // 1
        {"op": "alloc", "size": 12},                                      // 2
        {"op": "write", "buf": 0, "offset": 0, "f32": [1.0, -2.0, 0.5]},  // 3
        {"op": "launch", "kernel": 0, "grid": [1], "block": [32],
         "args": [{"buf": 0}, {"u32": 3}]},                               // 4
        {"op": "read", "buf": 0, "offset": 0, "len": 12, "as": "f32"},    // 5
        {"op": "load-source", "source": "this is not CUDA", "kind": "cuda"}, // 6
        {"op": "load-source", "source": "nor PTX", "kind": "ptx"},        // 7
    ]);
    let r = run(&server, "own.test", &own);
    for (i, step) in r.iter().enumerate().take(6) {
        ok(step, &format!("own-source step {i}"));
    }
    assert_eq!(r[5]["ok"], json!([2.0, -4.0, 1.0]));
    err(&r[6], "invalid-argument", "source that does not compile");
    assert!(
        r[6]["error"]["message"].as_str().unwrap().contains("NVRTC"),
        "{}",
        r[6]
    );
    err(&r[7], "invalid-argument", "PTX that does not load");

    // Everything the scripts held was released with their instances.
    let metrics = server.metrics();
    for tenant in ["acme", "lab"] {
        assert_eq!(
            metric(
                &metrics,
                "tensorwasm_tensor_bytes",
                &[&format!("tenant=\"{tenant}\"")]
            ),
            0.0,
            "{metrics}"
        );
    }
    // Every launch counted for its deployment; the host's and the guest's
    // NVRTC compiles timed.
    let vetted = ["tenant=\"acme\"", "deployment=\"vetted\""];
    let launches = metric(&metrics, "tensorwasm_cuda_launches_total", &vetted);
    assert!(launches >= 6.0, "launches {launches}:\n{metrics}");
    let compiles = metric(
        &metrics,
        "tensorwasm_compile_duration_seconds_count",
        &["kind=\"kernel\""],
    );
    assert!(compiles >= 1.0, "kernel compiles {compiles}:\n{metrics}");
}
