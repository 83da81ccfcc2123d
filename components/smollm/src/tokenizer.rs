//! SmolLM2's byte-level BPE tokenizer and ChatML template, built from the
//! GGUF file's metadata (`tokenizer.ggml.*`).

use crate::bindings::exports::tensorwasm::inference0_1_0::generation::Message;
use tensorwasm_sdk::{MetadataValue, Weights};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BPE, Vocab as BpeVocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, Tokenizer};

/// The default system prompt of SmolLM2's chat template.
const DEFAULT_SYSTEM: &str = "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

/// The tokenizer and the ids generation stops at.
pub struct Vocab {
    tokenizer: Tokenizer,
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
        let tokens = text_list(w, "tokenizer.ggml.tokens")?;
        let merges = text_list(w, "tokenizer.ggml.merges")?;
        let types = integer_list(w, "tokenizer.ggml.token_type")?;
        let vocab: BpeVocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let merges: Vec<(String, String)> = merges
            .iter()
            .filter_map(|m| m.split_once(' '))
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| format!("cannot build the BPE model: {e}"))?;
        let mut tokenizer = Tokenizer::new(bpe);
        // llama.cpp's "smollm" pre-tokenizer: every digit alone, then GPT-2's split.
        tokenizer.with_pre_tokenizer(Some(Sequence::new(vec![
            Digits::new(true).into(),
            ByteLevel::new(false, true, true).into(),
        ])));
        tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
        // Control tokens (type 3) are matched whole in the text, as the chat template needs.
        let special: Vec<AddedToken> = tokens
            .iter()
            .zip(&types)
            .filter(|(_, t)| **t == 3)
            .map(|(tok, _)| AddedToken::from(tok.clone(), true))
            .collect();
        tokenizer
            .add_special_tokens(special)
            .map_err(|e| format!("cannot add the control tokens: {e}"))?;
        let end_ids = ["<|endoftext|>", "<|im_end|>"]
            .iter()
            .filter_map(|t| tokenizer.token_to_id(t))
            .collect();
        Ok(Self { tokenizer, end_ids })
    }

    /// Token ids of `text` (control tokens written in it are recognized).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        self.tokenizer
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| format!("cannot tokenize: {e}"))
    }

    /// The text of `ids` (control tokens left out).
    pub fn decode(&self, ids: &[u32]) -> String {
        self.tokenizer.decode(ids, true).unwrap_or_default()
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
