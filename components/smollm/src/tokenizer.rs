//! SmolLM2's tokenizer (the `bpe` crate) built from the GGUF file's metadata
//! (`tokenizer.ggml.*`), and its ChatML template.

use crate::bindings::exports::tensorwasm::inference0_1_0::generation::Message;
use bpe::Bpe;
use tensorwasm_sdk::{MetadataValue, Weights};

/// The default system prompt of SmolLM2's chat template.
const DEFAULT_SYSTEM: &str = "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

/// The tokenizer and the ids generation stops at.
pub struct Vocab {
    bpe: Bpe,
    /// Tokens that end a completion (`<|endoftext|>`, `<|im_end|>`).
    pub end_ids: Vec<u32>,
}

fn text_list(w: &Weights, key: &str) -> Result<Vec<String>, String> {
    match w.metadata(key) {
        Some(MetadataValue::TextList(v)) => Ok(v),
        _ => Err(format!("the GGUF file has no `{key}` list")),
    }
}

fn integer_list(w: &Weights, key: &str) -> Result<Vec<i64>, String> {
    match w.metadata(key) {
        Some(MetadataValue::IntegerList(v)) => Ok(v),
        _ => Err(format!("the GGUF file has no `{key}` list")),
    }
}

impl Vocab {
    /// Builds the tokenizer from the GGUF metadata.
    pub fn from_gguf(w: &Weights) -> Result<Self, String> {
        let bpe = Bpe::new(
            &text_list(w, "tokenizer.ggml.tokens")?,
            &text_list(w, "tokenizer.ggml.merges")?,
            &integer_list(w, "tokenizer.ggml.token_type")?,
        )?;
        let end_ids = ["<|endoftext|>", "<|im_end|>"]
            .iter()
            .filter_map(|t| bpe.id(t))
            .collect();
        Ok(Self { bpe, end_ids })
    }

    /// Token ids of `text` (control tokens written in it are recognized).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        self.bpe.encode(text)
    }

    /// The text of `ids` (control tokens left out).
    pub fn decode(&self, ids: &[u32]) -> String {
        self.bpe.decode(ids)
    }
}

/// The conversation in SmolLM2's ChatML template, ready for the assistant's
/// reply (the GGUF's `tokenizer.chat_template` with `add_generation_prompt`).
pub fn chat_prompt(messages: &[Message]) -> String {
    let mut out = String::new();
    if messages.first().is_none_or(|m| m.role != "system") {
        out.push_str(&format!("<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>\n"));
    }
    for m in messages {
        out.push_str(&format!(
            "<|im_start|>{}\n{}<|im_end|>\n",
            m.role, m.content
        ));
    }
    out.push_str("<|im_start|>assistant\n");
    out
}
