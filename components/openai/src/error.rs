//! OpenAI error objects and their status codes.

use crate::bindings::tensorwasm::inference::types::Error as ModelError;
use httpkit::json;
use serde_json::json;
use wasip2::http::types::ResponseOutparam;

/// An error answered as `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug)]
pub struct ApiError {
    status: u16,
    kind: &'static str,
    message: String,
    param: Option<&'static str>,
    code: Option<&'static str>,
}

impl ApiError {
    /// 400 `invalid_request_error`.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self {
            status: 400,
            kind: "invalid_request_error",
            message: message.into(),
            param: None,
            code: None,
        }
    }

    /// 400 `invalid_request_error` about one request field.
    pub fn invalid_param(param: &'static str, message: impl Into<String>) -> Self {
        Self {
            param: Some(param),
            ..Self::invalid_request(message)
        }
    }

    /// 404 `model_not_found`.
    pub fn model_not_found(id: &str) -> Self {
        Self {
            status: 404,
            kind: "invalid_request_error",
            message: format!("The model `{id}` does not exist"),
            param: Some("model"),
            code: Some("model_not_found"),
        }
    }

    /// 404 for a path the API does not have.
    pub fn not_found(path: &str) -> Self {
        Self {
            status: 404,
            kind: "invalid_request_error",
            message: format!("Unknown request URL: {path}"),
            param: None,
            code: Some("unknown_url"),
        }
    }

    /// 405 for a known path with the wrong method.
    pub fn method_not_allowed() -> Self {
        Self {
            status: 405,
            kind: "invalid_request_error",
            message: "Method not allowed for this URL".into(),
            param: None,
            code: Some("method_not_allowed"),
        }
    }

    /// The API error for a model component's error.
    pub fn from_model(e: ModelError) -> Self {
        match e {
            ModelError::InvalidRequest(m) => Self::invalid_request(m),
            ModelError::UnknownModel(m) => Self {
                message: m,
                ..Self::model_not_found("")
            },
            ModelError::ContextLengthExceeded(c) => Self {
                message: format!(
                    "This model's maximum context length is {} tokens, but {} tokens were requested",
                    c.maximum, c.requested
                ),
                code: Some("context_length_exceeded"),
                param: Some("messages"),
                ..Self::invalid_request("")
            },
            ModelError::ModelUnavailable(m) => Self {
                status: 503,
                kind: "server_error",
                message: m,
                param: None,
                code: Some("model_unavailable"),
            },
            ModelError::Backend(m) => Self {
                status: 500,
                kind: "server_error",
                message: format!("The model failed: {m}"),
                param: None,
                code: None,
            },
        }
    }

    /// The error object.
    pub fn body(&self) -> serde_json::Value {
        json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        })
    }

    /// Sends the error.
    pub fn send(self, out: ResponseOutparam) {
        json(out, self.status, &self.body().to_string());
    }
}
