//! `POST /v1/completions` and `POST /v1/chat/completions`, whole or streamed
//! as server-sent events.

use crate::bindings::tensorwasm::inference::generation::{
    Completion, FinishReason, Message, Prompt, Sampling, Usage, start,
};
use crate::error::ApiError;
use serde::Deserialize;
use serde_json::{Value, json};
use std::io::Write;
use wasip2::http::types::{Fields, OutgoingBody, OutgoingResponse, ResponseOutparam};

/// Which endpoint.
#[derive(Clone, Copy, PartialEq)]
pub enum Kind {
    /// `/v1/completions`: text in, text out.
    Text,
    /// `/v1/chat/completions`: messages in, an assistant message out.
    Chat,
}

#[derive(Deserialize)]
struct Request {
    model: String,
    #[serde(default)]
    prompt: Option<Value>,
    #[serde(default)]
    messages: Option<Vec<RawMessage>>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    max_completion_tokens: Option<u32>,
    #[serde(default)]
    temperature: Option<f32>,
    #[serde(default)]
    top_p: Option<f32>,
    #[serde(default)]
    seed: Option<i64>,
    #[serde(default)]
    stop: Option<Value>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    n: Option<u32>,
    #[serde(default)]
    echo: Option<bool>,
    #[serde(default)]
    logprobs: Option<Value>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Deserialize)]
struct RawMessage {
    role: String,
    #[serde(default)]
    content: Option<Value>,
}

/// Default `max_tokens`: OpenAI's 16 for text completions; for chat, the
/// rest of the context up to this many.
const CHAT_DEFAULT_MAX_TOKENS: u32 = 512;

/// A parsed request.
pub(crate) struct Parsed {
    model: String,
    prompt: Prompt,
    sampling: Sampling,
    stream: bool,
    include_usage: bool,
}

pub(crate) fn parse(kind: Kind, body: &[u8]) -> Result<Parsed, ApiError> {
    let req: Request = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid_request(format!("invalid JSON body: {e}")))?;
    if req.n.is_some_and(|n| n != 1) {
        return Err(ApiError::invalid_param("n", "only `n` = 1 is supported"));
    }
    if req.echo == Some(true) {
        return Err(ApiError::invalid_param("echo", "`echo` is not supported"));
    }
    if req
        .logprobs
        .as_ref()
        .is_some_and(|l| !l.is_null() && l != &json!(false))
    {
        return Err(ApiError::invalid_param(
            "logprobs",
            "`logprobs` is not supported",
        ));
    }
    let prompt = match kind {
        Kind::Text => match req.prompt {
            Some(Value::String(s)) => Prompt::Text(s),
            Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => {
                Prompt::Text(a[0].as_str().unwrap_or_default().to_string())
            }
            _ => {
                return Err(ApiError::invalid_param(
                    "prompt",
                    "`prompt` must be a string (or a list of one string)",
                ));
            }
        },
        Kind::Chat => {
            let raw = req
                .messages
                .ok_or_else(|| ApiError::invalid_param("messages", "`messages` is required"))?;
            Prompt::Chat(raw.into_iter().map(message).collect::<Result<_, _>>()?)
        }
    };
    let stop = match req.stop {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(a)) => a
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                _ => Err(ApiError::invalid_param(
                    "stop",
                    "`stop` must be a string or a list of strings",
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(ApiError::invalid_param(
                "stop",
                "`stop` must be a string or a list of strings",
            ));
        }
    };
    let max_tokens = req
        .max_completion_tokens
        .or(req.max_tokens)
        .unwrap_or(match kind {
            Kind::Text => 16,
            Kind::Chat => CHAT_DEFAULT_MAX_TOKENS,
        });
    Ok(Parsed {
        model: req.model,
        prompt,
        sampling: Sampling {
            max_tokens,
            temperature: req.temperature.unwrap_or(1.0),
            top_p: req.top_p.unwrap_or(1.0),
            seed: req.seed.map(|s| s as u64),
            stop,
        },
        stream: req.stream.unwrap_or(false),
        include_usage: req.stream_options.is_some_and(|o| o.include_usage),
    })
}

/// A chat message; `content` may be a string or a list of text parts.
fn message(m: RawMessage) -> Result<Message, ApiError> {
    if !matches!(
        m.role.as_str(),
        "system" | "developer" | "user" | "assistant"
    ) {
        return Err(ApiError::invalid_param(
            "messages",
            format!("unsupported message role `{}`", m.role),
        ));
    }
    let content = match m.content {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s,
        Some(Value::Array(parts)) => parts
            .iter()
            .map(|p| {
                match (
                    p.get("type").and_then(Value::as_str),
                    p.get("text").and_then(Value::as_str),
                ) {
                    (Some("text"), Some(t)) => Ok(t.to_string()),
                    _ => Err(ApiError::invalid_param(
                        "messages",
                        "only text content parts are supported",
                    )),
                }
            })
            .collect::<Result<Vec<_>, _>>()?
            .concat(),
        Some(_) => {
            return Err(ApiError::invalid_param(
                "messages",
                "`content` must be a string or a list of parts",
            ));
        }
    };
    let role = if m.role == "developer" {
        "system".into()
    } else {
        m.role
    };
    Ok(Message { role, content })
}

/// Answers a completion request (the response is sent here).
pub fn create(kind: Kind, body: &[u8], out: ResponseOutparam) {
    let parsed = match parse(kind, body) {
        Ok(p) => p,
        Err(e) => return e.send(out),
    };
    let completion = match start(&parsed.model, &parsed.prompt, &parsed.sampling) {
        Ok(c) => c,
        Err(e) => return ApiError::from_model(e).send(out),
    };
    let meta = Meta {
        id: format!(
            "{}-{:016x}{:016x}",
            if kind == Kind::Chat {
                "chatcmpl"
            } else {
                "cmpl"
            },
            wasip2::random::random::get_random_u64(),
            wasip2::random::random::get_random_u64()
        ),
        created: wasip2::clocks::wall_clock::now().seconds,
        model: parsed.model.clone(),
        kind,
    };
    if parsed.stream {
        stream(&meta, &completion, parsed.include_usage, out);
    } else {
        whole(&meta, &completion, out);
    }
}

/// What every response object of one completion shares.
struct Meta {
    id: String,
    created: u64,
    model: String,
    kind: Kind,
}

impl Meta {
    fn object(&self, chunk: bool) -> &'static str {
        match (self.kind, chunk) {
            (Kind::Chat, false) => "chat.completion",
            (Kind::Chat, true) => "chat.completion.chunk",
            (Kind::Text, _) => "text_completion",
        }
    }

    /// One choice: `text` (or a delta) and the finish reason.
    fn choice(&self, text: Option<&str>, finish: Option<FinishReason>, chunk: bool) -> Value {
        let finish = finish.map(|f| match f {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        });
        match (self.kind, chunk) {
            (Kind::Text, _) => {
                json!({"index": 0, "text": text.unwrap_or(""), "logprobs": null, "finish_reason": finish})
            }
            (Kind::Chat, false) => json!({
                "index": 0,
                "message": {"role": "assistant", "content": text.unwrap_or(""), "refusal": null},
                "logprobs": null,
                "finish_reason": finish,
            }),
            (Kind::Chat, true) => {
                let delta = match text {
                    Some(t) => json!({"content": t}),
                    None => json!({}),
                };
                json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish})
            }
        }
    }

    fn envelope(&self, choices: Vec<Value>, usage: Option<Usage>, chunk: bool) -> Value {
        let mut v = json!({
            "id": self.id,
            "object": self.object(chunk),
            "created": self.created,
            "model": self.model,
            "system_fingerprint": null,
            "choices": choices,
        });
        if let Some(u) = usage {
            v["usage"] = usage_json(&u);
        }
        v
    }
}

fn usage_json(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
    })
}

/// Generates everything, then answers with one JSON object.
fn whole(meta: &Meta, completion: &Completion, out: ResponseOutparam) {
    let mut text = String::new();
    loop {
        match completion.next() {
            Ok(Some(piece)) => text.push_str(&piece),
            Ok(None) => break,
            Err(e) => return ApiError::from_model(e).send(out),
        }
    }
    let body = meta.envelope(
        vec![meta.choice(Some(&text), completion.finish_reason(), false)],
        Some(completion.usage()),
        false,
    );
    httpkit::json(out, 200, &body.to_string());
}

/// Streams each piece as a server-sent event as soon as it is generated.
fn stream(meta: &Meta, completion: &Completion, include_usage: bool, out: ResponseOutparam) {
    let headers = Fields::new();
    let _ = headers.append("content-type", b"text/event-stream");
    let _ = headers.append("cache-control", b"no-cache");
    let response = OutgoingResponse::new(headers);
    let body = response.body().expect("a new response has a body");
    ResponseOutparam::set(out, Ok(response));
    {
        let Ok(mut sink) = body.write() else { return };
        // False once the client is gone: generation stops, and dropping the
        // completion takes its sequence out of a batching host's batch.
        let mut send = |v: &Value| {
            sink.write_all(format!("data: {v}\n\n").as_bytes()).is_ok() && sink.flush().is_ok()
        };
        if meta.kind == Kind::Chat {
            let mut first = meta.envelope(vec![meta.choice(Some(""), None, true)], None, true);
            first["choices"][0]["delta"]["role"] = json!("assistant");
            if !send(&first) {
                return;
            }
        }
        loop {
            match completion.next() {
                Ok(Some(piece)) => {
                    let chunk =
                        meta.envelope(vec![meta.choice(Some(&piece), None, true)], None, true);
                    if !send(&chunk) {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let e = ApiError::from_model(e);
                    send(&e.body());
                    break;
                }
            }
        }
        let last_text = if meta.kind == Kind::Text {
            Some("")
        } else {
            None
        };
        send(&meta.envelope(
            vec![meta.choice(last_text, completion.finish_reason(), true)],
            None,
            true,
        ));
        if include_usage {
            send(&meta.envelope(Vec::new(), Some(completion.usage()), true));
        }
        let _ = sink.write_all(b"data: [DONE]\n\n");
        let _ = sink.flush();
    }
    let _ = OutgoingBody::finish(body, None);
}
