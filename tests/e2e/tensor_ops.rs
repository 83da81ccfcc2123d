//! Every `wasi:tensor` op, driven over HTTP through the `tensor-probe`
//! guest, against the float64 reference in `reference.rs`, on fresh random
//! inputs each run (the seed is printed; set `TW_SEED` to replay one).
//!
//! Tolerance: |got − want| ≤ tol · (|want| + 0.01 · max|want|), with tol
//! 1e-4 for f32, 2e-3 for f16 and 1e-2 for bf16 (one output rounding plus f32
//! arithmetic; inputs are rounded to the dtype before the reference sees them).

use crate::reference::{self as r, Nd};
use crate::support::*;
use serde_json::{Value, json};

/// xorshift64*: small, seedable, good enough for test data.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new() -> Self {
        let seed = std::env::var("TW_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("tensor op tests: TW_SEED={seed}");
        Rng(seed)
    }
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in [lo, hi).
    pub(crate) fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Rounds like the host does when it stores `dtype`.
fn quantize(v: f64, dtype: &str) -> f64 {
    let f = v as f32;
    match dtype {
        "f16" => half::f16::from_f32(f).to_f64(),
        "bf16" => half::bf16::from_f32(f).to_f64(),
        "i32" | "i64" | "u8" => v.trunc(),
        _ => f as f64,
    }
}

struct Ops {
    server: Server,
    rng: Rng,
}

impl Ops {
    fn start(name: &str) -> Self {
        Self::serving(name, &guest("tensor_probe"))
    }

    /// The probe at `component` (another build of it) served.
    fn serving(name: &str, component: &std::path::Path) -> Self {
        let dir = scratch(name);
        let server = Server::start(
            &[component.to_str().unwrap(), "--max-memory", "512MiB"],
            &dir.join("cache"),
        );
        Ops {
            server,
            rng: Rng::new(),
        }
    }

    /// A random tensor of `shape`, rounded to `dtype`, in [lo, hi).
    fn rand(&mut self, shape: &[usize], dtype: &str, lo: f64, hi: f64) -> (Nd, String) {
        let n = shape.iter().product();
        let data = (0..n)
            .map(|_| quantize(self.rng.uniform(lo, hi), dtype))
            .collect();
        (Nd::new(shape, data), dtype.to_string())
    }

    /// Runs `op`; Ok(result JSON) or Err(error kind).
    fn call(
        &self,
        op: &str,
        inputs: &[Option<&(Nd, String)>],
        args: Value,
    ) -> Result<Value, String> {
        let inputs: Vec<Value> = inputs
            .iter()
            .map(|t| match t {
                Some((nd, dtype)) => json!({"data": nd.data, "shape": nd.shape, "dtype": dtype}),
                None => Value::Null,
            })
            .collect();
        let body = json!({"op": op, "inputs": inputs, "args": args}).to_string();
        let resp = request(self.server.addr, "POST", "/op", &[], body.as_bytes());
        let v: Value = serde_json::from_slice(&resp.body)
            .unwrap_or_else(|_| panic!("{op}: not JSON ({}): {}", resp.status, resp.text()));
        match resp.status {
            200 => Ok(v),
            422 => Err(v["error"]["kind"].as_str().unwrap().to_string()),
            s => panic!("{op}: unexpected status {s}: {v}"),
        }
    }

    /// Runs `op` and checks its single result against `want`.
    fn check(
        &self,
        label: &str,
        op: &str,
        inputs: &[Option<&(Nd, String)>],
        args: Value,
        want: &Nd,
        dtype: &str,
    ) {
        let got = self
            .call(op, inputs, args)
            .unwrap_or_else(|e| panic!("{label}: {op} failed with {e}"));
        assert_close(label, &got, want, dtype);
    }
}

fn tolerance(dtype: &str) -> f64 {
    match dtype {
        "f16" => 2e-3,
        "bf16" => 1e-2,
        "f32" => 1e-4,
        _ => 0.0,
    }
}

fn to_nd(v: &Value) -> Nd {
    let shape: Vec<usize> = v["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect();
    let data: Vec<f64> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        // JSON has no NaN: a null element (NaN, e.g. an unwritten poisoned
        // GPU element) becomes NaN and fails the comparison with its label.
        .map(|x| x.as_f64().unwrap_or(f64::NAN))
        .collect();
    Nd::new(&shape, data)
}

fn assert_close(label: &str, got: &Value, want: &Nd, dtype: &str) {
    assert_eq!(got["dtype"], dtype, "{label}: dtype");
    let got = to_nd(got);
    assert_eq!(got.shape, want.shape, "{label}: shape");
    let tol = tolerance(dtype);
    let scale = want.data.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.data.iter().zip(&want.data).enumerate() {
        let bound = tol * (w.abs() + 0.01 * scale);
        assert!(
            (g - w).abs() <= bound,
            "{label}: element {i}: got {g}, want {w} (|diff| {} > {bound})",
            (g - w).abs()
        );
    }
}

/// An op, its inputs, its arguments and the error kind it must give.
type Case<'a> = (&'a str, Vec<Option<&'a (Nd, String)>>, Value, &'a str);

const FLOATS: [&str; 3] = ["f32", "f16", "bf16"];

#[test]
fn every_float_op_matches_an_f64_reference() {
    let mut t = Ops::start("tensor_float_ops");
    for dt in FLOATS {
        let l = |op: &str| format!("{op} [{dt}]");
        // matmul: broadcast batch, all transpose combinations.
        let (m, k, n) = (
            1 + t.rng.below(7) as usize,
            1 + t.rng.below(9) as usize,
            1 + t.rng.below(6) as usize,
        );
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let a = t.rand(
                &if ta {
                    vec![2, 1, k, m]
                } else {
                    vec![2, 1, m, k]
                },
                dt,
                -1.0,
                1.0,
            );
            let b = t.rand(
                &if tb { vec![3, n, k] } else { vec![3, k, n] },
                dt,
                -1.0,
                1.0,
            );
            let want = r::matmul(&a.0, &b.0, ta, tb);
            t.check(
                &l("matmul"),
                "matmul",
                &[Some(&a), Some(&b)],
                json!({"ta": ta, "tb": tb}),
                &want,
                dt,
            );
        }
        // A decode step's rows (up to 64, here and in a batch) by a weight
        // stored [n, k]: the GPU's own kernels (up to 8 rows `matvec_t`,
        // then the tiled `matmul_t`), with k a multiple of 4 and not, and
        // long (many slices, the last one short).
        for (rows, k, n) in [
            (vec![1], 64, 300),
            (vec![8], 132, 70),
            (vec![2, 3], 37, 129),
            (vec![5], 6, 1000),
            (vec![13], 132, 577),
            (vec![4, 10], 96, 200),
            (vec![64], 37, 65),
            (vec![40], 700, 300),
            (vec![2, 32], 1100, 577),
        ] {
            let a = t.rand(&[rows.clone(), vec![k]].concat(), dt, -1.0, 1.0);
            let b = t.rand(&[n, k], dt, -1.0, 1.0);
            t.check(
                &l(&format!("matmul skinny {rows:?}x{k} by [{n}, {k}]^T")),
                "matmul",
                &[Some(&a), Some(&b)],
                json!({"tb": true}),
                &r::matmul(&a.0, &b.0, false, true),
                dt,
            );
        }
        // Elementwise with broadcasting, rank 0 and zero-size.
        let a = t.rand(&[4, 1, 5], dt, -2.0, 2.0);
        let b = t.rand(&[3, 1], dt, 0.5, 2.0);
        for (op, f) in [
            ("add", (|x, y| x + y) as fn(f64, f64) -> f64),
            ("sub", |x, y| x - y),
            ("mul", |x, y| x * y),
            ("div", |x, y| x / y),
        ] {
            t.check(
                &l(op),
                op,
                &[Some(&a), Some(&b)],
                json!({}),
                &r::binary(&a.0, &b.0, f),
                dt,
            );
        }
        // Nine axes: past what the GPU kernels walk, the op layer computes
        // on the CPU over a copy; the result is the same.
        let a9 = t.rand(&[2, 1, 2, 1, 2, 1, 2, 1, 3], dt, -2.0, 2.0);
        let b9 = t.rand(&[1, 2, 1, 2, 1, 2, 1, 2, 1], dt, 0.5, 2.0);
        t.check(
            &l("mul rank9"),
            "mul",
            &[Some(&a9), Some(&b9)],
            json!({}),
            &r::binary(&a9.0, &b9.0, |x, y| x * y),
            dt,
        );
        let s = t.rand(&[], dt, -2.0, 2.0);
        let m2 = t.rand(&[2, 3], dt, -2.0, 2.0);
        t.check(
            &l("add rank0"),
            "add",
            &[Some(&s), Some(&m2)],
            json!({}),
            &r::binary(&s.0, &m2.0, |x, y| x + y),
            dt,
        );
        let z = t.rand(&[0, 3], dt, -1.0, 1.0);
        let row = t.rand(&[3], dt, -1.0, 1.0);
        t.check(
            &l("add empty"),
            "add",
            &[Some(&z), Some(&row)],
            json!({}),
            &r::binary(&z.0, &row.0, |x, y| x + y),
            dt,
        );
        t.check(
            &l("scale"),
            "scale",
            &[Some(&a)],
            json!({"factor": 0.37}),
            &r::unary(&a.0, |x| x * 0.37f32 as f64),
            dt,
        );
        // Unary activations.
        let x = t.rand(&[3, 7], dt, -4.0, 4.0);
        for (op, f) in [
            (
                "gelu",
                (|v: f64| 0.5 * v * (1.0 + r::erf(v / std::f64::consts::SQRT_2))) as fn(f64) -> f64,
            ),
            ("gelu-tanh", |v| {
                0.5 * v
                    * (1.0
                        + ((2.0 / std::f64::consts::PI).sqrt() * (v + 0.044715 * v.powi(3))).tanh())
            }),
            ("silu", |v| v / (1.0 + (-v).exp())),
            ("relu", |v| v.max(0.0)),
            ("tanh", f64::tanh),
            ("exp", f64::exp),
        ] {
            t.check(&l(op), op, &[Some(&x)], json!({}), &r::unary(&x.0, f), dt);
        }
        t.check(
            &l("exp rank0"),
            "exp",
            &[Some(&s)],
            json!({}),
            &r::unary(&s.0, f64::exp),
            dt,
        );
        // Softmax: last axis, a middle axis, causal.
        let sm = t.rand(&[2, 3, 5], dt, -3.0, 3.0);
        t.check(
            &l("softmax"),
            "softmax",
            &[Some(&sm)],
            json!({"axis": -1}),
            &r::softmax(&sm.0, 2, false),
            dt,
        );
        t.check(
            &l("softmax axis 1"),
            "softmax",
            &[Some(&sm)],
            json!({"axis": 1}),
            &r::softmax(&sm.0, 1, false),
            dt,
        );
        t.check(
            &l("causal softmax"),
            "softmax",
            &[Some(&sm)],
            json!({"axis": -1, "causal": true}),
            &r::softmax(&sm.0, 2, true),
            dt,
        );
        // Norms.
        let nx = t.rand(&[4, 16], dt, -3.0, 3.0);
        let w = t.rand(&[16], dt, 0.5, 1.5);
        let bias = t.rand(&[16], dt, -0.5, 0.5);
        t.check(
            &l("layer-norm"),
            "layer-norm",
            &[Some(&nx), Some(&w), Some(&bias)],
            json!({"eps": 1e-5}),
            &r::norm(&nx.0, Some(&w.0), Some(&bias.0), 1e-5f32 as f64, false),
            dt,
        );
        t.check(
            &l("layer-norm bare"),
            "layer-norm",
            &[Some(&nx), None, None],
            json!({"eps": 1e-5}),
            &r::norm(&nx.0, None, None, 1e-5f32 as f64, false),
            dt,
        );
        t.check(
            &l("rms-norm"),
            "rms-norm",
            &[Some(&nx), Some(&w)],
            json!({"eps": 1e-6}),
            &r::norm(&nx.0, Some(&w.0), None, 1e-6f32 as f64, true),
            dt,
        );
        // Weights kept in f32 beside half-precision activations (common in models).
        let w32 = t.rand(&[16], "f32", 0.5, 1.5);
        let b32 = t.rand(&[16], "f32", -0.5, 0.5);
        t.check(
            &l("layer-norm f32 weights"),
            "layer-norm",
            &[Some(&nx), Some(&w32), Some(&b32)],
            json!({"eps": 1e-5}),
            &r::norm(&nx.0, Some(&w32.0), Some(&b32.0), 1e-5f32 as f64, false),
            dt,
        );
        // Attention: grouped heads, mask, causal.
        let q = t.rand(&[2, 4, 3, 8], dt, -1.0, 1.0);
        let k = t.rand(&[2, 2, 5, 8], dt, -1.0, 1.0);
        let v = t.rand(&[2, 2, 5, 6], dt, -1.0, 1.0);
        let mask = t.rand(&[1, 1, 3, 5], dt, -2.0, 0.0);
        let sc = (1.0f32 / 8f32.sqrt()) as f64;
        for causal in [false, true] {
            t.check(
                &l("attention"),
                "attention",
                &[Some(&q), Some(&k), Some(&v), Some(&mask)],
                json!({"scale": sc, "causal": causal}),
                &r::attention(&q.0, &k.0, &v.0, Some(&mask.0), sc, causal),
                dt,
            );
        }
        t.check(
            &l("attention bare"),
            "attention",
            &[Some(&q), Some(&k), Some(&v)],
            json!({"scale": sc}),
            &r::attention(&q.0, &k.0, &v.0, None, sc, false),
            dt,
        );
        // Embedding with i64 and i32 ids.
        let table = t.rand(&[10, 6], dt, -1.0, 1.0);
        for idt in ["i64", "i32"] {
            let ids = t.rand(&[2, 3], idt, 0.0, 10.0);
            t.check(
                &l("embedding"),
                "embedding",
                &[Some(&table), Some(&ids)],
                json!({}),
                &r::embedding(&table.0, &ids.0),
                dt,
            );
        }
        // Data movement.
        let c = t.rand(&[2, 3, 4], dt, -1.0, 1.0);
        t.check(
            &l("reshape"),
            "reshape",
            &[Some(&c)],
            json!({"shape": [4, 6]}),
            &Nd::new(&[4, 6], c.0.data.clone()),
            dt,
        );
        t.check(
            &l("permute"),
            "permute",
            &[Some(&c)],
            json!({"dims": [2, 0, 1]}),
            &r::permute(&c.0, &[2, 0, 1]),
            dt,
        );
        t.check(
            &l("transpose"),
            "transpose",
            &[Some(&c)],
            json!({"axis0": -1, "axis1": 0}),
            &r::permute(&c.0, &[2, 1, 0]),
            dt,
        );
        t.check(
            &l("narrow"),
            "narrow",
            &[Some(&c)],
            json!({"axis": 1, "start": 1, "length": 2}),
            &r::narrow(&c.0, 1, 1, 2),
            dt,
        );
        let c2 = t.rand(&[2, 1, 4], dt, -1.0, 1.0);
        let c3 = t.rand(&[2, 5, 4], dt, -1.0, 1.0);
        t.check(
            &l("concat"),
            "concat",
            &[Some(&c), Some(&c2), Some(&c3)],
            json!({"axis": 1}),
            &r::concat(&[&c.0, &c2.0, &c3.0], 1),
            dt,
        );
        // Rope, both layouts, with an offset.
        let rx = t.rand(&[2, 3, 5, 8], dt, -1.0, 1.0);
        for (layout, inter) in [("interleaved", true), ("half-split", false)] {
            t.check(
                &l("rope"),
                "rope",
                &[Some(&rx)],
                json!({"offset": 7, "theta": 10000.0, "layout": layout}),
                &r::rope(&rx.0, 7, 10000.0, inter),
                dt,
            );
        }
        // wasi:tensor-fused: decode-attention (grouped heads, both layouts,
        // rows at different positions) and swiglu.
        let (dq, dk, dv) = (
            t.rand(&[3, 4 * 8], dt, -1.0, 1.0),
            t.rand(&[3, 2 * 8], dt, -1.0, 1.0),
            t.rand(&[3, 2 * 8], dt, -1.0, 1.0),
        );
        let (dkc, dvc) = (
            t.rand(&[3, 2, 6, 8], dt, -1.0, 1.0),
            t.rand(&[3, 2, 6, 8], dt, -1.0, 1.0),
        );
        for (layout, inter) in [("interleaved", true), ("half-split", false)] {
            let got = t
                .call(
                    "decode-attention",
                    &[Some(&dq), Some(&dk), Some(&dv), Some(&dkc), Some(&dvc)],
                    json!({"positions": [0, 5, 2], "theta": 10000.0, "layout": layout, "scale": sc}),
                )
                .unwrap();
            let (o, kc, vc) = r::decode_attention(
                &dq.0,
                &dk.0,
                &dv.0,
                &dkc.0,
                &dvc.0,
                &[0, 5, 2],
                10000.0,
                inter,
                sc,
                |x| quantize(x, dt),
            );
            assert_close(&l("decode-attention"), &got["out"], &o, dt);
            assert_close(&l("decode-attention keys"), &got["keys"], &kc, dt);
            assert_close(&l("decode-attention values"), &got["values"], &vc, dt);
        }
        // decode-attention-qkv (0.1.1): the same operands packed side by
        // side give the same results.
        let packed = t.rand(&[3, 8 * 8], dt, -1.0, 1.0);
        let cols = |from: usize, width: usize| {
            let data = (0..3)
                .flat_map(|r| packed.0.data[r * 64 + from..r * 64 + from + width].to_vec())
                .collect();
            Nd::new(&[3, width], data)
        };
        let (pq, pk, pv) = (cols(0, 32), cols(32, 16), cols(48, 16));
        for (layout, inter) in [("interleaved", true), ("half-split", false)] {
            let got = t
                .call(
                    "decode-attention-qkv",
                    &[Some(&packed), Some(&dkc), Some(&dvc)],
                    json!({"positions": [3, 0, 5], "theta": 10000.0, "layout": layout, "scale": sc}),
                )
                .unwrap();
            let (o, kc, vc) = r::decode_attention(
                &pq,
                &pk,
                &pv,
                &dkc.0,
                &dvc.0,
                &[3, 0, 5],
                10000.0,
                inter,
                sc,
                |x| quantize(x, dt),
            );
            assert_close(&l("decode-attention-qkv"), &got["out"], &o, dt);
            assert_close(&l("decode-attention-qkv keys"), &got["keys"], &kc, dt);
            assert_close(&l("decode-attention-qkv values"), &got["values"], &vc, dt);
        }
        // decode-attention-update (0.1.2): the caches given over give the
        // same results, written in place where the backend can (the GPU) or
        // copied; with a view of the key cache kept alive the host must
        // copy, and the view still reads the caches as they were.
        for share in [false, true] {
            let got = t
                .call(
                    "decode-attention-update",
                    &[Some(&packed), Some(&dkc), Some(&dvc)],
                    json!({"positions": [5, 2, 0], "theta": 10000.0, "layout": "interleaved",
                           "scale": sc, "share": share}),
                )
                .unwrap();
            let (o, kc, vc) = r::decode_attention(
                &pq,
                &pk,
                &pv,
                &dkc.0,
                &dvc.0,
                &[5, 2, 0],
                10000.0,
                true,
                sc,
                |x| quantize(x, dt),
            );
            let l = |what: &str| l(&format!("decode-attention-update (share {share}) {what}"));
            assert_close(&l("out"), &got["out"], &o, dt);
            assert_close(&l("keys"), &got["keys"], &kc, dt);
            assert_close(&l("values"), &got["values"], &vc, dt);
            match share {
                true => assert_close(&l("kept view"), &got["kept"], &dkc.0, dt),
                false => assert!(got.get("kept").is_none(), "{}", l("no view asked for")),
            }
        }
        // add-rms-norm (0.1.1): the sum as `add` stores it, then its norm.
        let (ax, ay, aw) = (
            t.rand(&[3, 40], dt, -2.0, 2.0),
            t.rand(&[3, 40], dt, -2.0, 2.0),
            t.rand(&[40], "f32", 0.5, 1.5),
        );
        let got = t
            .call(
                "add-rms-norm",
                &[Some(&ax), Some(&ay), Some(&aw)],
                json!({"eps": 1e-5}),
            )
            .unwrap();
        let sum = r::binary(&ax.0, &ay.0, |x, y| x + y);
        let stored = Nd::new(
            &sum.shape,
            sum.data.iter().map(|&v| quantize(v, dt)).collect(),
        );
        assert_close(&l("add-rms-norm sum"), &got["sum"], &sum, dt);
        let normed = r::norm(&stored, Some(&aw.0), None, 1e-5, true);
        assert_close(&l("add-rms-norm normed"), &got["normed"], &normed, dt);
        let (g, u) = (
            t.rand(&[3, 7], dt, -4.0, 4.0),
            t.rand(&[3, 7], dt, -2.0, 2.0),
        );
        t.check(
            &l("swiglu"),
            "swiglu",
            &[Some(&g), Some(&u)],
            json!({}),
            &r::binary(&g.0, &u.0, |x, y| x / (1.0 + (-x).exp()) * y),
            dt,
        );
        // Reductions.
        let red = t.rand(&[3, 5, 4], dt, -2.0, 2.0);
        let am = t.call("argmax", &[Some(&red)], json!({"axis": 1})).unwrap();
        assert_eq!(to_nd(&am), r::argmax(&red.0, 1), "argmax [{dt}]");
        let tk = t.call("top-k", &[Some(&red)], json!({"k": 3})).unwrap();
        let (tv, ti) = r::top_k(&red.0, 3);
        assert_close(&l("top-k values"), &tk["values"], &tv, dt);
        assert_eq!(to_nd(&tk["indices"]), ti, "top-k indices [{dt}]");
        let pm = t.rand(&[3, 5], "f32", 0.0, 2.0);
        let pm = (
            Nd::new(&pm.0.shape, pm.0.data.iter().map(|v| v.floor()).collect()),
            pm.1,
        );
        t.check(
            &l("masked mean"),
            "mean",
            &[Some(&red), Some(&pm)],
            json!({"axis": 1}),
            &r::mean(&red.0, 1, Some(&pm.0)),
            dt,
        );
        t.check(
            &l("mean"),
            "mean",
            &[Some(&red)],
            json!({"axis": 0}),
            &r::mean(&red.0, 0, None),
            dt,
        );
        t.check(
            &l("l2-normalize"),
            "l2-normalize",
            &[Some(&red)],
            json!({"axis": -1, "eps": 1e-12}),
            &r::l2_normalize(&red.0, 2, 1e-12),
            dt,
        );
        // Cast to every float dtype.
        for to in FLOATS {
            let want = Nd::new(
                &red.0.shape,
                red.0.data.iter().map(|&v| quantize(v, to)).collect(),
            );
            t.check(
                &format!("cast {dt}→{to}"),
                "cast",
                &[Some(&red)],
                json!({"dtype": to}),
                &want,
                to,
            );
        }
    }
}

#[test]
fn integer_ops_and_large_and_edge_shapes() {
    let mut t = Ops::start("tensor_int_ops");
    for dt in ["i32", "i64", "u8"] {
        let (lo, hi) = if dt == "u8" {
            (0.0, 15.0)
        } else {
            (-50.0, 50.0)
        };
        let a = t.rand(&[2, 1, 4], dt, lo, hi);
        let b = t.rand(&[3, 4], dt, lo, hi);
        for (op, f) in [
            ("add", (|x, y| x + y) as fn(f64, f64) -> f64),
            ("sub", |x, y| x - y),
            ("mul", |x, y| x * y),
        ] {
            if dt == "u8" && op == "sub" {
                continue; // wraps; checked below
            }
            let got = t.call(op, &[Some(&a), Some(&b)], json!({})).unwrap();
            let want = r::binary(&a.0, &b.0, f);
            let want = if dt == "u8" {
                Nd::new(
                    &want.shape,
                    want.data.iter().map(|v| (*v as i64 as u8) as f64).collect(),
                )
            } else {
                want
            };
            assert_eq!(to_nd(&got), want, "{op} [{dt}]");
            assert_eq!(got["dtype"], dt);
        }
        let c = t.rand(&[2, 3, 4], dt, lo, hi);
        let got = t
            .call("permute", &[Some(&c)], json!({"dims": [1, 2, 0]}))
            .unwrap();
        assert_eq!(to_nd(&got), r::permute(&c.0, &[1, 2, 0]), "permute [{dt}]");
        let got = t
            .call("concat", &[Some(&c), Some(&c)], json!({"axis": -1}))
            .unwrap();
        assert_eq!(to_nd(&got), r::concat(&[&c.0, &c.0], 2), "concat [{dt}]");
        let got = t.call("argmax", &[Some(&c)], json!({"axis": -1})).unwrap();
        assert_eq!(to_nd(&got), r::argmax(&c.0, 2), "argmax [{dt}]");
    }
    // Integer division truncates; by zero is an error.
    let a = (Nd::new(&[4], vec![7.0, -7.0, 9.0, 0.0]), "i64".to_string());
    let b = (Nd::new(&[4], vec![2.0, 2.0, -4.0, 5.0]), "i64".to_string());
    assert_eq!(
        to_nd(&t.call("div", &[Some(&a), Some(&b)], json!({})).unwrap()).data,
        vec![3.0, -3.0, -2.0, 0.0]
    );
    let zero = (Nd::new(&[4], vec![1.0, 0.0, 1.0, 1.0]), "i64".to_string());
    assert_eq!(
        t.call("div", &[Some(&a), Some(&zero)], json!({}))
            .unwrap_err(),
        "invalid-argument"
    );
    // u8 wraps; casts truncate, saturate, keep low bits.
    let u = (Nd::new(&[2], vec![1.0, 200.0]), "u8".to_string());
    let v = (Nd::new(&[2], vec![2.0, 100.0]), "u8".to_string());
    assert_eq!(
        to_nd(&t.call("sub", &[Some(&u), Some(&v)], json!({})).unwrap()).data,
        vec![255.0, 100.0]
    );
    let f = (
        Nd::new(&[4], vec![-2.75, 3.5, 1e10, -1e10]),
        "f32".to_string(),
    );
    assert_eq!(
        to_nd(
            &t.call("cast", &[Some(&f)], json!({"dtype": "i32"}))
                .unwrap()
        )
        .data,
        vec![-2.0, 3.0, i32::MAX as f64, i32::MIN as f64]
    );
    let big = (Nd::new(&[2], vec![257.0, -1.0]), "i64".to_string());
    assert_eq!(
        to_nd(
            &t.call("cast", &[Some(&big)], json!({"dtype": "u8"}))
                .unwrap()
        )
        .data,
        vec![1.0, 255.0]
    );
    // Zero-size and degenerate products.
    let e1 = t.rand(&[0, 5], "f32", -1.0, 1.0);
    let e2 = t.rand(&[5, 3], "f32", -1.0, 1.0);
    t.check(
        "matmul m=0",
        "matmul",
        &[Some(&e1), Some(&e2)],
        json!({}),
        &Nd::new(&[0, 3], vec![]),
        "f32",
    );
    let k0a = t.rand(&[2, 0], "f32", -1.0, 1.0);
    let k0b = t.rand(&[0, 3], "f32", -1.0, 1.0);
    t.check(
        "matmul k=0",
        "matmul",
        &[Some(&k0a), Some(&k0b)],
        json!({}),
        &Nd::new(&[2, 3], vec![0.0; 6]),
        "f32",
    );
    t.check(
        "softmax empty",
        "softmax",
        &[Some(&e1)],
        json!({"axis": 0}),
        &Nd::new(&[0, 5], vec![]),
        "f32",
    );
    // Large: a multi-threaded product and a long broadcast.
    let la = t.rand(&[96, 256], "f32", -1.0, 1.0);
    let lb = t.rand(&[256, 160], "f32", -1.0, 1.0);
    t.check(
        "matmul large",
        "matmul",
        &[Some(&la), Some(&lb)],
        json!({}),
        &r::matmul(&la.0, &lb.0, false, false),
        "f32",
    );
    // Ragged multi-threaded products (partial register tiles, several
    // depth blocks) in every transpose layout.
    let (m, k, n) = (131, 300, 97);
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        let a = t.rand(&if ta { [k, m] } else { [m, k] }, "f32", -1.0, 1.0);
        let b = t.rand(&if tb { [n, k] } else { [k, n] }, "f32", -1.0, 1.0);
        t.check(
            &format!("matmul large ragged ta={ta} tb={tb}"),
            "matmul",
            &[Some(&a), Some(&b)],
            json!({"ta": ta, "tb": tb}),
            &r::matmul(&a.0, &b.0, ta, tb),
            "f32",
        );
    }
    let lx = t.rand(&[300, 1000], "f32", -1.0, 1.0);
    let lr = t.rand(&[1000], "f32", -1.0, 1.0);
    t.check(
        "add large",
        "add",
        &[Some(&lx), Some(&lr)],
        json!({}),
        &r::binary(&lx.0, &lr.0, |x, y| x + y),
        "f32",
    );
    t.check(
        "gelu large",
        "gelu",
        &[Some(&lx)],
        json!({}),
        &r::unary(&lx.0, |v| {
            0.5 * v * (1.0 + r::erf(v / std::f64::consts::SQRT_2))
        }),
        "f32",
    );
    t.check(
        "softmax large",
        "softmax",
        &[Some(&lx)],
        json!({"axis": -1}),
        &r::softmax(&lx.0, 1, false),
        "f32",
    );
    long_axis_reductions(&mut t);
}

/// Reductions along long axes, as a sampler's argmax over a vocabulary: on
/// the GPU, rows that are contiguous or few take a block per row, many
/// strided positions a thread each (cuda/launch.rs `spread`); both here.
fn long_axis_reductions(t: &mut Ops) {
    for dt in ["f32", "bf16", "i32"] {
        let mut x = t.rand(&[3, 3000], dt, -50.0, 50.0);
        // The first of equal maxima wins, in different threads' strides.
        for (at, v) in [(100, 90.0), (2500, 90.0), (2 * 3000 - 1, 90.0)] {
            x.0.data[at] = v;
        }
        for axis in [1, 0] {
            let got = t
                .call("argmax", &[Some(&x)], json!({"axis": axis}))
                .unwrap();
            assert_eq!(
                to_nd(&got),
                r::argmax(&x.0, axis),
                "argmax axis {axis} [{dt}]"
            );
        }
    }
    let x = t.rand(&[3, 3000], "f32", -2.0, 2.0);
    t.check(
        "l2-normalize long rows",
        "l2-normalize",
        &[Some(&x)],
        json!({"axis": -1, "eps": 1e-12}),
        &r::l2_normalize(&x.0, 1, 1e-12),
        "f32",
    );
    let x = t.rand(&[4, 3000], "f32", -2.0, 2.0);
    t.check(
        "softmax axis 0, many positions",
        "softmax",
        &[Some(&x)],
        json!({"axis": 0}),
        &r::softmax(&x.0, 0, false),
        "f32",
    );
    let x = t.rand(&[2, 500, 3], "f16", -2.0, 2.0);
    for (label, op, args, want) in [
        (
            "softmax axis 1, few strided positions [f16]",
            "softmax",
            json!({"axis": 1}),
            r::softmax(&x.0, 1, false),
        ),
        (
            "l2-normalize axis 1, few strided positions [f16]",
            "l2-normalize",
            json!({"axis": 1, "eps": 1e-12}),
            r::l2_normalize(&x.0, 1, 1e-12),
        ),
    ] {
        t.check(label, op, &[Some(&x)], args, &want, "f16");
    }
}

#[test]
fn bad_shapes_and_dtypes_get_the_right_error_variant() {
    let mut t = Ops::start("tensor_bad_args");
    let m23 = t.rand(&[2, 3], "f32", -1.0, 1.0);
    let m45 = t.rand(&[4, 5], "f32", -1.0, 1.0);
    let m22 = t.rand(&[2, 2], "f32", -1.0, 1.0);
    let cache = t.rand(&[2, 1, 4, 2], "f32", -1.0, 1.0);
    let h32 = t.rand(&[3, 2], "f16", -1.0, 1.0);
    let i23 = t.rand(&[2, 3], "i32", 0.0, 5.0);
    let v4 = t.rand(&[4], "f32", -1.0, 1.0);
    let v3 = t.rand(&[3], "f32", -1.0, 1.0);
    let odd = t.rand(&[2, 3], "f32", -1.0, 1.0);
    let q = t.rand(&[1, 3, 2, 4], "f32", -1.0, 1.0);
    let k = t.rand(&[1, 2, 2, 4], "f32", -1.0, 1.0);
    let ids_f = t.rand(&[2], "f32", 0.0, 1.0);
    let ids_big = (Nd::new(&[2], vec![1.0, 99.0]), "i64".to_string());
    // Empty operands (k = 0) whose broadcast batch makes a 2^52-element result.
    let wide_a = t.rand(&[1 << 16, 1, 1 << 10, 0], "f32", -1.0, 1.0);
    let wide_b = t.rand(&[1, 1 << 16, 0, 1 << 10], "f32", -1.0, 1.0);
    // Tiny inputs whose 20000×20000 score matrix would need 3.2 GB.
    let long = t.rand(&[1, 1, 20000, 1], "f32", -1.0, 1.0);
    let cases: Vec<Case> = vec![
        (
            "matmul",
            vec![Some(&m23), Some(&m45)],
            json!({}),
            "invalid-shape",
        ),
        (
            "matmul",
            vec![Some(&m23), Some(&h32)],
            json!({}),
            "dtype-mismatch",
        ),
        (
            "matmul",
            vec![Some(&v3), Some(&v3)],
            json!({}),
            "invalid-shape",
        ),
        (
            "matmul",
            vec![Some(&i23), Some(&i23)],
            json!({"tb": true}),
            "dtype-mismatch",
        ),
        (
            "add",
            vec![Some(&m23), Some(&v4)],
            json!({}),
            "invalid-shape",
        ),
        (
            "add",
            vec![Some(&m23), Some(&i23)],
            json!({}),
            "dtype-mismatch",
        ),
        ("gelu", vec![Some(&i23)], json!({}), "dtype-mismatch"),
        (
            "softmax",
            vec![Some(&m23)],
            json!({"axis": 5}),
            "invalid-argument",
        ),
        (
            "softmax",
            vec![Some(&h32)],
            json!({"axis": -1, "causal": true}),
            "invalid-shape",
        ),
        (
            "softmax",
            vec![Some(&m23)],
            json!({"axis": 0, "causal": true}),
            "invalid-shape",
        ),
        (
            "narrow",
            vec![Some(&m23)],
            json!({"axis": 1, "start": 2, "length": 2}),
            "invalid-argument",
        ),
        (
            "reshape",
            vec![Some(&m23)],
            json!({"shape": [4, 2]}),
            "invalid-shape",
        ),
        (
            "permute",
            vec![Some(&m23)],
            json!({"dims": [0, 0]}),
            "invalid-argument",
        ),
        (
            "concat",
            vec![Some(&m23), Some(&m45)],
            json!({"axis": 0}),
            "invalid-shape",
        ),
        (
            "embedding",
            vec![Some(&m45), Some(&ids_f)],
            json!({}),
            "dtype-mismatch",
        ),
        (
            "embedding",
            vec![Some(&m45), Some(&ids_big)],
            json!({}),
            "invalid-argument",
        ),
        (
            "top-k",
            vec![Some(&m23)],
            json!({"k": 4}),
            "invalid-argument",
        ),
        (
            "attention",
            vec![Some(&q), Some(&k), Some(&k)],
            json!({"scale": 1.0}),
            "invalid-shape",
        ),
        ("rope", vec![Some(&odd)], json!({}), "invalid-shape"),
        (
            "decode-attention",
            vec![
                Some(&m22),
                Some(&m22),
                Some(&m22),
                Some(&cache),
                Some(&cache),
            ],
            json!({"positions": [0, 4]}),
            "invalid-argument",
        ),
        (
            "decode-attention",
            vec![Some(&m23), Some(&m23), Some(&m23), Some(&m45), Some(&m45)],
            json!({"positions": [0, 1]}),
            "invalid-shape",
        ),
        (
            "swiglu",
            vec![Some(&m23), Some(&v4)],
            json!({}),
            "invalid-shape",
        ),
        (
            "decode-attention-qkv",
            vec![Some(&m23), Some(&m45), Some(&m45)],
            json!({"positions": [0, 1]}),
            "invalid-shape",
        ),
        (
            "decode-attention-update",
            vec![Some(&m23), Some(&m45), Some(&m45)],
            json!({"positions": [0, 1]}),
            "invalid-shape",
        ),
        (
            "add-rms-norm",
            vec![Some(&m23), Some(&v4)],
            json!({}),
            "invalid-shape",
        ),
        (
            "layer-norm",
            vec![Some(&m23), Some(&v4)],
            json!({}),
            "invalid-shape",
        ),
        (
            "mean",
            vec![Some(&m23), Some(&v4)],
            json!({"axis": 0}),
            "invalid-shape",
        ),
        (
            "argmax",
            vec![Some(&m23)],
            json!({"axis": -3}),
            "invalid-argument",
        ),
        (
            "matmul",
            vec![Some(&wide_a), Some(&wide_b)],
            json!({}),
            "invalid-shape",
        ),
        (
            "attention",
            vec![Some(&long), Some(&long), Some(&long)],
            json!({"scale": 1.0}),
            "quota-exceeded",
        ),
    ];
    for (op, inputs, args, want) in cases {
        let got = t.call(op, &inputs, args.clone());
        assert_eq!(
            got.as_ref().err().map(String::as_str),
            Some(want),
            "{op} {args}: {got:?}"
        );
    }
    // Data that does not match its shape, and an absurd shape.
    let resp = request(
        t.server.addr,
        "POST",
        "/op",
        &[],
        br#"{"op":"identity","inputs":[{"data":[1,2,3],"shape":[2,2]}]}"#,
    );
    assert_eq!(resp.status, 422, "{}", resp.text());
    assert!(resp.text().contains("invalid-argument"), "{}", resp.text());
    let resp = request(
        t.server.addr,
        "POST",
        "/op",
        &[],
        br#"{"op":"identity","inputs":[{"data":[],"shape":[1048576,2097152]}]}"#,
    );
    assert!(resp.text().contains("invalid-shape"), "{}", resp.text());
    // The server is fine afterwards.
    let sum = r::binary(&m23.0, &m23.0, |x, y| x + y);
    t.check(
        "add after errors",
        "add",
        &[Some(&m23), Some(&m23)],
        json!({}),
        &sum,
        "f32",
    );
}

/// Guests built against `wasi:tensor-fused@0.1.0` and `@0.1.1` keep working
/// on this host, which implements 0.1.2 (each version the one before plus
/// functions; the linker matches semver-compatible versions): the probe
/// with its import relabelled `@0.1.0`, then `@0.1.1`, is served and its
/// fused ops answer as the reference says.
/// Recorded steps (`wasi:tensor-fused/steps`) give exactly what the same
/// ops give unrecorded. On a GPU they run as CUDA graphs: the first step of
/// a key builds one, the next ones bring it up to date with new inputs,
/// positions and caches (written in place), also with a read-back in the
/// middle of each step and with keys that alternate; on the CPU the calls
/// do nothing and the outputs still match. Sizes cover the product kernels
/// (1, 9 and 33 rows: ours; 65: cuBLAS, captured too).
#[test]
fn recorded_steps_give_what_direct_ones_give() {
    let t = Ops::start("recorded-steps");
    let gpu = t.server.tensor_device().starts_with("cuda");
    let outputs = |q: &str| -> Value {
        let resp = t.server.get(&format!("/steps?layers=3&steps=4&{q}"));
        assert_eq!(resp.status, 200, "/steps?{q}: {}", resp.text());
        serde_json::from_slice::<Value>(&resp.body).unwrap()["outputs"].clone()
    };
    for rows in [1, 9, 33, 65] {
        let direct = outputs(&format!("rows={rows}"));
        let steps = direct.as_array().unwrap();
        assert_eq!(steps.len(), 4);
        assert_eq!(steps[0].as_array().unwrap().len(), rows * 576);
        assert!(
            steps
                .iter()
                .flat_map(|s| s.as_array().unwrap())
                .all(|v| v.as_f64().is_some()),
            "finite outputs"
        );
        assert_ne!(steps[0], steps[1], "each step has its own input");
        for q in ["record=1", "record=1&mid=1", "record=1&keys=2"] {
            let got = outputs(&format!("rows={rows}&{q}"));
            assert_eq!(
                got, direct,
                "{rows} rows, {q}: not what the direct steps give"
            );
        }
    }
    let m = t.server.metrics();
    let (launched, updated) = (
        metric(&m, "tensorwasm_tensor_recorded_steps_total", &[]),
        metric(&m, "tensorwasm_tensor_recorded_updates_total", &[]),
    );
    if gpu {
        // 4 sizes × (4 + 8 + 4) parts at least; each key's first part builds.
        assert!(launched >= 48.0, "{launched} recorded steps launched");
        assert!(updated >= 30.0, "{updated} of them from a kept graph");
    } else {
        assert_eq!(
            (launched, updated),
            (0.0, 0.0),
            "nothing recorded on the CPU"
        );
    }
}

#[test]
fn guests_importing_older_tensor_fused_keep_working() {
    for old in ["0.1.0", "0.1.1", "0.1.2"] {
        older_tensor_fused(old);
    }
}

fn older_tensor_fused(version: &str) {
    let new = b"wasi:tensor-fused/ops@0.1.3".as_slice();
    let old = format!("wasi:tensor-fused/ops@{version}");
    let old = old.as_bytes();
    let probe = std::fs::read(guest("tensor_probe")).unwrap();
    let mut relabelled = Vec::with_capacity(probe.len());
    let (mut rest, mut count) = (probe.as_slice(), 0);
    while let Some(at) = rest.windows(new.len()).position(|w| w == new) {
        relabelled.extend_from_slice(&rest[..at]);
        relabelled.extend_from_slice(old);
        rest = &rest[at + new.len()..];
        count += 1;
    }
    relabelled.extend_from_slice(rest);
    assert!(count > 0, "the probe imports wasi:tensor-fused@0.1.3");
    let path = scratch(&format!("fused-{version}")).join("probe.wasm");
    std::fs::write(&path, &relabelled).unwrap();
    let mut t = Ops::serving(&format!("fused-{version}-serve"), &path);
    let (g, u) = (
        t.rand(&[3, 7], "f32", -4.0, 4.0),
        t.rand(&[3, 7], "f32", -2.0, 2.0),
    );
    t.check(
        &format!("swiglu through @{version}"),
        "swiglu",
        &[Some(&g), Some(&u)],
        json!({}),
        &r::binary(&g.0, &u.0, |x, y| x / (1.0 + (-x).exp()) * y),
        "f32",
    );
    let (q, k, v) = (
        t.rand(&[2, 16], "f32", -1.0, 1.0),
        t.rand(&[2, 8], "f32", -1.0, 1.0),
        t.rand(&[2, 8], "f32", -1.0, 1.0),
    );
    let cache = t.rand(&[2, 1, 4, 8], "f32", -1.0, 1.0);
    let got = t
        .call(
            "decode-attention",
            &[Some(&q), Some(&k), Some(&v), Some(&cache), Some(&cache)],
            json!({"positions": [1, 3], "theta": 10000.0, "layout": "interleaved", "scale": 0.3}),
        )
        .unwrap();
    let (o, _, _) = r::decode_attention(
        &q.0,
        &k.0,
        &v.0,
        &cache.0,
        &cache.0,
        &[1, 3],
        10000.0,
        true,
        0.3,
        |x| x,
    );
    assert_close(
        &format!("decode-attention through @{version}"),
        &got["out"],
        &o,
        "f32",
    );
}
