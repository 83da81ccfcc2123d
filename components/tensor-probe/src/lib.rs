//! `tensor-probe`: a test guest that exposes every TensorWasm interface over
//! HTTP so the end-to-end tests can drive them, including misuse. Routes:
//! - `POST /op`: runs one `wasi:tensor` op on JSON tensors (see [`OpRequest`]);
//!   200 with the result tensor(s), or 422 `{"error":{"kind","message"}}`.
//! - `POST /bytes?shape=A,B&dtype=D`: `tensor.from-bytes` on the body, then
//!   `to-bytes`: 200 with the bytes read back, or 422 with the error.
//! - `GET /cuda`: calls each `wasi:cuda` family and reports each result.
//! - `POST /cuda/run`: runs a JSON script of `wasi:cuda` steps (see
//!   [`cuda_script`]).
//! - `GET /scheduler`: `yield` and `remaining`.
//! - `GET /quota?mb=N`: allocates 1 MiB tensors (at most N) until refused.
//! - `GET /leak?mb=N`: allocates N MiB of tensors and never drops them.
//! - `GET /dropped-handle`, `GET /foreign-handle`: handle misuse (traps).
//! - `GET /weights?name=W&tensor=T&meta=K`: opens granted weights, reads a
//!   tensor and a metadata value.
//! - `GET /bench/matmul?n=N&reps=R&dtype=D[&sync=end]`: times R products of
//!   N×N matrices inside the guest, each up to reading one element back, or
//!   with `sync=end` all back to back with one read-back (one mean figure).
//! - `GET /bench/blocks?layers=L&seq=S&dim=D&heads=H&reps=R&dtype=T`: ms per
//!   forward pass of L attention+MLP blocks issued op by op.
//! - `GET /bench/upload?mib=M&reps=R`: GiB/s of guest bytes into a tensor.
//! - `GET /bench/overhead?reps=R`: µs per host call (a query and a tiny op).
//! - `GET /bench/ops?reps=R&rows=B[&cap=C]`: per op of a decode step's
//!   kinds (at SmolLM2-135M's sizes, B rows, caches of C positions, default
//!   256), µs to issue it (its result dropped) and µs per op once R of them
//!   are done.
//! - `GET /bench/launch?reps=R&n=N[&kernel=empty]`: µs per `wasi:cuda`
//!   kernel launch.
//! - `GET /steps?...`, `GET /bench/steps?...`: decode-like steps recorded
//!   or not ([`steps`]).

mod cuda_script;
mod steps;

use httpkit::{json, json_error, path, query_param, read_body, respond};
use serde::Deserialize;
use serde_json::{Value, json};
use tensorwasm_sdk::bindings::wasi::tensor::types as raw;
use tensorwasm_sdk::{Dtype, Error, RopeLayout, Tensor, Weights, attention, cuda, scheduler};
use wasip2::http::types::{IncomingRequest, ResponseOutparam};

/// A tensor in JSON: values (as numbers), shape, dtype name.
#[derive(Deserialize)]
struct JsonTensor {
    data: Vec<f64>,
    shape: Vec<u32>,
    #[serde(default = "f32_name")]
    dtype: String,
}

fn f32_name() -> String {
    "f32".into()
}

/// One op to run: its name, positional inputs (null for an absent optional
/// one), and named scalar arguments.
#[derive(Deserialize)]
struct OpRequest {
    op: String,
    inputs: Vec<Option<JsonTensor>>,
    #[serde(default)]
    args: serde_json::Map<String, Value>,
}

fn dtype_of(name: &str) -> Result<Dtype, String> {
    Ok(match name {
        "f32" => Dtype::F32,
        "f16" => Dtype::F16,
        "bf16" => Dtype::Bf16,
        "i32" => Dtype::I32,
        "i64" => Dtype::I64,
        "u8" => Dtype::U8,
        other => return Err(format!("unknown dtype {other}")),
    })
}

fn dtype_name(d: Dtype) -> &'static str {
    match d {
        Dtype::F32 => "f32",
        Dtype::F16 => "f16",
        Dtype::Bf16 => "bf16",
        Dtype::I32 => "i32",
        Dtype::I64 => "i64",
        Dtype::U8 => "u8",
    }
}

/// Builds a tensor: floats through f32, integers through i64, then cast.
fn make(t: &JsonTensor) -> Result<Result<Tensor, Error>, String> {
    let dtype = dtype_of(&t.dtype)?;
    let base = match dtype {
        Dtype::F32 | Dtype::F16 | Dtype::Bf16 => {
            let v: Vec<f32> = t.data.iter().map(|&x| x as f32).collect();
            Tensor::from_f32(&v, &t.shape)
        }
        _ => {
            let v: Vec<i64> = t.data.iter().map(|&x| x as i64).collect();
            Tensor::from_i64(&v, &t.shape)
        }
    };
    Ok(base.and_then(|b| {
        if b.dtype() == dtype {
            Ok(b)
        } else {
            b.cast(dtype)
        }
    }))
}

/// A tensor as JSON (integers decoded exactly from bytes).
fn to_json(t: &Tensor) -> Result<Value, Error> {
    let dtype = t.dtype();
    let data: Vec<Value> = match dtype {
        Dtype::I64 => t
            .to_bytes()?
            .chunks_exact(8)
            .map(|c| json!(i64::from_le_bytes(c.try_into().unwrap())))
            .collect(),
        Dtype::I32 => t
            .to_bytes()?
            .chunks_exact(4)
            .map(|c| json!(i32::from_le_bytes(c.try_into().unwrap())))
            .collect(),
        Dtype::U8 => t.to_bytes()?.iter().map(|&b| json!(b)).collect(),
        _ => t.to_f32()?.into_iter().map(|x| json!(x)).collect(),
    };
    Ok(json!({"shape": t.shape(), "dtype": dtype_name(dtype), "data": data}))
}

fn arg_f32(args: &serde_json::Map<String, Value>, k: &str, default: f32) -> f32 {
    args.get(k)
        .and_then(Value::as_f64)
        .map_or(default, |v| v as f32)
}

fn arg_i32(args: &serde_json::Map<String, Value>, k: &str, default: i32) -> i32 {
    args.get(k)
        .and_then(Value::as_i64)
        .map_or(default, |v| v as i32)
}

fn arg_u32(args: &serde_json::Map<String, Value>, k: &str, default: u32) -> u32 {
    args.get(k)
        .and_then(Value::as_u64)
        .map_or(default, |v| v as u32)
}

/// The `layout` argument of `rope` and `decode-attention` (half-split unless
/// "interleaved").
fn layout(args: &serde_json::Map<String, Value>) -> RopeLayout {
    match args.get("layout").and_then(Value::as_str) {
        Some("interleaved") => RopeLayout::Interleaved,
        _ => RopeLayout::HalfSplit,
    }
}

fn arg_bool(args: &serde_json::Map<String, Value>, k: &str) -> bool {
    args.get(k).and_then(Value::as_bool).unwrap_or(false)
}

fn arg_list(args: &serde_json::Map<String, Value>, k: &str) -> Vec<u32> {
    args.get(k)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_u64)
                .map(|v| v as u32)
                .collect()
        })
        .unwrap_or_default()
}

/// `decode-attention-update` (inputs qkv, keys, values), which takes the
/// caches over. With `"share": true` the probe keeps a reshape of the key
/// cache alive across the call, so the host must copy; that view's values
/// come back as `kept` (they must be the caches as passed).
fn update_op(
    mut inputs: Vec<Option<Tensor>>,
    a: &serde_json::Map<String, Value>,
) -> Result<Result<Value, Error>, String> {
    let mut take = |i: usize| {
        inputs
            .get_mut(i)
            .and_then(Option::take)
            .ok_or_else(|| format!("decode-attention-update: input {i} is required"))
    };
    let (qkv, keys, values) = (take(0)?, take(1)?, take(2)?);
    let kept = match arg_bool(a, "share") {
        true => match keys.reshape(&keys.shape()) {
            Ok(view) => Some(view),
            Err(e) => return Ok(Err(e)),
        },
        false => None,
    };
    let r = tensorwasm_sdk::decode_attention_update(
        &qkv,
        keys,
        values,
        &arg_list(a, "positions"),
        arg_f32(a, "theta", 10000.0),
        layout(a),
        arg_f32(a, "scale", 1.0),
    );
    Ok(r.and_then(|(o, k, v)| {
        let mut out = json!({"out": to_json(&o)?, "keys": to_json(&k)?, "values": to_json(&v)?});
        if let Some(view) = kept {
            out["kept"] = to_json(&view)?;
        }
        Ok(out)
    }))
}

/// Runs the op; the outer error is a malformed request, the inner one the
/// host's answer.
fn run_op(req: &OpRequest) -> Result<Result<Value, Error>, String> {
    let mut inputs = Vec::new();
    for t in &req.inputs {
        inputs.push(match t {
            Some(t) => match make(t)? {
                Ok(t) => Some(t),
                Err(e) => return Ok(Err(e)),
            },
            None => None,
        });
    }
    if req.op == "decode-attention-update" {
        return update_op(inputs, &req.args);
    }
    let need = |i: usize| -> Result<&Tensor, String> {
        inputs
            .get(i)
            .and_then(Option::as_ref)
            .ok_or_else(|| format!("{}: input {i} is required", req.op))
    };
    let opt = |i: usize| inputs.get(i).and_then(Option::as_ref);
    let a = &req.args;
    let one = |r: Result<Tensor, Error>| r.and_then(|t| to_json(&t));
    let attended = |(o, k, v): (Tensor, Tensor, Tensor)| -> Result<Value, Error> {
        Ok(json!({"out": to_json(&o)?, "keys": to_json(&k)?, "values": to_json(&v)?}))
    };
    Ok(match req.op.as_str() {
        "matmul" => one(need(0)?.matmul_with(need(1)?, arg_bool(a, "ta"), arg_bool(a, "tb"))),
        "add" => one(need(0)?.add(need(1)?)),
        "sub" => one(need(0)?.sub(need(1)?)),
        "mul" => one(need(0)?.mul(need(1)?)),
        "div" => one(need(0)?.div(need(1)?)),
        "scale" => one(need(0)?.scale(arg_f32(a, "factor", 1.0))),
        "gelu" => one(need(0)?.gelu()),
        "gelu-tanh" => one(need(0)?.gelu_tanh()),
        "silu" => one(need(0)?.silu()),
        "relu" => one(need(0)?.relu()),
        "tanh" => one(need(0)?.tanh()),
        "exp" => one(need(0)?.exp()),
        "softmax" => one(tensorwasm_sdk::bindings::wasi::tensor::ops::softmax(
            &need(0)?.0,
            arg_i32(a, "axis", -1),
            arg_bool(a, "causal"),
        )
        .map(Tensor)
        .map_err(Error)),
        "layer-norm" => one(need(0)?.layer_norm(opt(1), opt(2), arg_f32(a, "eps", 1e-5))),
        "rms-norm" => one(need(0)?.rms_norm(opt(1), arg_f32(a, "eps", 1e-5))),
        "attention" => one(tensorwasm_sdk::attention(
            need(0)?,
            need(1)?,
            need(2)?,
            opt(3),
            arg_f32(a, "scale", 1.0),
            arg_bool(a, "causal"),
        )),
        "embedding" => one(need(0)?.embedding(need(1)?)),
        "reshape" => one(need(0)?.reshape(&arg_list(a, "shape"))),
        "permute" => one(need(0)?.permute(&arg_list(a, "dims"))),
        "transpose" => one(need(0)?.transpose(arg_i32(a, "axis0", 0), arg_i32(a, "axis1", 1))),
        "narrow" => one(need(0)?.narrow(
            arg_i32(a, "axis", 0),
            arg_u32(a, "start", 0),
            arg_u32(a, "length", 0),
        )),
        "concat" => {
            let xs: Vec<&Tensor> = inputs.iter().flatten().collect();
            one(tensorwasm_sdk::concat(&xs, arg_i32(a, "axis", 0)))
        }
        "rope" => one(need(0)?.rope(
            arg_u32(a, "offset", 0),
            arg_f32(a, "theta", 10000.0),
            layout(a),
        )),
        "swiglu" => one(need(0)?.swiglu(need(1)?)),
        "decode-attention" => tensorwasm_sdk::decode_attention(
            need(0)?,
            need(1)?,
            need(2)?,
            need(3)?,
            need(4)?,
            &arg_list(a, "positions"),
            arg_f32(a, "theta", 10000.0),
            layout(a),
            arg_f32(a, "scale", 1.0),
        )
        .and_then(attended),
        "decode-attention-qkv" => tensorwasm_sdk::decode_attention_qkv(
            need(0)?,
            need(1)?,
            need(2)?,
            &arg_list(a, "positions"),
            arg_f32(a, "theta", 10000.0),
            layout(a),
            arg_f32(a, "scale", 1.0),
        )
        .and_then(attended),
        "add-rms-norm" => need(0)?
            .add_rms_norm(need(1)?, opt(2), arg_f32(a, "eps", 1e-5))
            .and_then(|(s, n)| Ok(json!({"sum": to_json(&s)?, "normed": to_json(&n)?}))),
        "argmax" => one(need(0)?.argmax(arg_i32(a, "axis", -1))),
        "top-k" => need(0)?
            .top_k(arg_u32(a, "k", 1))
            .and_then(|(v, i)| Ok(json!({"values": to_json(&v)?, "indices": to_json(&i)?}))),
        "mean" => one(need(0)?.mean(arg_i32(a, "axis", -1), opt(1))),
        "l2-normalize" => {
            one(need(0)?.l2_normalize(arg_i32(a, "axis", -1), arg_f32(a, "eps", 1e-12)))
        }
        "cast" => {
            let d = dtype_of(a.get("dtype").and_then(Value::as_str).unwrap_or("f32"))?;
            one(need(0)?.cast(d))
        }
        "identity" => to_json(need(0)?),
        other => return Err(format!("unknown op {other}")),
    })
}

fn error_json(e: &Error) -> Value {
    json!({"error": {"kind": e.kind(), "message": e.to_string()}})
}

fn cuda_report() -> Value {
    fn kind<T>(r: Result<T, cuda::Error>) -> String {
        match r {
            Ok(_) => "ok".into(),
            Err(cuda::Error::NoDevice) => "no-device".into(),
            Err(e) => format!("{e:?}"),
        }
    }
    let tensor_into = Tensor::full(&[4], Dtype::F32, 1.0)
        .map(|t| kind(cuda::tensor_into_buffer(t.0)))
        .unwrap_or_else(|e| e.to_string());
    json!({
        "info": kind(cuda::info()),
        "synchronize": kind(cuda::synchronize()),
        "alloc": kind(cuda::Buffer::alloc(1024)),
        "stream": kind(cuda::Stream::create()),
        "module": kind(cuda::Module::load("vector-add")),
        "module-digest": kind(cuda::Module::load_digest(&"0".repeat(64))),
        "module-source": kind(cuda::Module::load_source("__global__ void k() {}", cuda::SourceKind::Cuda)),
        "tensor-into-buffer": tensor_into,
    })
}

fn quota(max_mb: u32) -> Value {
    let mut held = Vec::new();
    for _ in 0..max_mb {
        match Tensor::full(&[1 << 18], Dtype::F32, 0.5) {
            Ok(t) => held.push(t),
            Err(e) => {
                let detail = match &e.0 {
                    raw::Error::QuotaExceeded(q) => {
                        json!({"requested": q.requested, "in_use": q.in_use, "limit": q.limit})
                    }
                    _ => Value::Null,
                };
                return json!({"allocated_mb": held.len(), "error": e.kind(), "detail": detail});
            }
        }
    }
    json!({"allocated_mb": held.len(), "error": null})
}

fn meta_json(v: &tensorwasm_sdk::bindings::wasi::tensor::weights::MetadataValue) -> Value {
    use tensorwasm_sdk::bindings::wasi::tensor::weights::MetadataValue as M;
    match v {
        M::Text(s) => json!(s),
        M::Integer(i) => json!(i),
        M::Float(f) => json!(f),
        M::Boolean(b) => json!(b),
        M::TextList(l) => json!(l),
        M::IntegerList(l) => json!(l),
        M::FloatList(l) => json!(l),
    }
}

fn weights(name: &str, tensor: Option<&str>, meta: Option<&str>) -> Result<Value, Error> {
    let w = Weights::open(name)?;
    let keys = w.0.metadata_keys();
    let meta = meta.map(|k| w.0.metadata(k).as_ref().map_or(Value::Null, meta_json));
    let list: Vec<Value> = w
        .tensors()
        .into_iter()
        .map(|i| json!({"name": i.name, "shape": i.shape, "dtype": dtype_name(i.dtype)}))
        .collect();
    let read = match tensor {
        Some(t) => to_json(&w.get(t)?)?,
        None => Value::Null,
    };
    Ok(json!({"tensors": list, "tensor": read, "metadata_keys": keys, "metadata": meta}))
}

fn now_ns() -> u64 {
    wasip2::clocks::monotonic_clock::now()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Seconds for each of `reps` N×N products (after one warm-up).
fn bench_matmul(n: u32, reps: u32, dtype: Dtype, batch_sync: bool) -> Result<Value, Error> {
    let len = (n as usize) * (n as usize);
    let a: Vec<f32> = (0..len)
        .map(|i| ((i * 7 % 13) as f32) / 13.0 - 0.5)
        .collect();
    let b: Vec<f32> = (0..len)
        .map(|i| ((i * 5 % 11) as f32) / 11.0 - 0.5)
        .collect();
    let a = Tensor::from_f32(&a, &[n, n])?.cast(dtype)?;
    let b = Tensor::from_f32(&b, &[n, n])?.cast(dtype)?;
    drop(a.matmul(&b)?);
    let mut secs = Vec::new();
    if batch_sync {
        // Throughput: all products back to back, one read-back at the end.
        let t0 = now_ns();
        let mut last = None;
        for _ in 0..reps.max(1) {
            last = Some(a.matmul(&b)?);
        }
        if let Some(c) = last {
            c.narrow(0, 0, 1)?.narrow(1, 0, 1)?.to_bytes()?;
        }
        secs.push((now_ns() - t0) as f64 * 1e-9 / reps.max(1) as f64);
    }
    for _ in 0..if batch_sync { 0 } else { reps.max(1) } {
        let t0 = now_ns();
        let c = a.matmul(&b)?;
        // Reading one element waits for the product on an asynchronous (GPU) backend.
        c.narrow(0, 0, 1)?.narrow(1, 0, 1)?.to_bytes()?;
        secs.push((now_ns() - t0) as f64 * 1e-9);
        drop(c);
    }
    let flops = 2.0 * (n as f64).powi(3);
    let gflops: Vec<f64> = secs.iter().map(|s| flops / s * 1e-9).collect();
    Ok(
        json!({"n": n, "dtype": dtype_name(dtype), "seconds": secs, "gflops": gflops, "median_gflops": median(gflops.clone())}),
    )
}

/// One pre-norm transformer layer's weights (attention + 4× MLP).
struct Layer {
    wq: Tensor,
    wk: Tensor,
    wv: Tensor,
    wo: Tensor,
    w1: Tensor,
    w2: Tensor,
}

/// A `layers`-deep chain of attention + MLP blocks on [1, seq, dim] issued op
/// by op (layer-norm, 4 projections, causal attention over `heads`, residual
/// adds, GELU MLP): milliseconds per forward pass, each pass ending with one
/// element read back (the same chain as `benches/gpu/bench.py`'s PyTorch one).
fn bench_blocks(
    layers: u32,
    seq: u32,
    dim: u32,
    heads: u32,
    reps: u32,
    dtype: Dtype,
) -> Result<Value, Error> {
    let w = |rows: u32, cols: u32, salt: u32| -> Result<Tensor, Error> {
        let data: Vec<f32> = (0..rows * cols)
            .map(|i| (((i.wrapping_mul(2654435761) ^ salt) % 1000) as f32 / 1000.0 - 0.5) * 0.05)
            .collect();
        Tensor::from_f32(&data, &[rows, cols])?.cast(dtype)
    };
    let ones = Tensor::full(&[dim], dtype, 1.0)?;
    let zeros = Tensor::full(&[dim], dtype, 0.0)?;
    let net: Vec<Layer> = (0..layers)
        .map(|l| {
            Ok(Layer {
                wq: w(dim, dim, l * 8 + 1)?,
                wk: w(dim, dim, l * 8 + 2)?,
                wv: w(dim, dim, l * 8 + 3)?,
                wo: w(dim, dim, l * 8 + 4)?,
                w1: w(dim, 4 * dim, l * 8 + 5)?,
                w2: w(4 * dim, dim, l * 8 + 6)?,
            })
        })
        .collect::<Result<_, Error>>()?;
    let x0 = w(seq, dim, 99)?.reshape(&[1, seq, dim])?;
    let hd = dim / heads;
    let split = |t: &Tensor| t.reshape(&[1, seq, heads, hd])?.permute(&[0, 2, 1, 3]);
    let forward = || -> Result<Tensor, Error> {
        let mut x = x0.reshape(&[1, seq, dim])?;
        for l in &net {
            let h = x.layer_norm(Some(&ones), Some(&zeros), 1e-5)?;
            let (q, k, v) = (
                split(&h.matmul(&l.wq)?)?,
                split(&h.matmul(&l.wk)?)?,
                split(&h.matmul(&l.wv)?)?,
            );
            let a = attention(&q, &k, &v, None, 1.0 / (hd as f32).sqrt(), true)?;
            let a = a.permute(&[0, 2, 1, 3])?.reshape(&[1, seq, dim])?;
            x = x.add(&a.matmul(&l.wo)?)?;
            let h = x.layer_norm(Some(&ones), Some(&zeros), 1e-5)?;
            x = x.add(&h.matmul(&l.w1)?.gelu()?.matmul(&l.w2)?)?;
        }
        x.narrow(1, 0, 1)?.narrow(2, 0, 1)?.to_bytes()?;
        Ok(x)
    };
    forward()?;
    let mut ms = Vec::new();
    for _ in 0..reps.max(1) {
        let t0 = now_ns();
        forward()?;
        ms.push((now_ns() - t0) as f64 * 1e-6);
    }
    Ok(
        json!({"layers": layers, "seq": seq, "dim": dim, "heads": heads, "ms": ms, "median_ms": median(ms.clone())}),
    )
}

/// GiB/s of `from-bytes` of `mib` MiB of guest memory (u8, then one element
/// read back so an asynchronous backend has finished the copy).
fn bench_upload(mib: u32, reps: u32) -> Result<Value, Error> {
    let bytes = vec![7u8; (mib as usize) << 20];
    let mut gibs = Vec::new();
    for _ in 0..reps.max(1) {
        let t0 = now_ns();
        let t = Tensor::from_bytes(&bytes, &[bytes.len() as u32], Dtype::U8)?;
        t.narrow(0, 0, 1)?.to_bytes()?;
        let s = (now_ns() - t0) as f64 * 1e-9;
        gibs.push(bytes.len() as f64 / s / (1u64 << 30) as f64);
    }
    Ok(json!({"mib": mib, "gib_per_s": gibs, "median_gib_per_s": median(gibs.clone())}))
}

/// Microseconds per host call: `shape()` (no allocation) and `scale` on one element.
fn bench_overhead(reps: u32) -> Result<Value, Error> {
    let x = Tensor::from_f32(&[1.0], &[1])?;
    let t0 = now_ns();
    for _ in 0..reps {
        std::hint::black_box(x.shape());
    }
    let query = (now_ns() - t0) as f64 / 1e3 / reps as f64;
    let t0 = now_ns();
    for _ in 0..reps {
        std::hint::black_box(x.scale(2.0)?);
    }
    let op = (now_ns() - t0) as f64 / 1e3 / reps as f64;
    Ok(json!({"reps": reps, "query_us": query, "op_us": op}))
}

/// An op issued by a benchmark.
type Issue<'a> = &'a dyn Fn() -> Result<Tensor, Error>;

/// Times `reps` calls of `f` (each result dropped): µs per issue, and µs
/// per op up to reading one element of the last result back.
fn time_op(reps: u32, f: Issue<'_>) -> Result<Value, Error> {
    f()?.narrow(0, 0, 1)?.to_bytes()?;
    let t0 = now_ns();
    for _ in 0..reps {
        std::hint::black_box(f()?);
    }
    let issued = now_ns() - t0;
    let last = f()?;
    last.narrow(0, 0, 1)?.to_bytes()?;
    let done = now_ns() - t0;
    let per = |ns: u64, n: u32| ns as f64 / 1e3 / f64::from(n);
    Ok(json!({"issue_us": per(issued, reps), "done_us": per(done, reps + 1)}))
}

/// `/bench/ops`: the kinds of op a batched decode step issues, at
/// SmolLM2-135M's sizes (hidden 576, 9 query and 3 key/value heads of 64,
/// feed-forward 1536, caches of `cap` positions) for `rows` sequences.
fn bench_ops(reps: u32, rows: u32, cap: u32) -> Result<Value, Error> {
    let f = |shape: &[u32], v: f64| Tensor::full(shape, Dtype::F32, v);
    let (x, w, up) = (
        f(&[rows, 576], 0.5)?,
        f(&[576, 576], 0.01)?,
        f(&[1536, 576], 0.01)?,
    );
    let (nw, g) = (f(&[576], 1.0)?, f(&[rows, 1536], 0.5)?);
    let (k, cache) = (f(&[rows, 192], 0.1)?, f(&[rows, 3, cap, 64], 0.1)?);
    let (qkv, qkv_w) = (f(&[rows, 960], 0.1)?, f(&[960, 576], 0.01)?);
    let down = f(&[576, 1536], 0.01)?;
    // Positions in the caches' middle (100-199 for 256 positions).
    let base = (cap / 2).saturating_sub(28).max(1);
    let positions: Vec<u32> = (0..rows).map(|r| base + r % base).collect();
    // The update's caches, given over and taken back each call.
    let caches = std::cell::RefCell::new(Some((
        f(&[rows, 3, cap, 64], 0.1)?,
        f(&[rows, 3, cap, 64], 0.1)?,
    )));
    let mut out = serde_json::Map::new();
    let ops: [(&str, Issue<'_>); 12] = [
        ("scale [1]", &|| f(&[1], 1.0)?.scale(2.0)),
        ("add [rows,576]", &|| x.add(&x)),
        ("rms-norm [rows,576]", &|| x.rms_norm(Some(&nw), 1e-5)),
        ("matmul [rows,576]x[576,576]T", &|| x.matmul_t(&w)),
        ("matmul [rows,576]x[1536,576]T", &|| x.matmul_t(&up)),
        ("matmul [rows,576]x[960,576]T", &|| x.matmul_t(&qkv_w)),
        ("matmul [rows,1536]x[576,1536]T", &|| g.matmul_t(&down)),
        ("add-rms-norm [rows,576]", &|| {
            x.add_rms_norm(&x, Some(&nw), 1e-5).map(|(_, n)| n)
        }),
        ("swiglu [rows,1536]", &|| g.swiglu(&g)),
        ("decode-attention", &|| {
            tensorwasm_sdk::decode_attention(
                &x,
                &k,
                &k,
                &cache,
                &cache,
                &positions,
                10000.0,
                RopeLayout::Interleaved,
                0.125,
            )
            .map(|(o, _, _)| o)
        }),
        ("decode-attention-qkv", &|| {
            tensorwasm_sdk::decode_attention_qkv(
                &qkv,
                &cache,
                &cache,
                &positions,
                10000.0,
                RopeLayout::Interleaved,
                0.125,
            )
            .map(|(o, _, _)| o)
        }),
        ("decode-attention-update", &|| {
            let (keys, values) = caches.borrow_mut().take().ok_or_else(|| {
                Error(
                    tensorwasm_sdk::bindings::wasi::tensor::types::Error::InvalidArgument(
                        "the caches were lost by an earlier error".into(),
                    ),
                )
            })?;
            let (o, k, v) = tensorwasm_sdk::decode_attention_update(
                &qkv,
                keys,
                values,
                &positions,
                10000.0,
                RopeLayout::Interleaved,
                0.125,
            )?;
            *caches.borrow_mut() = Some((k, v));
            Ok(o)
        }),
    ];
    for (name, op) in ops {
        out.insert(name.into(), time_op(reps, op)?);
    }
    Ok(json!({"reps": reps, "rows": rows, "cap": cap, "ops": out}))
}

struct Probe;

impl wasip2::exports::http::incoming_handler::Guest for Probe {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let route = path(&request);
        let q = |k: &str| query_param(&request, k);
        match route.as_str() {
            "/op" => {
                let body = match read_body(&request) {
                    Ok(b) => b,
                    Err(e) => return json_error(out, 400, "bad_body", &e),
                };
                let req: OpRequest = match serde_json::from_slice(&body) {
                    Ok(r) => r,
                    Err(e) => return json_error(out, 400, "bad_json", &e.to_string()),
                };
                match run_op(&req) {
                    Ok(Ok(v)) => json(out, 200, &v.to_string()),
                    Ok(Err(e)) => json(out, 422, &error_json(&e).to_string()),
                    Err(msg) => json_error(out, 400, "bad_request", &msg),
                }
            }
            "/bytes" => {
                let body = match read_body(&request) {
                    Ok(b) => b,
                    Err(e) => return json_error(out, 400, "bad_body", &e),
                };
                let shape: Vec<u32> = q("shape")
                    .unwrap_or_default()
                    .split(',')
                    .filter_map(|d| d.parse().ok())
                    .collect();
                let dtype = match dtype_of(&q("dtype").unwrap_or_else(f32_name)) {
                    Ok(d) => d,
                    Err(e) => return json_error(out, 400, "bad_request", &e),
                };
                match Tensor::from_bytes(&body, &shape, dtype).and_then(|t| t.to_bytes()) {
                    Ok(back) => respond(
                        out,
                        200,
                        &[("content-type", "application/octet-stream")],
                        &back,
                    ),
                    Err(e) => json(out, 422, &error_json(&e).to_string()),
                }
            }
            "/cuda" => json(out, 200, &cuda_report().to_string()),
            "/cuda/run" => {
                let steps: Vec<Value> = match read_body(&request)
                    .map_err(|e| e.to_string())
                    .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
                {
                    Ok(s) => s,
                    Err(e) => return json_error(out, 400, "bad_request", &e),
                };
                json(out, 200, &cuda_script::run(&steps).to_string())
            }
            "/bench/launch" => {
                let reps = q("reps").and_then(|v| v.parse().ok()).unwrap_or(10_000);
                let n = q("n").and_then(|v| v.parse().ok()).unwrap_or(256);
                let empty = q("kernel").as_deref() == Some("empty");
                match cuda_script::bench_launch(reps, n, empty) {
                    Ok(v) => json(out, 200, &v.to_string()),
                    Err(e) => json_error(out, 422, "cuda", &format!("{e:?}")),
                }
            }
            "/scheduler" => {
                let status = match scheduler::yield_() {
                    scheduler::YieldStatus::Continue => "continue",
                    scheduler::YieldStatus::DeadlineNear => "deadline-near",
                    scheduler::YieldStatus::DeadlineElapsed => "deadline-elapsed",
                };
                let v = json!({"yield": status, "remaining_ns": scheduler::remaining()});
                json(out, 200, &v.to_string())
            }
            "/quota" => {
                let mb = q("mb").and_then(|v| v.parse().ok()).unwrap_or(4096);
                json(out, 200, &quota(mb).to_string())
            }
            "/leak" => {
                let mb: u32 = q("mb").and_then(|v| v.parse().ok()).unwrap_or(8);
                let mut kept = Vec::new();
                for _ in 0..mb {
                    match Tensor::full(&[1 << 18], Dtype::F32, 1.0) {
                        Ok(t) => kept.push(t),
                        Err(e) => return json(out, 422, &error_json(&e).to_string()),
                    }
                }
                std::mem::forget(kept);
                json(out, 200, &json!({"leaked_mb": mb}).to_string())
            }
            "/dropped-handle" => {
                let t = Tensor::full(&[2], Dtype::F32, 1.0).expect("alloc");
                let handle = t.0.handle();
                drop(t);
                // SAFETY: deliberately not safe: the handle was dropped above.
                let stale = unsafe { raw::Tensor::from_handle(handle) };
                let r = stale.to_f32();
                json(out, 200, &format!("{{\"unexpected\":\"{}\"}}", r.is_ok()));
            }
            "/foreign-handle" => {
                // A handle number this instance was never given.
                // SAFETY: deliberately not safe.
                let forged = unsafe { raw::Tensor::from_handle(0x7fff_fff0) };
                let r = forged.to_f32();
                json(out, 200, &format!("{{\"unexpected\":\"{}\"}}", r.is_ok()));
            }
            "/weights" => {
                let name = q("name").unwrap_or_default();
                match weights(&name, q("tensor").as_deref(), q("meta").as_deref()) {
                    Ok(v) => json(out, 200, &v.to_string()),
                    Err(e) => json(out, 422, &error_json(&e).to_string()),
                }
            }
            "/bench/matmul" => {
                let n = q("n").and_then(|v| v.parse().ok()).unwrap_or(1024);
                let reps = q("reps").and_then(|v| v.parse().ok()).unwrap_or(5);
                let dtype = match dtype_of(&q("dtype").unwrap_or_else(f32_name)) {
                    Ok(d) => d,
                    Err(e) => return json_error(out, 400, "bad_request", &e),
                };
                let batch_sync = q("sync").as_deref() == Some("end");
                match bench_matmul(n, reps, dtype, batch_sync) {
                    Ok(v) => json(out, 200, &v.to_string()),
                    Err(e) => json(out, 422, &error_json(&e).to_string()),
                }
            }
            "/bench/blocks" => {
                let n = |k: &str, d: u32| q(k).and_then(|v| v.parse().ok()).unwrap_or(d);
                let dtype = match dtype_of(&q("dtype").unwrap_or_else(f32_name)) {
                    Ok(d) => d,
                    Err(e) => return json_error(out, 400, "bad_request", &e),
                };
                let (layers, seq, dim, heads) = (
                    n("layers", 12),
                    n("seq", 128),
                    n("dim", 768),
                    n("heads", 12),
                );
                if heads == 0 || dim % heads != 0 {
                    return json_error(out, 400, "bad_request", "dim must be a multiple of heads");
                }
                match bench_blocks(layers, seq, dim, heads, n("reps", 10), dtype) {
                    Ok(v) => json(out, 200, &v.to_string()),
                    Err(e) => json(out, 422, &error_json(&e).to_string()),
                }
            }
            "/bench/upload" => {
                let mib = q("mib").and_then(|v| v.parse().ok()).unwrap_or(64);
                let reps = q("reps").and_then(|v| v.parse().ok()).unwrap_or(5);
                match bench_upload(mib, reps) {
                    Ok(v) => json(out, 200, &v.to_string()),
                    Err(e) => json(out, 422, &error_json(&e).to_string()),
                }
            }
            "/bench/overhead" => {
                let reps = q("reps").and_then(|v| v.parse().ok()).unwrap_or(20_000);
                match bench_overhead(reps) {
                    Ok(v) => json(out, 200, &v.to_string()),
                    Err(e) => json(out, 422, &error_json(&e).to_string()),
                }
            }
            "/bench/ops" => {
                let reps = q("reps").and_then(|v| v.parse().ok()).unwrap_or(2_000);
                let rows = q("rows").and_then(|v| v.parse().ok()).unwrap_or(64);
                let cap = q("cap").and_then(|v| v.parse().ok()).unwrap_or(256);
                match bench_ops(reps, rows, cap) {
                    Ok(v) => json(out, 200, &v.to_string()),
                    Err(e) => json(out, 422, &error_json(&e).to_string()),
                }
            }
            "/steps" => {
                let n = |k: &str, d: u32| q(k).and_then(|v| v.parse().ok()).unwrap_or(d);
                let on = |k: &str| q(k).as_deref() == Some("1");
                let r = steps::run(
                    n("rows", 4),
                    n("layers", 2),
                    n("steps", 3),
                    on("record"),
                    on("mid"),
                    n("keys", 1),
                );
                match r {
                    Ok(v) => json(out, 200, &v.to_string()),
                    Err(e) => json(out, 422, &error_json(&e).to_string()),
                }
            }
            "/bench/steps" => {
                let n = |k: &str, d: u32| q(k).and_then(|v| v.parse().ok()).unwrap_or(d);
                match steps::bench(n("rows", 64), n("layers", 30), n("reps", 50), n("cap", 256)) {
                    Ok(v) => json(out, 200, &v.to_string()),
                    Err(e) => json(out, 422, &error_json(&e).to_string()),
                }
            }
            _ => json_error(out, 404, "not_found", "no such route"),
        }
    }
}

wasip2::http::proxy::export!(Probe);
