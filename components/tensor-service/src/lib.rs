//! `tensor-service`: an example GPU service built on the TensorWasm SDK. It
//! evaluates small networks sent as JSON, with all the math done by the host
//! through `wasi:tensor` (on the GPU when the host has one).
//!
//! - `POST /mlp` `{"input": [[..]], "layers": [{"weight": [[..]], "bias": [..], "activation": "relu"}]}`
//!   → `{"output": [[..]]}`. `weight` is [in, out]; activations: relu, gelu,
//!   gelu-tanh, silu, tanh, none.
//! - `POST /attention` `{"x": [[..]], "wq", "wk", "wv", "wo": [[..]], "heads": 2, "causal": true}`
//!   → `{"output": [[..]]}`: multi-head self-attention over the rows of `x`.
//! - `GET /` describes the routes.

use httpkit::{json, json_error, path, read_body, respond};
use serde::Deserialize;
use tensorwasm_sdk::{Tensor, attention};
use wasip2::http::types::{IncomingRequest, ResponseOutparam};

#[derive(Deserialize)]
struct Layer {
    weight: Vec<Vec<f32>>,
    #[serde(default)]
    bias: Option<Vec<f32>>,
    #[serde(default)]
    activation: Option<String>,
}

#[derive(Deserialize)]
struct MlpRequest {
    input: Vec<Vec<f32>>,
    layers: Vec<Layer>,
}

#[derive(Deserialize)]
struct AttentionRequest {
    x: Vec<Vec<f32>>,
    wq: Vec<Vec<f32>>,
    wk: Vec<Vec<f32>>,
    wv: Vec<Vec<f32>>,
    wo: Vec<Vec<f32>>,
    heads: u32,
    #[serde(default)]
    causal: bool,
}

/// A client mistake (400) or a tensor error (422).
enum Failure {
    Bad(String),
    Tensor(tensorwasm_sdk::Error),
}

impl From<tensorwasm_sdk::Error> for Failure {
    fn from(e: tensorwasm_sdk::Error) -> Self {
        Failure::Tensor(e)
    }
}

/// A [rows, cols] tensor from nested rows (all rows the same length).
fn matrix(name: &str, rows: &[Vec<f32>]) -> Result<Tensor, Failure> {
    let cols = rows.first().map_or(0, Vec::len);
    if rows.iter().any(|r| r.len() != cols) {
        return Err(Failure::Bad(format!("`{name}`: rows differ in length")));
    }
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    Ok(Tensor::from_f32(&flat, &[rows.len() as u32, cols as u32])?)
}

/// Nested rows of a rank-2 tensor.
fn rows_of(t: &Tensor) -> Result<Vec<Vec<f32>>, Failure> {
    let shape = t.shape();
    let cols = shape.get(1).copied().unwrap_or(1).max(1) as usize;
    Ok(t.to_f32()?.chunks(cols).map(<[f32]>::to_vec).collect())
}

fn mlp(req: MlpRequest) -> Result<Vec<Vec<f32>>, Failure> {
    let mut x = matrix("input", &req.input)?;
    for (i, layer) in req.layers.iter().enumerate() {
        x = x.matmul(&matrix(&format!("layers[{i}].weight"), &layer.weight)?)?;
        if let Some(b) = &layer.bias {
            x = x.add(&Tensor::from_f32(b, &[b.len() as u32])?)?;
        }
        x = match layer.activation.as_deref().unwrap_or("none") {
            "relu" => x.relu()?,
            "gelu" => x.gelu()?,
            "gelu-tanh" => x.gelu_tanh()?,
            "silu" => x.silu()?,
            "tanh" => x.tanh()?,
            "none" => x,
            other => return Err(Failure::Bad(format!("unknown activation `{other}`"))),
        };
    }
    rows_of(&x)
}

fn self_attention(req: AttentionRequest) -> Result<Vec<Vec<f32>>, Failure> {
    let x = matrix("x", &req.x)?;
    let (seq, d) = (req.x.len() as u32, req.x.first().map_or(0, Vec::len) as u32);
    let h = req.heads;
    if h == 0 || d % h != 0 {
        return Err(Failure::Bad(format!(
            "`heads` ({h}) must divide the width ({d})"
        )));
    }
    let dh = d / h;
    // [seq, d] → [1, h, seq, dh]
    let split = |w: &Tensor| -> Result<Tensor, Failure> {
        Ok(x.matmul(w)?
            .reshape(&[1, seq, h, dh])?
            .permute(&[0, 2, 1, 3])?)
    };
    let q = split(&matrix("wq", &req.wq)?)?;
    let k = split(&matrix("wk", &req.wk)?)?;
    let v = split(&matrix("wv", &req.wv)?)?;
    let scale = 1.0 / (dh as f32).sqrt();
    let ctx = attention(&q, &k, &v, None, scale, req.causal)?;
    let merged = ctx.permute(&[0, 2, 1, 3])?.reshape(&[seq, d])?;
    rows_of(&merged.matmul(&matrix("wo", &req.wo)?)?)
}

fn answer<T: for<'de> Deserialize<'de>>(
    request: &IncomingRequest,
    out: ResponseOutparam,
    f: fn(T) -> Result<Vec<Vec<f32>>, Failure>,
) {
    let body = match read_body(request) {
        Ok(b) => b,
        Err(e) => return json_error(out, 400, "bad_body", &e),
    };
    let req: T = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return json_error(out, 400, "bad_json", &e.to_string()),
    };
    match f(req) {
        Ok(rows) => json(out, 200, &serde_json::json!({ "output": rows }).to_string()),
        Err(Failure::Bad(m)) => json_error(out, 400, "bad_request", &m),
        Err(Failure::Tensor(e)) => json_error(out, 422, e.kind(), &e.to_string()),
    }
}

const USAGE: &str = "tensor-service: POST /mlp {\"input\": [[..]], \"layers\": [{\"weight\": [[..]], \"bias\": [..], \"activation\": \"relu\"}]}\n\
                     POST /attention {\"x\": [[..]], \"wq\": .., \"wk\": .., \"wv\": .., \"wo\": .., \"heads\": 2, \"causal\": true}\n";

struct Service;

impl wasip2::exports::http::incoming_handler::Guest for Service {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        match path(&request).as_str() {
            "/mlp" => answer(&request, out, mlp),
            "/attention" => answer(&request, out, self_attention),
            "/" => respond(
                out,
                200,
                &[("content-type", "text/plain")],
                USAGE.as_bytes(),
            ),
            _ => json_error(out, 404, "not_found", "routes: /, /mlp, /attention"),
        }
    }
}

wasip2::http::proxy::export!(Service);
