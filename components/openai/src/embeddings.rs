//! `POST /v1/embeddings`.

use crate::bindings::tensorwasm::inference::embeddings::{Input, embed};
use crate::error::ApiError;
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Request {
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
    let (req, base64, inputs) = parse(body)?;
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
    response_json(&req.model, &batch.vectors, base64, batch.prompt_tokens)
        .map_err(|e| ApiError::invalid_request(format!("cannot encode the response: {e}")))
}

/// The response body, written directly: base64 vectors through serde and
/// the old byte-at-a-time encoder took ~3x the guest CPU (perf, 512 vectors).
fn response_json(
    model: &str,
    vectors: &[Vec<f32>],
    base64: bool,
    tokens: u32,
) -> Result<String, serde_json::Error> {
    let width = vectors.first().map_or(0, Vec::len);
    let mut out = String::with_capacity(128 + vectors.len() * (64 + width * 6));
    out.push_str(r#"{"object":"list","data":["#);
    for (index, v) in vectors.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        out.push_str(r#"{"object":"embedding","index":"#);
        out.push_str(&index.to_string());
        out.push_str(r#","embedding":"#);
        if base64 {
            // The base64 alphabet needs no JSON escaping.
            out.push('"');
            push_base64_f32(&mut out, v);
            out.push('"');
        } else {
            out.push_str(&serde_json::to_string(v)?);
        }
        out.push('}');
    }
    out.push_str(r#"],"model":"#);
    out.push_str(&serde_json::to_string(model)?);
    out.push_str(&format!(
        r#","usage":{{"prompt_tokens":{tokens},"total_tokens":{tokens}}}}}"#
    ));
    Ok(out)
}

/// The request, whether it asks for base64, and its inputs, checked.
pub(crate) fn parse(body: &[u8]) -> Result<(Request, bool, Vec<Input>), ApiError> {
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
    Ok((req, base64, inputs))
}

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

/// Appends the vector as base64 of its little-endian f32 bytes (what
/// OpenAI's `encoding_format: "base64"` returns).
fn push_base64_f32(out: &mut String, v: &[f32]) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let sextet = |n: u32, shift: u32| ALPHABET[(n >> shift) as usize & 63];
    let quad = |t: &[u8]| {
        let n = (u32::from(t[0]) << 16) | (u32::from(t[1]) << 8) | u32::from(t[2]);
        [sextet(n, 18), sextet(n, 12), sextet(n, 6), sextet(n, 0)]
    };
    let mut text = Vec::with_capacity((v.len() * 4).div_ceil(3) * 4);
    // Three floats are twelve bytes: four whole base64 quads.
    let mut floats = v.chunks_exact(3);
    for f in &mut floats {
        let [a, b, c] = [f[0].to_le_bytes(), f[1].to_le_bytes(), f[2].to_le_bytes()];
        let t = [
            a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3], c[0], c[1], c[2], c[3],
        ];
        let [q0, q1, q2, q3] = [
            quad(&t[0..3]),
            quad(&t[3..6]),
            quad(&t[6..9]),
            quad(&t[9..12]),
        ];
        text.extend_from_slice(&[
            q0[0], q0[1], q0[2], q0[3], q1[0], q1[1], q1[2], q1[3], q2[0], q2[1], q2[2], q2[3],
            q3[0], q3[1], q3[2], q3[3],
        ]);
    }
    let bytes: Vec<u8> = floats
        .remainder()
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let mut triples = bytes.chunks_exact(3);
    for t in &mut triples {
        text.extend_from_slice(&quad(t));
    }
    match *triples.remainder() {
        [a] => {
            let n = u32::from(a) << 16;
            text.extend_from_slice(&[sextet(n, 18), sextet(n, 12), b'=', b'=']);
        }
        [a, b] => {
            let n = (u32::from(a) << 16) | (u32::from(b) << 8);
            text.extend_from_slice(&[sextet(n, 18), sextet(n, 12), sextet(n, 6), b'=']);
        }
        _ => {}
    }
    // Only ASCII from the alphabet was written.
    out.push_str(std::str::from_utf8(&text).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::push_base64_f32;

    /// Expected strings from Python: `base64.b64encode(np.array(v, "<f4").tobytes())`.
    #[test]
    fn base64_matches_python_for_every_remainder() {
        let cases: [(&[f32], &str); 6] = [
            (&[], ""),
            (&[1.0], "AACAPw=="),
            (&[1.0, 2.0], "AACAPwAAAEA="),
            (&[1.0, 2.0, 3.0], "AACAPwAAAEAAAEBA"),
            (&[1.0, 2.0, 3.0, -0.5], "AACAPwAAAEAAAEBAAAAAvw=="),
            (
                &[f32::INFINITY, -0.0, 1e-30, 3.5, -7.25],
                "AACAfwAAAIBgQqINAABgQAAA6MA=",
            ),
        ];
        for (v, want) in cases {
            let mut got = String::from("x");
            push_base64_f32(&mut got, v);
            assert_eq!(got, format!("x{want}"), "{v:?}");
        }
    }
}
