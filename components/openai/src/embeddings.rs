//! `POST /v1/embeddings`.

use crate::bindings::tensorwasm::inference::embeddings::{Input, embed};
use crate::error::ApiError;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    model: String,
    input: Value,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(default)]
    dimensions: Option<u32>,
    #[serde(default)]
    #[allow(dead_code)]
    user: Option<String>,
}

/// Embeds the request's inputs.
pub fn create(body: &[u8]) -> Result<String, ApiError> {
    let req: Request = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid_request(format!("invalid JSON body: {e}")))?;
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid_param(
                "encoding_format",
                format!("`encoding_format` must be \"float\" or \"base64\", not {other:?}"),
            ));
        }
    };
    let inputs = inputs(&req.input)?;
    let batch = embed(&req.model, &inputs).map_err(ApiError::from_model)?;
    if let Some(d) = req.dimensions {
        let width = batch.vectors.first().map_or(0, Vec::len);
        if d as usize != width {
            return Err(ApiError::invalid_param(
                "dimensions",
                format!(
                    "`{}` produces {width}-dimensional vectors; `dimensions` {d} is not supported",
                    req.model
                ),
            ));
        }
    }
    // Serialized straight from the vectors: a `Value` per float costs more
    // than the model at large batches.
    let data: Vec<Embedding> = batch
        .vectors
        .iter()
        .enumerate()
        .map(|(index, v)| Embedding {
            object: "embedding",
            index,
            embedding: if base64 {
                Vector::Base64(base64_f32(v))
            } else {
                Vector::Float(v)
            },
        })
        .collect();
    let response = Response {
        object: "list",
        data,
        model: &req.model,
        usage: Usage {
            prompt_tokens: batch.prompt_tokens,
            total_tokens: batch.prompt_tokens,
        },
    };
    serde_json::to_string(&response)
        .map_err(|e| ApiError::invalid_request(format!("cannot encode the response: {e}")))
}

#[derive(Serialize)]
struct Response<'a> {
    object: &'static str,
    data: Vec<Embedding<'a>>,
    model: &'a str,
    usage: Usage,
}

#[derive(Serialize)]
struct Embedding<'a> {
    object: &'static str,
    index: usize,
    embedding: Vector<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Vector<'a> {
    Float(&'a [f32]),
    Base64(String),
}

#[derive(Serialize)]
struct Usage {
    prompt_tokens: u32,
    total_tokens: u32,
}

/// `input` as OpenAI accepts it: a string, a list of strings, a list of token
/// ids, or a list of lists of token ids.
fn inputs(input: &Value) -> Result<Vec<Input>, ApiError> {
    let bad = || {
        ApiError::invalid_param(
            "input",
            "`input` must be a string, a list of strings, a list of token ids or a list of lists of token ids",
        )
    };
    let tokens = |items: &[Value]| -> Result<Vec<u32>, ApiError> {
        items
            .iter()
            .map(|t| {
                t.as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(bad)
            })
            .collect()
    };
    match input {
        Value::String(s) => Ok(vec![Input::Text(s.clone())]),
        Value::Array(items) if items.is_empty() => Err(ApiError::invalid_param(
            "input",
            "`input` must not be empty",
        )),
        Value::Array(items) if items.iter().all(Value::is_number) => {
            Ok(vec![Input::Tokens(tokens(items)?)])
        }
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(Input::Text(s.clone())),
                Value::Array(t) => Ok(Input::Tokens(tokens(t)?)),
                _ => Err(bad()),
            })
            .collect(),
        _ => Err(bad()),
    }
}

/// The vector as base64 of its little-endian f32 bytes (what OpenAI's
/// `encoding_format: "base64"` returns).
fn base64_f32(v: &[f32]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
