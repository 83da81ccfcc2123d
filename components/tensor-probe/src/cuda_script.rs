//! `POST /cuda/run`: runs a JSON list of `wasi:cuda` steps in one instance
//! and answers one result per step (`{"ok": ...}` or `{"error": {"kind",
//! "message"}}`), going on after errors so one script can mix correct use
//! and misuse. Resources are referred to by the index of the step result
//! that made them (`"buf": 0` = the first buffer made, and so on).
//!
//! Steps (`"op"`): `info`, `sync`, `alloc {size}`, `size {buf}`,
//! `write {buf, offset, f32|f64|i64|bytes, stream?}`,
//! `read {buf, offset, len, as: f32|f64|i64|bytes}`,
//! `copy {dst, src, src_offset, offset, len, stream?}`, `drop-buf {buf}`,
//! `load {module}`, `load-digest {digest}`, `load-source {source, kind}`,
//! `kernel {module, name, params}`, `params {kernel}`,
//! `launch {kernel, grid, block, shared?, args: [{buf, offset?} | {i32|u32|i64|u64|f32|f64: v}], stream?}`,
//! `stream`, `sync-stream {stream}`, `record {stream}`, `wait {stream, event}`,
//! `event-sync {event}`, `complete {event}`, `elapsed {start, end}`,
//! `tensor-into-buffer {f32, shape, keep?}`, `buffer-into-tensor {buf, shape}`
//! (f32; answers the tensor's values and the same scaled by 2 through
//! `wasi:tensor`).

use serde_json::{Value, json};
use tensorwasm_sdk::{Dtype, Tensor, cuda};

fn kind(e: &cuda::Error) -> &'static str {
    use cuda::Error as E;
    match e {
        E::NoDevice => "no-device",
        E::NotPermitted(_) => "not-permitted",
        E::NotFound(_) => "not-found",
        E::InvalidArgument(_) => "invalid-argument",
        E::OutOfBounds(_) => "out-of-bounds",
        E::SignatureMismatch(_) => "signature-mismatch",
        E::InvalidLaunch(_) => "invalid-launch",
        E::QuotaExceeded(_) => "quota-exceeded",
        E::Backend(_) => "backend",
    }
}

fn fail(e: cuda::Error) -> Value {
    json!({"error": {"kind": kind(&e), "message": format!("{e:?}")}})
}

#[derive(Default)]
struct Held {
    buffers: Vec<Option<cuda::Buffer>>,
    streams: Vec<cuda::Stream>,
    events: Vec<cuda::Event>,
    modules: Vec<cuda::Module>,
    kernels: Vec<cuda::Kernel>,
    kept: Vec<Tensor>,
}

fn index(step: &Value, key: &str) -> Result<usize, String> {
    step[key]
        .as_u64()
        .map(|v| v as usize)
        .ok_or_else(|| format!("`{key}` missing"))
}

fn get<'a, T>(v: &'a [T], i: usize, what: &str) -> Result<&'a T, String> {
    v.get(i).ok_or_else(|| format!("no {what} {i}"))
}

fn u(step: &Value, key: &str) -> u64 {
    step[key].as_u64().unwrap_or(0)
}

fn dims(v: &Value) -> Vec<u32> {
    v.as_array()
        .map(|a| a.iter().map(|d| d.as_u64().unwrap_or(0) as u32).collect())
        .unwrap_or_default()
}

fn dim3(v: &Value) -> cuda::Dim3 {
    let d = |i: usize| v.get(i).and_then(Value::as_u64).unwrap_or(1) as u32;
    cuda::Dim3 {
        x: d(0),
        y: d(1),
        z: d(2),
    }
}

fn bytes_of(step: &Value) -> Vec<u8> {
    let nums = |k: &str| step[k].as_array().cloned().unwrap_or_default();
    if step.get("f32").is_some() {
        nums("f32")
            .iter()
            .flat_map(|v| (v.as_f64().unwrap_or(0.0) as f32).to_le_bytes())
            .collect()
    } else if step.get("f64").is_some() {
        nums("f64")
            .iter()
            .flat_map(|v| v.as_f64().unwrap_or(0.0).to_le_bytes())
            .collect()
    } else if step.get("i64").is_some() {
        nums("i64")
            .iter()
            .flat_map(|v| v.as_i64().unwrap_or(0).to_le_bytes())
            .collect()
    } else {
        nums("bytes")
            .iter()
            .map(|v| v.as_u64().unwrap_or(0) as u8)
            .collect()
    }
}

fn decode(bytes: &[u8], as_: &str) -> Value {
    match as_ {
        "f32" => json!(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
                .collect::<Vec<_>>()
        ),
        "f64" => json!(
            bytes
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                .collect::<Vec<_>>()
        ),
        "i64" => json!(
            bytes
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                .collect::<Vec<_>>()
        ),
        _ => json!(bytes),
    }
}

fn param(name: &str) -> Result<cuda::ParamKind, String> {
    use cuda::ParamKind as P;
    Ok(match name {
        "i32" => P::I32,
        "u32" => P::U32,
        "i64" => P::I64,
        "u64" => P::U64,
        "f32" => P::F32,
        "f64" => P::F64,
        "pointer" => P::Pointer,
        other => return Err(format!("unknown param kind {other}")),
    })
}

fn param_name(k: cuda::ParamKind) -> &'static str {
    use cuda::ParamKind as P;
    match k {
        P::I32 => "i32",
        P::U32 => "u32",
        P::I64 => "i64",
        P::U64 => "u64",
        P::F32 => "f32",
        P::F64 => "f64",
        P::Pointer => "pointer",
    }
}

/// Runs every step; a malformed step answers `{"script": message}`.
pub fn run(steps: &[Value]) -> Value {
    let mut held = Held::default();
    let results: Vec<Value> = steps
        .iter()
        .map(|s| step(&mut held, s).unwrap_or_else(|m| json!({ "script": m })))
        .collect();
    json!(results)
}

fn ok<T>(r: Result<T, cuda::Error>, f: impl FnOnce(T) -> Value) -> Value {
    match r {
        Ok(v) => json!({ "ok": f(v) }),
        Err(e) => fail(e),
    }
}

/// Keeps what `r` made in `list` and answers its index.
fn keep<T>(list: &mut Vec<T>, r: Result<T, cuda::Error>) -> Value {
    let at = list.len();
    ok(r, |v| {
        list.push(v);
        json!(at)
    })
}

fn step(h: &mut Held, s: &Value) -> Result<Value, String> {
    let stream = match s.get("stream") {
        Some(v) => Some(get(
            &h.streams,
            v.as_u64().unwrap_or(u64::MAX) as usize,
            "stream",
        )?),
        None => None,
    };
    let buf = |h: &Held, key: &str| -> Result<usize, String> {
        let i = index(s, key)?;
        match h.buffers.get(i) {
            Some(Some(_)) => Ok(i),
            _ => Err(format!("no buffer {i}")),
        }
    };
    Ok(match s["op"].as_str().unwrap_or("") {
        "info" => ok(cuda::info(), |i| {
            json!({
                "name": i.name, "compute": [i.compute_major, i.compute_minor],
                "memory": i.total_memory, "sms": i.multiprocessors, "warp": i.warp_size,
                "max_threads": i.max_threads_per_block,
                "max_block": [i.max_block.x, i.max_block.y, i.max_block.z],
                "max_grid": [i.max_grid.x, i.max_grid.y, i.max_grid.z],
                "max_shared": i.max_shared_memory_per_block, "driver": i.driver_version,
            })
        }),
        "sync" => ok(cuda::synchronize(), |_| json!(null)),
        "alloc" => keep(&mut h.buffers, cuda::Buffer::alloc(u(s, "size")).map(Some)),
        "size" => {
            let i = buf(h, "buf")?;
            json!({ "ok": h.buffers[i].as_ref().unwrap().size() })
        }
        "write" => {
            let i = buf(h, "buf")?;
            let b = h.buffers[i].as_ref().unwrap();
            ok(b.write(u(s, "offset"), &bytes_of(s), stream), |_| {
                json!(null)
            })
        }
        "read" => {
            let i = buf(h, "buf")?;
            let b = h.buffers[i].as_ref().unwrap();
            let as_ = s["as"].as_str().unwrap_or("bytes");
            ok(b.read(u(s, "offset"), u(s, "len")), |v| decode(&v, as_))
        }
        "copy" => {
            let (d, src) = (buf(h, "dst")?, buf(h, "src")?);
            let (db, sb) = (
                h.buffers[d].as_ref().unwrap(),
                h.buffers[src].as_ref().unwrap(),
            );
            let r = db.copy_from(sb, u(s, "src_offset"), u(s, "offset"), u(s, "len"), stream);
            ok(r, |_| json!(null))
        }
        "drop-buf" => {
            let i = buf(h, "buf")?;
            h.buffers[i] = None;
            json!({ "ok": null })
        }
        "load" | "load-digest" | "load-source" => {
            let r = match s["op"].as_str().unwrap() {
                "load" => cuda::Module::load(s["module"].as_str().unwrap_or("")),
                "load-digest" => cuda::Module::load_digest(s["digest"].as_str().unwrap_or("")),
                _ => cuda::Module::load_source(
                    s["source"].as_str().unwrap_or(""),
                    if s["kind"] == "ptx" {
                        cuda::SourceKind::Ptx
                    } else {
                        cuda::SourceKind::Cuda
                    },
                ),
            };
            keep(&mut h.modules, r)
        }
        "kernel" => {
            let m = get(&h.modules, index(s, "module")?, "module")?;
            let params = s["params"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|p| param(p.as_str().unwrap_or("")))
                .collect::<Result<Vec<_>, _>>()?;
            let r = m.kernel(s["name"].as_str().unwrap_or(""), &params);
            keep(&mut h.kernels, r)
        }
        "params" => {
            let k = get(&h.kernels, index(s, "kernel")?, "kernel")?;
            json!({ "ok": k.params().into_iter().map(param_name).collect::<Vec<_>>() })
        }
        "launch" => {
            let k = get(&h.kernels, index(s, "kernel")?, "kernel")?;
            let mut args = Vec::new();
            for a in s["args"].as_array().cloned().unwrap_or_default() {
                use cuda::Argument as A;
                let arg = if let Some(i) = a.get("buf").and_then(Value::as_u64) {
                    let b = match h.buffers.get(i as usize) {
                        Some(Some(b)) => b,
                        _ => return Err(format!("no buffer {i}")),
                    };
                    match a.get("offset").and_then(Value::as_u64) {
                        Some(o) => A::BufferAt((b, o)),
                        None => A::Buffer(b),
                    }
                } else if let Some(v) = a.get("i32") {
                    A::I32(v.as_i64().unwrap_or(0) as i32)
                } else if let Some(v) = a.get("u32") {
                    A::U32(v.as_u64().unwrap_or(0) as u32)
                } else if let Some(v) = a.get("i64") {
                    A::I64(v.as_i64().unwrap_or(0))
                } else if let Some(v) = a.get("u64") {
                    A::U64(v.as_u64().unwrap_or(0))
                } else if let Some(v) = a.get("f32") {
                    A::F32(v.as_f64().unwrap_or(0.0) as f32)
                } else if let Some(v) = a.get("f64") {
                    A::F64(v.as_f64().unwrap_or(0.0))
                } else {
                    return Err(format!("bad argument {a}"));
                };
                args.push(arg);
            }
            let config = cuda::LaunchConfig {
                grid: dim3(&s["grid"]),
                block: dim3(&s["block"]),
                shared_memory_bytes: u(s, "shared") as u32,
            };
            ok(k.launch(config, &args, stream), |_| json!(null))
        }
        "stream" => keep(&mut h.streams, cuda::Stream::create()),
        "sync-stream" => ok(
            get(&h.streams, index(s, "stream")?, "stream")?.synchronize(),
            |_| json!(null),
        ),
        "record" => {
            let st = get(&h.streams, index(s, "stream")?, "stream")?;
            keep(&mut h.events, st.record_event())
        }
        "wait" => {
            let st = get(&h.streams, index(s, "stream")?, "stream")?;
            let e = get(&h.events, index(s, "event")?, "event")?;
            ok(st.wait_event(e), |_| json!(null))
        }
        "event-sync" => ok(
            get(&h.events, index(s, "event")?, "event")?.synchronize(),
            |_| json!(null),
        ),
        "complete" => ok(
            get(&h.events, index(s, "event")?, "event")?.is_complete(),
            |c| json!(c),
        ),
        "elapsed" => {
            let a = get(&h.events, index(s, "start")?, "event")?;
            let b = get(&h.events, index(s, "end")?, "event")?;
            ok(a.elapsed_ms(b), |ms| json!(ms))
        }
        "tensor-into-buffer" => {
            let data: Vec<f32> = s["f32"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|v| v.as_f64().unwrap_or(0.0) as f32)
                .collect();
            let shape = dims(&s["shape"]);
            let t = Tensor::from_f32(&data, &shape).map_err(|e| e.to_string())?;
            let t = if s["keep"].as_bool() == Some(true) {
                // A second handle to the same storage forces a copy.
                let other = t.scale(1.0).map_err(|e| e.to_string())?;
                let shared = other.reshape(&shape).map_err(|e| e.to_string())?;
                h.kept.push(other);
                shared
            } else {
                t
            };
            keep(&mut h.buffers, cuda::tensor_into_buffer(t.0).map(Some))
        }
        "buffer-into-tensor" => {
            let i = buf(h, "buf")?;
            let b = h.buffers[i].take().unwrap();
            let shape = dims(&s["shape"]);
            match cuda::buffer_into_tensor(b, &shape, Dtype::F32) {
                Ok(t) => {
                    let t = Tensor(t);
                    let values = t.to_f32().map_err(|e| e.to_string())?;
                    let doubled = t
                        .scale(2.0)
                        .and_then(|d| d.to_f32())
                        .map_err(|e| e.to_string())?;
                    json!({"ok": {"values": values, "doubled": doubled}})
                }
                Err(e) => fail(e),
            }
        }
        other => return Err(format!("unknown op `{other}`")),
    })
}

/// `GET /bench/launch?reps=R&n=N&kernel=K`: µs per launch issued from the
/// guest of `vector_add` on N elements (4 arguments; one block of up to 256
/// threads per 256 elements) or, with `kernel=empty`, of the argument-less
/// `empty` on one thread: `enqueue_us` the mean time to queue one,
/// `total_us` including the final wait for all of them.
pub fn bench_launch(reps: u32, n: u32, empty: bool) -> Result<Value, cuda::Error> {
    let bytes = n.max(1) as u64 * 4;
    let (a, b, c) = (
        cuda::Buffer::alloc(bytes)?,
        cuda::Buffer::alloc(bytes)?,
        cuda::Buffer::alloc(bytes)?,
    );
    let m = cuda::Module::load("basics")?;
    use cuda::Argument as A;
    use cuda::ParamKind as P;
    let (k, args, threads) = if empty {
        (m.kernel("empty", &[])?, Vec::new(), 1)
    } else {
        (
            m.kernel("vector_add", &[P::Pointer, P::Pointer, P::Pointer, P::U32])?,
            vec![A::Buffer(&a), A::Buffer(&b), A::Buffer(&c), A::U32(n)],
            n,
        )
    };
    let config = cuda::LaunchConfig {
        grid: cuda::Dim3 {
            x: threads.div_ceil(256).max(1),
            y: 1,
            z: 1,
        },
        block: cuda::Dim3 {
            x: threads.clamp(1, 256),
            y: 1,
            z: 1,
        },
        shared_memory_bytes: 0,
    };
    for _ in 0..100 {
        k.launch(config, &args, None)?;
    }
    cuda::synchronize()?;
    let t0 = super::now_ns();
    for _ in 0..reps {
        k.launch(config, &args, None)?;
    }
    let t1 = super::now_ns();
    cuda::synchronize()?;
    let t2 = super::now_ns();
    let per = |ns: u64| ns as f64 / 1e3 / reps.max(1) as f64;
    Ok(json!({"reps": reps, "n": n, "enqueue_us": per(t1 - t0), "total_us": per(t2 - t0)}))
}
