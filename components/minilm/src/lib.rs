//! `minilm`: the all-MiniLM-L6-v2 sentence-embedding model as a component.
//! It exports `tensorwasm:inference/embeddings@0.1.0` (one request's inputs,
//! composed into a world) and `tensorwasm:inference/batch-embeddings@0.2.0`
//! (many requests' inputs in one pass, called by the host's batcher:
//! [`batch`]); all the math runs on the host's tensor backend through
//! `wasi:tensor` (the GPU when the host has one).
//!
//! What it needs from the deployment (docs/OPENAI.md):
//! - the weights grant `all-minilm-l6-v2` → the model's `model.safetensors`;
//! - the model folder granted read-only at `/models/all-minilm-l6-v2`, for
//!   the tokenizer's `vocab.txt`.
//!
//! The pipeline is sentence-transformers' own: BERT WordPiece tokenization
//! (lower case, `[CLS] … [SEP]`, truncated at 256 tokens), the 6-layer BERT
//! encoder, mean pooling over the real tokens and L2 normalization. A batch
//! is sorted by length and run in chunks, so padding stays small.

mod batch;
mod bert;

#[allow(missing_docs)]
mod bindings {
    wit_bindgen::generate!({
        inline: "
            package tensorwasm:minilm;
            world minilm {
                /// `tensorwasm.tensor-device` says where the math runs.
                import wasi:config/store@0.2.0-rc.1;
                export tensorwasm:inference/embeddings@0.1.0;
                export tensorwasm:inference/batch-embeddings@0.2.0;
                /// Run once at deploy time by the host (`crate::preinit`):
                /// builds the tokenizer into the snapshot every instance starts from.
                export wizer-initialize: func();
            }
        ",
        path: [
            "../../wit/tensor-0.1.0",
            "../../wit/inference-0.1.0",
            "../../wit/inference-0.2.0",
            "../../wit/deps/config",
        ],
        generate_all,
    });
}

use bindings::exports::tensorwasm::inference0_1_0::embeddings::{EmbeddingBatch, Guest, Input};
use bindings::tensorwasm::inference0_1_0::types::{Error, ModelInfo, ModelKind};
use std::cell::RefCell;
use std::sync::OnceLock;
use wordpiece::WordPiece;

/// The id clients use.
const MODEL_ID: &str = "all-minilm-l6-v2";
/// The weights grant holding `model.safetensors`.
const WEIGHTS_GRANT: &str = "all-minilm-l6-v2";
/// The WordPiece vocabulary, in the model folder the deployment mounts.
const VOCAB_PATH: &str = "/models/all-minilm-l6-v2/vocab.txt";
/// sentence-transformers' `max_seq_length` for this model.
const MAX_TOKENS: usize = 256;
/// The most inputs one request may embed (OpenAI's limit is 2048).
const MAX_INPUTS: usize = 2048;
/// How to fetch the model (named in every "model unavailable" error).
const FETCH_HINT: &str =
    "fetch it with `bash scripts/fetch-models.sh` and grant it as in docs/OPENAI.md";

struct Component;

/// The tokenizer, built by [`bindings::Guest::wizer_initialize`] when the
/// host pre-initializes the component, else by the first request that needs it.
static TOKENIZER: OnceLock<WordPiece> = OnceLock::new();

impl bindings::Guest for Component {
    fn wizer_initialize() {
        // A missing vocabulary is left for requests to report (503).
        if let Ok(t) = load_tokenizer() {
            let _ = TOKENIZER.set(t);
        }
        tensorwasm_sdk::preinit::finish();
    }
}

impl Guest for Component {
    fn models() -> Vec<ModelInfo> {
        vec![ModelInfo {
            id: MODEL_ID.into(),
            owned_by: "sentence-transformers".into(),
            kind: ModelKind::Embedding,
            context_length: MAX_TOKENS as u32,
            dimensions: bert::HIDDEN as u32,
        }]
    }

    fn embed(model: String, inputs: Vec<Input>) -> Result<EmbeddingBatch, Error> {
        let sequences = check(&model, &inputs)?;
        let prompt_tokens = sequences.iter().map(|s| s.len() as u32).sum();
        let vectors = with_encoder(|e| {
            e.embed(&sequences, bert::Chunking::for_device(&tensor_device()))
                .map_err(|e| Error::Backend(e.to_string()))
        })?;
        Ok(EmbeddingBatch {
            vectors,
            prompt_tokens,
        })
    }
}

/// Checks one request (`model`, `inputs`) and tokenizes its inputs.
fn check(model: &str, inputs: &[Input]) -> Result<Vec<Vec<u32>>, Error> {
    if model != MODEL_ID {
        return Err(Error::UnknownModel(format!(
            "this component serves `{MODEL_ID}`, not `{model}`"
        )));
    }
    if inputs.is_empty() {
        return Err(Error::InvalidRequest("`input` must not be empty".into()));
    }
    if inputs.len() > MAX_INPUTS {
        return Err(Error::InvalidRequest(format!(
            "at most {MAX_INPUTS} inputs per request, got {}",
            inputs.len()
        )));
    }
    tokenize(inputs)
}

thread_local! {
    /// The encoder, opened by the first call and kept for the instance's
    /// life (a long-lived batching instance opens its weights once).
    static ENCODER: RefCell<Option<bert::Encoder>> = const { RefCell::new(None) };
}

/// Runs `f` on the encoder, opening the weights first if needed.
fn with_encoder<T>(f: impl FnOnce(&bert::Encoder) -> Result<T, Error>) -> Result<T, Error> {
    ENCODER.with_borrow_mut(|slot| {
        if slot.is_none() {
            let encoder = bert::Encoder::open(WEIGHTS_GRANT).map_err(|e| match e {
                bert::OpenError::Missing(m) => {
                    Error::ModelUnavailable(format!("{MODEL_ID}: {m}; {FETCH_HINT}"))
                }
                bert::OpenError::Tensor(e) => Error::Backend(e.to_string()),
            })?;
            *slot = Some(encoder);
        }
        f(slot.as_ref().expect("opened above"))
    })
}

/// Where the host computes `wasi:tensor` (`cpu`, `cuda:0`; empty if unsaid).
fn tensor_device() -> String {
    bindings::wasi::config::store::get("tensorwasm.tensor-device")
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// Token ids of every input, `[CLS] … [SEP]`, at most [`MAX_TOKENS`] long.
fn tokenize(inputs: &[Input]) -> Result<Vec<Vec<u32>>, Error> {
    let mut out = Vec::with_capacity(inputs.len());
    for (i, input) in inputs.iter().enumerate() {
        let ids = match input {
            Input::Text(text) => tokenizer()?.encode(text),
            Input::Tokens(ids) => {
                if ids.is_empty() {
                    return Err(Error::InvalidRequest(format!("input {i} has no tokens")));
                }
                if let Some(bad) = ids.iter().find(|&&id| id as usize >= bert::VOCAB) {
                    return Err(Error::InvalidRequest(format!(
                        "input {i}: token {bad} is outside the vocabulary (0..{})",
                        bert::VOCAB
                    )));
                }
                let mut v = ids.clone();
                v.truncate(MAX_TOKENS);
                v
            }
        };
        out.push(ids);
    }
    Ok(out)
}

/// The tokenizer: the pre-initialized one, else built now (and kept for the
/// rest of this instance).
fn tokenizer() -> Result<&'static WordPiece, Error> {
    if let Some(t) = TOKENIZER.get() {
        return Ok(t);
    }
    let t = load_tokenizer()?;
    Ok(TOKENIZER.get_or_init(|| t))
}

/// The model's WordPiece tokenizer, as its `tokenizer.json` sets it up (BERT
/// normalizer: clean text, CJK split, lower case, accents stripped; BERT
/// pre-tokenizer; WordPiece with `##`; `[CLS] … [SEP]`), truncated as
/// sentence-transformers does; built from `vocab.txt`, one token per line.
fn load_tokenizer() -> Result<WordPiece, Error> {
    let unavailable = |m: String| Error::ModelUnavailable(format!("{MODEL_ID}: {m}"));
    let text = std::fs::read_to_string(VOCAB_PATH)
        .map_err(|e| unavailable(format!("cannot read {VOCAB_PATH}: {e}; {FETCH_HINT}")))?;
    WordPiece::from_vocab_txt(&text, MAX_TOKENS)
        .map_err(|e| unavailable(format!("{VOCAB_PATH}: {e}")))
}

bindings::export!(Component with_types_in bindings);
