//! The byte-level BPE tokenizer of GPT-2-style models such as SmolLM2, built
//! from the three lists a GGUF file carries (`tokenizer.ggml.tokens`,
//! `.merges`, `.token_type`) with Hugging Face `tokenizers`, and llama.cpp's
//! "smollm" pre-tokenizer (every digit alone, then GPT-2's split).
//!
//! Its own crate so that it builds natively too: the fuzz target
//! (`fuzz/src/lib.rs`, `bpe`) runs it on arbitrary text and vocabularies.
#![deny(missing_docs)]

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, Tokenizer};

/// GGUF's token type of control tokens (`<|im_start|>` …).
const CONTROL: i64 = 3;

/// A tokenizer.
pub struct Bpe {
    tokenizer: Tokenizer,
}

impl Bpe {
    /// Builds it from the GGUF lists: `tokens[i]` has id `i`, each merge is
    /// `"LEFT RIGHT"`, tokens of type 3 (control) are matched whole in the text.
    pub fn new(tokens: &[String], merges: &[String], types: &[i64]) -> Result<Self, String> {
        let vocab: Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let merges: Vec<(String, String)> = merges
            .iter()
            .filter_map(|m| m.split_once(' '))
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        // `tokenizers` 0.23 panics (a slice out of range) on a merge whose
        // result is longer than every token, before it checks the result
        // is in the vocabulary: check every merge first (found by fuzzing).
        if let Some((a, b)) = merges.iter().find(|(a, b)| {
            [a.as_str(), b, &format!("{a}{b}")]
                .iter()
                .any(|t| !vocab.contains_key(*t))
        }) {
            return Err(format!(
                "cannot build the BPE model: the merge `{a} {b}` names a token not in the vocabulary"
            ));
        }
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| format!("cannot build the BPE model: {e}"))?;
        let mut tokenizer = Tokenizer::new(bpe);
        tokenizer.with_pre_tokenizer(Some(Sequence::new(vec![
            Digits::new(true).into(),
            ByteLevel::new(false, true, true).into(),
        ])));
        tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
        let control: Vec<AddedToken> = tokens
            .iter()
            .zip(types)
            .filter(|(_, t)| **t == CONTROL)
            .map(|(tok, _)| AddedToken::from(tok.clone(), true))
            .collect();
        tokenizer
            .add_special_tokens(control)
            .map_err(|e| format!("cannot add the control tokens: {e}"))?;
        Ok(Self { tokenizer })
    }

    /// The id of a token, if the vocabulary has it.
    pub fn id(&self, token: &str) -> Option<u32> {
        self.tokenizer.token_to_id(token)
    }

    /// Token ids of `text` (control tokens written in it are recognized).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        self.tokenizer
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| format!("cannot tokenize: {e}"))
    }

    /// The text of `ids` (control tokens left out; unknown ids skipped).
    pub fn decode(&self, ids: &[u32]) -> String {
        self.tokenizer.decode(ids, true).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// What a generator's incremental decoding relies on (smollm's
    /// `Text::settle`): the text of a sequence is the text of a prefix
    /// plus the text of the rest whenever the prefix's text has no
    /// replacement character, and not when the prefix ends inside one.
    #[test]
    fn text_splits_where_characters_end() {
        // "é" is the bytes C3 A9: byte-level tokens "Ã" and "©".
        let bpe = Bpe::new(&strings(&["Ã", "©", "a", "Ġ"]), &[], &[1; 4]).unwrap();
        let ids = [2, 0, 1, 3, 0, 1, 2];
        let whole = bpe.decode(&ids);
        assert_eq!(whole, "aé éa");
        for at in 0..=ids.len() {
            let head = bpe.decode(&ids[..at]);
            let joined = format!("{head}{}", bpe.decode(&ids[at..]));
            assert_eq!(
                joined == whole,
                !head.contains('\u{fffd}'),
                "split at {at}: {head:?}"
            );
        }
    }

    #[test]
    fn a_merge_outside_the_vocabulary_is_an_error_not_a_panic() {
        // The fuzz target's seed that made `tokenizers` panic: "ab c" makes
        // "abc", longer than any token.
        let tokens = strings(&["a", "b", "ab", "c"]);
        let err = Bpe::new(&tokens, &strings(&["a b", "ab c"]), &[1; 4])
            .err()
            .unwrap();
        assert!(err.contains("`ab c`"), "{err}");
        let err = Bpe::new(&tokens, &strings(&["a x"]), &[1; 4])
            .err()
            .unwrap();
        assert!(err.contains("not in the vocabulary"), "{err}");
        let bpe = Bpe::new(&tokens, &strings(&["a b"]), &[1; 4]).unwrap();
        assert_eq!(bpe.encode("abc").unwrap(), vec![2, 3]);
    }
}
