//! `smollm`: the SmolLM2-135M-Instruct chat model as a component. It exports
//! `tensorwasm:inference/generation@0.1.0` (one completion per instance,
//! composed into a world) and `tensorwasm:inference/batch-generation@0.2.0`
//! (many sequences decoded together by one long-lived instance, driven by the
//! host's batcher: [`batch`]); the decoder runs as `wasi:tensor`
//! ops on the host's backend (the GPU when the host has one), with the KV
//! cache kept as host tensors between tokens.
//!
//! It needs the weights grant `smollm2-135m-instruct` → the model's GGUF file
//! (`grants.models = ["smollm2-135m-instruct"]`, docs/OPENAI.md). The host
//! dequantizes the GGUF's blocks to f32 once, at start-up; the tokenizer
//! (byte-level BPE) and the ChatML template come from the file's metadata.

mod batch;
mod llama;
mod sample;
mod tokenizer;

#[allow(missing_docs)]
mod bindings {
    wit_bindgen::generate!({
        inline: "
            package tensorwasm:smollm;
            world smollm {
                export tensorwasm:inference/generation@0.1.0;
                export tensorwasm:inference/batch-generation@0.2.0;
                /// Run once at deploy time by the host (`crate::preinit`):
                /// builds the tokenizer into the snapshot every instance starts from.
                export wizer-initialize: func();
            }
        ",
        path: [
            "../../wit/tensor-0.1.0",
            "../../wit/inference-0.1.0",
            "../../wit/inference-0.2.0",
        ],
        generate_all,
    });
}

use bindings::exports::tensorwasm::inference0_1_0::generation::{
    Completion as CompletionHandle, FinishReason, Guest, GuestCompletion, Prompt, Sampling, Usage,
};
use bindings::tensorwasm::inference0_1_0::types::{ContextOverflow, Error, ModelInfo, ModelKind};
use sample::{Sampler, Scan, StopScan};
use std::cell::RefCell;
use std::sync::OnceLock;
use tensorwasm_sdk::Weights;

/// The id clients use, and the weights grant's name.
const MODEL_ID: &str = "smollm2-135m-instruct";
/// How to fetch the model (named in every "model unavailable" error).
const FETCH_HINT: &str =
    "fetch it with `bash scripts/fetch-models.sh` and grant it as in docs/OPENAI.md";
/// SmolLM2's context, in tokens (the GGUF's `llama.context_length`).
const CONTEXT: u32 = 8192;

struct Component;

/// The tokenizer, built by [`bindings::Guest::wizer_initialize`] when the
/// host pre-initializes the component, else by the first request.
static VOCAB: OnceLock<tokenizer::Vocab> = OnceLock::new();

impl bindings::Guest for Component {
    fn wizer_initialize() {
        // A missing model is left for requests to report (503). The weights
        // handle is dropped here: host handles do not survive the snapshot.
        if let Ok(weights) = Weights::open(MODEL_ID)
            && let Ok(vocab) = tokenizer::Vocab::from_gguf(&weights)
        {
            let _ = VOCAB.set(vocab);
        }
        tensorwasm_sdk::preinit::finish();
    }
}

/// The tokenizer: the pre-initialized one, else built from `weights` now.
fn vocab(weights: &Weights) -> Result<&'static tokenizer::Vocab, Error> {
    if let Some(v) = VOCAB.get() {
        return Ok(v);
    }
    let v = tokenizer::Vocab::from_gguf(weights).map_err(Error::ModelUnavailable)?;
    Ok(VOCAB.get_or_init(|| v))
}

impl Guest for Component {
    type Completion = Completion;

    fn models() -> Vec<ModelInfo> {
        vec![ModelInfo {
            id: MODEL_ID.into(),
            owned_by: "HuggingFaceTB".into(),
            kind: ModelKind::Generation,
            context_length: CONTEXT,
            dimensions: 0,
        }]
    }

    fn start(model: String, prompt: Prompt, options: Sampling) -> Result<CompletionHandle, Error> {
        let model = open(&model)?;
        let (ids, text) = prepare(&model, prompt, options)?;
        let mut cache = model.cache();
        let logits = model
            .forward(&ids, &mut cache)
            .map_err(|e| Error::Backend(e.to_string()))?;
        let state = State {
            pending: Some(logits),
            cache,
            model,
            text,
        };
        Ok(CompletionHandle::new(Completion(RefCell::new(state))))
    }
}

/// The model's weights, if `model` names it.
fn open(model: &str) -> Result<llama::Model, Error> {
    if model != MODEL_ID {
        return Err(unknown_model(model));
    }
    let weights = Weights::open(MODEL_ID).map_err(|e| match e.kind() {
        "not-granted" | "not-found" => {
            Error::ModelUnavailable(format!("{MODEL_ID}: {e}; {FETCH_HINT}"))
        }
        _ => Error::Backend(e.to_string()),
    })?;
    let model = llama::Model::open(&weights).map_err(Error::ModelUnavailable)?;
    vocab(&weights)?;
    Ok(model)
}

/// The error for a model id this component does not serve.
fn unknown_model(model: &str) -> Error {
    Error::UnknownModel(format!("this component serves `{MODEL_ID}`, not `{model}`"))
}

/// Checks a request against `model` and tokenizes its prompt: the prompt's
/// ids and the sequence's text state.
fn prepare(
    model: &llama::Model,
    prompt: Prompt,
    options: Sampling,
) -> Result<(Vec<u32>, Text), Error> {
    check(&options)?;
    let vocab = VOCAB.get().expect("`open` built the tokenizer");
    let text = match prompt {
        Prompt::Text(t) => t,
        Prompt::Chat(messages) => {
            if messages.is_empty() {
                return Err(Error::InvalidRequest("`messages` must not be empty".into()));
            }
            tokenizer::chat_prompt(&messages)
        }
    };
    let ids = vocab.encode(&text).map_err(Error::InvalidRequest)?;
    if ids.is_empty() {
        return Err(Error::InvalidRequest("the prompt is empty".into()));
    }
    let requested = ids.len() as u64 + u64::from(options.max_tokens);
    let maximum = model.config.context.min(CONTEXT as usize) as u32;
    if requested > u64::from(maximum) {
        return Err(Error::ContextLengthExceeded(ContextOverflow {
            requested: requested.min(u64::from(u32::MAX)) as u32,
            maximum,
        }));
    }
    let seed = options
        .seed
        .unwrap_or_else(wasip2::random::random::get_random_u64);
    let text = Text {
        vocab,
        sampler: Sampler::new(options.temperature, options.top_p, seed),
        prompt_tokens: ids.len() as u32,
        generated: Vec::new(),
        settled: (0, String::new()),
        released: 0,
        finish: None,
        options,
    };
    Ok((ids, text))
}

/// Checks the sampling options against the WIT's ranges.
fn check(o: &Sampling) -> Result<(), Error> {
    let bad = |m: String| Err(Error::InvalidRequest(m));
    if o.max_tokens == 0 {
        return bad("`max_tokens` must be at least 1".into());
    }
    if !(0.0..=2.0).contains(&o.temperature) {
        return bad(format!(
            "`temperature` must be in [0, 2], not {}",
            o.temperature
        ));
    }
    if !(o.top_p > 0.0 && o.top_p <= 1.0) {
        return bad(format!("`top_p` must be in (0, 1], not {}", o.top_p));
    }
    if o.stop.len() > 4 || o.stop.iter().any(String::is_empty) {
        return bad("`stop` takes at most 4 sequences, none empty".into());
    }
    Ok(())
}

/// A completion's state between `next` calls.
struct State {
    model: llama::Model,
    cache: llama::Cache,
    text: Text,
    /// Logits of the position to pick next, when not yet picked.
    pending: Option<tensorwasm_sdk::Tensor>,
}

impl State {
    /// Generates until there is text to return or the completion ends.
    fn next(&mut self) -> Result<Option<String>, Error> {
        let backend = |e: tensorwasm_sdk::Error| Error::Backend(e.to_string());
        while self.text.finish.is_none() {
            let logits = match self.pending.take() {
                Some(l) => l,
                None => {
                    let last = *self.text.generated.last().expect("a token was generated");
                    self.model
                        .forward(&[last], &mut self.cache)
                        .map_err(backend)?
                }
            };
            let id = self.text.sampler.pick(&logits).map_err(backend)?;
            if let Some(piece) = self.text.push(id) {
                return Ok(Some(piece));
            }
        }
        Ok(None)
    }
}

/// A sequence's text: the tokens picked, what of their text was released,
/// and why it ended.
struct Text {
    vocab: &'static tokenizer::Vocab,
    sampler: Sampler,
    options: Sampling,
    prompt_tokens: u32,
    generated: Vec<u32>,
    /// The text of the first `.0` generated tokens, whose bytes end on a
    /// whole character: the text of all of them is this plus the text of
    /// the rest (byte-level BPE decodes token by token), so each token
    /// decodes only the tokens after it, not the whole sequence again.
    settled: (usize, String),
    /// Bytes of the decoded text already returned.
    released: usize,
    finish: Option<FinishReason>,
}

impl Text {
    /// Takes the picked token `id`; returns the text it releases, if any
    /// (held back: an unfinished character, a possible stop sequence), and
    /// sets `finish` when the sequence ends.
    fn push(&mut self, id: u32) -> Option<String> {
        // The model ended: release what was held back for a stop sequence.
        let ended = self.vocab.end_ids.contains(&id);
        if !ended {
            self.generated.push(id);
        }
        let unsettled = self.settle();
        let text = unsettled.as_deref().unwrap_or(&self.settled.1);
        let end = if ended {
            self.finish = Some(FinishReason::Stop);
            text.len()
        } else {
            match StopScan::new(&self.options.stop).scan(text, self.released) {
                Scan::Stop(at) => {
                    self.finish = Some(FinishReason::Stop);
                    at
                }
                Scan::Release(_) if self.generated.len() >= self.options.max_tokens as usize => {
                    self.finish = Some(FinishReason::Length);
                    text.len()
                }
                Scan::Release(at) => at,
            }
        };
        // `text` from what was released up to byte `end`, if any.
        if end <= self.released {
            return None;
        }
        let piece = text[self.released..end].to_string();
        self.released = end;
        Some(piece)
    }

    /// Decodes the tokens after `settled`: moves it up to them when their
    /// bytes end on a whole character (None), else returns the whole text.
    fn settle(&mut self) -> Option<String> {
        let (count, settled) = &mut self.settled;
        let tail = self.vocab.decode(&self.generated[*count..]);
        if tail.contains('\u{fffd}') {
            return Some(format!("{settled}{tail}"));
        }
        settled.push_str(&tail);
        *count = self.generated.len();
        None
    }

    fn usage(&self) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.generated.len() as u32,
        }
    }
}

/// The `completion` resource.
struct Completion(RefCell<State>);

impl GuestCompletion for Completion {
    fn next(&self) -> Result<Option<String>, Error> {
        self.0.borrow_mut().next()
    }

    fn finish_reason(&self) -> Option<FinishReason> {
        self.0.borrow().text.finish
    }

    fn usage(&self) -> Usage {
        self.0.borrow().text.usage()
    }
}

bindings::export!(Component with_types_in bindings);
