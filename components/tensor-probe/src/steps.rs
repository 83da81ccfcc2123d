//! Decode-like steps, recorded or not (`wasi:tensor-fused/steps`): layers
//! at SmolLM2-135M's sizes (hidden 576, 9 query and 3 key/value heads of
//! 64, feed-forward 1536) over `rows` sequences, each layer's caches
//! written in place, one weight set shared by every layer.
//! - `GET /steps?rows=B&layers=L&steps=S&record=0|1&mid=0|1&keys=K`: runs S
//!   steps from fixed pseudo-random weights and inputs, recorded with key
//!   `B + step % K` when asked (`mid`: one element read back halfway
//!   through each step), and returns every step's output values: the same
//!   with and without recording, or recording is wrong.
//! - `GET /bench/steps?rows=B&layers=L&reps=R&cap=C`: µs per step (its
//!   output's first row read back, as a decode step reads its tokens),
//!   direct and recorded alternating; medians.

use crate::{median, now_ns};
use serde_json::{Value, json};
use tensorwasm_sdk::{Dtype, Error, RopeLayout, Step, Tensor, decode_attention_update};

const HIDDEN: u32 = 576;
const FFN: u32 = 1536;
const KV: u32 = 3;
const HEAD: u32 = 64;
/// Query, key and value heads stacked: (9 + 2 · 3) · 64.
const QKV: u32 = 960;

/// One layer's weights (every layer shares them).
struct Weights {
    norm: Tensor,
    qkv: Tensor,
    o: Tensor,
    gate: Tensor,
    up: Tensor,
    down: Tensor,
}

/// `n` values in [-scale, scale) from `seed` (a fixed linear congruence).
fn noise(n: u32, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

impl Weights {
    fn new(random: bool) -> Result<Self, Error> {
        let w = |rows: u32, cols: u32, seed: u64| match random {
            true => Tensor::from_f32(&noise(rows * cols, seed, 0.05), &[rows, cols]),
            false => Tensor::full(&[rows, cols], Dtype::F32, 0.01),
        };
        Ok(Self {
            norm: Tensor::full(&[HIDDEN], Dtype::F32, 1.0)?,
            qkv: w(QKV, HIDDEN, 1)?,
            o: w(HIDDEN, HIDDEN, 2)?,
            gate: w(FFN, HIDDEN, 3)?,
            up: w(FFN, HIDDEN, 4)?,
            down: w(HIDDEN, FFN, 5)?,
        })
    }
}

/// Each layer's caches, [rows, 3, cap, 64] zeros.
fn caches(rows: u32, layers: u32, cap: u32) -> Result<Vec<(Tensor, Tensor)>, Error> {
    (0..layers)
        .map(|_| {
            let z = || Tensor::full(&[rows, KV, cap, HEAD], Dtype::F32, 0.0);
            Ok((z()?, z()?))
        })
        .collect()
}

/// One step through every layer from `x` [rows, 576] at `positions`;
/// `mid`: one element of the stream read back halfway.
fn step(
    w: &Weights,
    layers: &mut Vec<(Tensor, Tensor)>,
    mut x: Tensor,
    positions: &[u32],
    mid: bool,
) -> Result<Tensor, Error> {
    let count = layers.len();
    let caches = std::mem::take(layers);
    let mut n = x.rms_norm(Some(&w.norm), 1e-5)?;
    for (i, (kc, vc)) in caches.into_iter().enumerate() {
        let qkv = n.matmul_t(&w.qkv)?;
        let (attended, k, v) = decode_attention_update(
            &qkv,
            kc,
            vc,
            positions,
            10000.0,
            RopeLayout::Interleaved,
            0.125,
        )?;
        layers.push((k, v));
        let (sum, normed) = x.add_rms_norm(&attended.matmul_t(&w.o)?, Some(&w.norm), 1e-5)?;
        let mlp = normed
            .matmul_t(&w.gate)?
            .swiglu(&normed.matmul_t(&w.up)?)?
            .matmul_t(&w.down)?;
        (x, n) = sum.add_rms_norm(&mlp, Some(&w.norm), 1e-5)?;
        if mid && i == count / 2 {
            x.narrow(0, 0, 1)?.narrow(1, 0, 1)?.to_bytes()?;
        }
    }
    Ok(n)
}

/// The input of step `s`: [rows, 576].
fn input(rows: u32, s: u32) -> Result<Tensor, Error> {
    Tensor::from_f32(
        &noise(rows * HIDDEN, 100 + u64::from(s), 1.0),
        &[rows, HIDDEN],
    )
}

/// Each row's position at step `s` (rows start apart).
fn positions(rows: u32, s: u32) -> Vec<u32> {
    (0..rows).map(|r| s + r % 5).collect()
}

/// `/steps`: every step's output values.
pub fn run(
    rows: u32,
    layers: u32,
    steps: u32,
    record: bool,
    mid: bool,
    keys: u32,
) -> Result<Value, Error> {
    let w = Weights::new(true)?;
    let mut kv = caches(rows, layers, 64)?;
    let mut outputs = Vec::new();
    for s in 0..steps {
        let x = input(rows, s)?;
        let recording = match record {
            true => Some(Step::record(u64::from(rows + s % keys.max(1)))?),
            false => None,
        };
        let out = step(&w, &mut kv, x, &positions(rows, s), mid)?;
        if let Some(r) = recording {
            r.run()?;
        }
        outputs.push(out.to_f32()?);
    }
    Ok(json!({"rows": rows, "layers": layers, "outputs": outputs}))
}

/// `/bench/steps`: µs per step, direct and recorded, and where it goes:
/// issuing the ops, `run-step`, the read-back's wait.
pub fn bench(rows: u32, layers: u32, reps: u32, cap: u32) -> Result<Value, Error> {
    let w = Weights::new(false)?;
    let mut kv = caches(rows, layers, cap)?;
    let x = Tensor::full(&[rows, HIDDEN], Dtype::F32, 0.5)?;
    let at = positions(rows, cap / 2);
    // [direct, recorded] × [step, issue, run, read]
    let mut times: [[Vec<f64>; 4]; 2] = Default::default();
    // Two of each first: the recorded step's graphs are built on its first run.
    for i in 0..reps.max(1) + 2 {
        for (mode, record) in [false, true].into_iter().enumerate() {
            let t0 = now_ns();
            let recording = match record {
                true => Some(Step::record(u64::from(rows))?),
                false => None,
            };
            let out = step(&w, &mut kv, x.reshape(&[rows, HIDDEN])?, &at, false)?;
            let t1 = now_ns();
            if let Some(r) = recording {
                r.run()?;
            }
            let t2 = now_ns();
            out.narrow(0, 0, 1)?.to_bytes()?;
            let t3 = now_ns();
            if i >= 2 {
                let us = |a: u64, b: u64| (b - a) as f64 / 1e3;
                let m = &mut times[mode];
                m[0].push(us(t0, t3));
                m[1].push(us(t0, t1));
                m[2].push(us(t1, t2));
                m[3].push(us(t2, t3));
            }
        }
    }
    let [direct, recorded] = times.map(|m| m.map(median));
    Ok(json!({
        "rows": rows, "layers": layers, "cap": cap, "reps": reps,
        "direct_us": direct[0], "recorded_us": recorded[0], "speedup": direct[0] / recorded[0],
        "direct": {"issue_us": direct[1], "read_us": direct[3]},
        "recorded": {"issue_us": recorded[1], "run_us": recorded[2], "read_us": recorded[3]},
    }))
}
