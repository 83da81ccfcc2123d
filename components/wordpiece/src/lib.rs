//! BERT WordPiece tokenization for uncased models such as all-MiniLM-L6-v2:
//! the ids Hugging Face `tokenizers` gives with `BertNormalizer` (clean text,
//! CJK characters split, accents stripped, lower case), `BertPreTokenizer`,
//! `WordPiece` (`##` continuations, `[UNK]` for words it cannot split or
//! longer than 100 characters), the special tokens `[PAD] [UNK] [CLS] [SEP]
//! [MASK]` matched in the raw text, `[CLS] … [SEP]` around each sequence and
//! truncation to a maximum length.
//!
//! It computes ids only (no offsets, no alignments), in one pass per input
//! with ASCII fast paths, which makes it many times faster than the general
//! pipeline — it runs inside a WebAssembly guest for every request.
#![deny(missing_docs)]

mod normalize;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// The special tokens matched in the raw text, as `tokenizer.json` adds them.
const SPECIALS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];
/// Longer words become one `[UNK]`.
const MAX_WORD_CHARS: usize = 100;

/// FxHash: vocabulary keys are short strings and nothing here is adversarial
/// to the table's layout (the vocabulary is fixed; inputs only look up).
#[derive(Default)]
struct Fx(u64);

impl Hasher for Fx {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes(c.try_into().expect("8 bytes"));
            self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
    }
}

type Vocab = HashMap<String, u32, BuildHasherDefault<Fx>>;

/// A WordPiece tokenizer over one vocabulary.
pub struct WordPiece {
    vocab: Vocab,
    specials: [u32; 5],
    max_len: usize,
}

/// Why a vocabulary cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VocabError(pub String);

impl std::fmt::Display for VocabError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for VocabError {}

impl WordPiece {
    /// A tokenizer from `vocab.txt` (one token per line, its id the line's
    /// number; a repeated token keeps its last id) giving at most `max_len`
    /// ids per sequence, `[CLS]` and `[SEP]` included.
    pub fn from_vocab_txt(text: &str, max_len: usize) -> Result<Self, VocabError> {
        let mut vocab = Vocab::default();
        for (i, token) in text.lines().enumerate() {
            let id = u32::try_from(i).map_err(|_| VocabError("vocabulary too large".into()))?;
            vocab.insert(token.to_string(), id);
        }
        let mut specials = [0; 5];
        for (slot, name) in specials.iter_mut().zip(SPECIALS) {
            *slot = *vocab
                .get(name)
                .ok_or_else(|| VocabError(format!("the vocabulary has no {name}")))?;
        }
        if max_len < 2 {
            return Err(VocabError(format!(
                "max_len {max_len} leaves no room for [CLS] and [SEP]"
            )));
        }
        Ok(Self {
            vocab,
            specials,
            max_len,
        })
    }

    /// The ids of `text`: `[CLS]`, its tokens (truncated), `[SEP]`.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut ids = vec![self.specials[2]];
        let mut scratch = Scratch::default();
        let mut rest = text;
        while !rest.is_empty() {
            let (before, special, after) = split_special(rest);
            self.encode_plain(before, &mut scratch, &mut ids);
            if let Some(k) = special {
                ids.push(self.specials[k]);
            }
            rest = after;
        }
        ids.truncate(self.max_len - 1);
        ids.push(self.specials[3]);
        ids
    }

    /// Appends the ids of text that holds no special token.
    fn encode_plain(&self, text: &str, scratch: &mut Scratch, ids: &mut Vec<u32>) {
        if text.is_empty() {
            return;
        }
        normalize::normalize(text, &mut scratch.normalized);
        let normalized = std::mem::take(&mut scratch.normalized);
        for word in normalize::words(&normalized) {
            self.encode_word(word, &mut scratch.piece, ids);
        }
        scratch.normalized = normalized;
    }

    /// Greedy longest-match-first split of one word (Hugging Face's order).
    fn encode_word(&self, word: &str, piece: &mut String, ids: &mut Vec<u32>) {
        let unk = self.specials[1];
        if word.len() > MAX_WORD_CHARS && word.chars().count() > MAX_WORD_CHARS {
            ids.push(unk);
            return;
        }
        let first = ids.len();
        let mut start = 0;
        while start < word.len() {
            let mut end = word.len();
            let found = loop {
                let sub = &word[start..end];
                let id = if start == 0 {
                    self.vocab.get(sub)
                } else {
                    piece.clear();
                    piece.push_str("##");
                    piece.push_str(sub);
                    self.vocab.get(piece.as_str())
                };
                if let Some(&id) = id {
                    break Some(id);
                }
                end -= sub.chars().next_back().map_or(1, char::len_utf8);
                if end <= start {
                    break None;
                }
            };
            match found {
                Some(id) => ids.push(id),
                None => {
                    ids.truncate(first);
                    ids.push(unk);
                    return;
                }
            }
            start = end;
        }
    }
}

/// Buffers reused across one input's pieces.
#[derive(Default)]
struct Scratch {
    normalized: String,
    piece: String,
}

/// Splits `text` at its first special token (leftmost; the special tokens are
/// not prefixes of one another, so leftmost is also longest): the text
/// before, which special (index into [`SPECIALS`]), and the rest.
fn split_special(text: &str) -> (&str, Option<usize>, &str) {
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(i) = bytes[from..].iter().position(|&b| b == b'[') {
        let at = from + i;
        for (k, s) in SPECIALS.iter().enumerate() {
            if bytes[at..].starts_with(s.as_bytes()) {
                return (&text[..at], Some(k), &text[at + s.len()..]);
            }
        }
        from = at + 1;
    }
    (text, None, "")
}
