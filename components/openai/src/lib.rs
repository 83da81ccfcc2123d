//! `openai`: the OpenAI-compatible HTTP API in front of model components.
//!
//! It imports `tensorwasm:inference/embeddings@0.1.0` and
//! `tensorwasm:inference/generation@0.1.0`, which a world plugs model
//! components into (`worlds/openai.wac`), and answers:
//! - `GET /v1/models`, `GET /v1/models/{id}`;
//! - `POST /v1/embeddings` (`input` a string, a list of strings, a list of
//!   token ids or a list of those; `encoding_format` `float` or `base64`);
//! - `POST /v1/completions` and `POST /v1/chat/completions` (`max_tokens`,
//!   `temperature`, `top_p`, `seed`, `stop`, `stream` as server-sent events,
//!   `stream_options.include_usage`).
//!
//! Errors are OpenAI error objects (`{"error": {"message", "type", "param",
//! "code"}}`) with OpenAI's status codes. docs/OPENAI.md has the details.

// Natively only the fuzz targets use this crate (its parsers).
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

mod completions;
mod embeddings;
mod error;

/// The fuzz targets' way in (`fuzz/`): parses a request body of each
/// endpoint as it would be served, stopping before the model is called.
#[doc(hidden)]
pub fn fuzz_requests(body: &[u8]) -> [bool; 3] {
    [
        embeddings::parse(body).is_ok(),
        completions::parse(completions::Kind::Text, body).is_ok(),
        completions::parse(completions::Kind::Chat, body).is_ok(),
    ]
}

#[allow(missing_docs)]
mod bindings {
    wit_bindgen::generate!({
        inline: "
            package tensorwasm:openai;
            world openai {
                import tensorwasm:inference/embeddings@0.1.0;
                import tensorwasm:inference/generation@0.1.0;
            }
        ",
        path: ["../../wit/tensor-0.1.0", "../../wit/inference-0.1.0"],
        generate_all,
    });
}

use bindings::tensorwasm::inference::embeddings as embed_api;
use bindings::tensorwasm::inference::generation as generate_api;
use bindings::tensorwasm::inference::types::{ModelInfo, ModelKind};
use error::ApiError;
use httpkit::{json, path, read_body};
use serde_json::json;
use wasip2::http::types::{IncomingRequest, Method, ResponseOutparam};

struct OpenAi;

impl wasip2::exports::http::incoming_handler::Guest for OpenAi {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = path(&request);
        let path = path.trim_end_matches('/');
        let kind = match path {
            "/v1/completions" => Some(completions::Kind::Text),
            "/v1/chat/completions" => Some(completions::Kind::Chat),
            _ => None,
        };
        if let Some(kind) = kind {
            if !matches!(request.method(), Method::Post) {
                return ApiError::method_not_allowed().send(out);
            }
            match read_body(&request) {
                Ok(body) => completions::create(kind, &body, out),
                Err(e) => ApiError::invalid_request(e).send(out),
            }
            return;
        }
        let result = route(&request, request.method(), path);
        match result {
            Ok(body) => json(out, 200, &body),
            Err(e) => e.send(out),
        }
    }
}

/// Answers one request with a JSON body (as text), or an API error.
fn route(request: &IncomingRequest, method: Method, path: &str) -> Result<String, ApiError> {
    match (method, path) {
        (Method::Get, "/v1/models") => Ok(json!({
            "object": "list",
            "data": models().iter().map(model_object).collect::<Vec<_>>(),
        })
        .to_string()),
        (Method::Get, p) if p.starts_with("/v1/models/") => {
            let id = &p["/v1/models/".len()..];
            models()
                .iter()
                .find(|m| m.id == id)
                .map(|m| model_object(m).to_string())
                .ok_or_else(|| ApiError::model_not_found(id))
        }
        (Method::Post, "/v1/embeddings") => {
            let body = read_body(request).map_err(ApiError::invalid_request)?;
            embeddings::create(&body)
        }
        (_, "/v1/models" | "/v1/embeddings") => Err(ApiError::method_not_allowed()),
        (_, p) => Err(ApiError::not_found(p)),
    }
}

/// Every model the plugged-in components serve.
fn models() -> Vec<ModelInfo> {
    let mut all = embed_api::models();
    all.extend(generate_api::models());
    all
}

/// A model as `/v1/models` lists it.
fn model_object(m: &ModelInfo) -> serde_json::Value {
    let kind = match m.kind {
        ModelKind::Embedding => "embedding",
        ModelKind::Generation => "generation",
    };
    json!({
        "id": m.id,
        "object": "model",
        "created": 0,
        "owned_by": m.owned_by,
        "kind": kind,
        "context_length": m.context_length,
    })
}

// Natively (the fuzz targets link this crate) there is nothing to export.
#[cfg(target_arch = "wasm32")]
wasip2::http::proxy::export!(OpenAi);
