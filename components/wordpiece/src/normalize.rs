//! `BertNormalizer` (clean text, CJK split, NFD with non-spacing marks
//! removed, lower case) and `BertPreTokenizer` (split on whitespace, isolate
//! punctuation), in that order, as Hugging Face `tokenizers` 0.23 applies them.

use unicode_categories::UnicodeCategories;
use unicode_normalization_alignments::UnicodeNormalization;

/// Normalizes `text` into `out` (cleared first).
pub fn normalize(text: &str, out: &mut String) {
    out.clear();
    if text.is_ascii() {
        // ASCII: no CJK, NFD is the identity and there are no marks; the
        // other control characters (vertical tab and form feed among them)
        // are dropped before whitespace becomes a space.
        out.reserve(text.len());
        for b in text.bytes() {
            match b {
                b'\t' | b'\n' | b'\r' | b' ' => out.push(' '),
                0x00..=0x1f | 0x7f => {}
                _ => out.push(b.to_ascii_lowercase() as char),
            }
        }
        return;
    }
    // 1. Clean text and space out CJK characters.
    let mut cleaned = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c == '\0' || c == '\u{fffd}' || is_control(c) {
            continue;
        }
        if is_whitespace(c) {
            cleaned.push(' ');
        } else if is_chinese_char(c) {
            cleaned.push(' ');
            cleaned.push(c);
            cleaned.push(' ');
        } else {
            cleaned.push(c);
        }
    }
    // 2. NFD, non-spacing marks dropped, then lower case.
    for (c, _) in cleaned.as_str().nfd() {
        if c.is_mark_nonspacing() {
            continue;
        }
        if c.is_ascii() {
            out.push(c.to_ascii_lowercase());
        } else {
            out.extend(c.to_lowercase());
        }
    }
}

/// The words of normalized text: split on whitespace (dropped), each
/// punctuation character a word of its own.
pub fn words(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        rest = rest.trim_start_matches(char::is_whitespace);
        let mut chars = rest.char_indices();
        let (_, first) = chars.next()?;
        let end = if is_punctuation(first) {
            first.len_utf8()
        } else {
            chars
                .find(|&(_, c)| c.is_whitespace() || is_punctuation(c))
                .map_or(rest.len(), |(i, _)| i)
        };
        let (word, tail) = rest.split_at(end);
        rest = tail;
        Some(word)
    })
}

fn is_whitespace(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || c.is_whitespace()
}

fn is_control(c: char) -> bool {
    !matches!(c, '\t' | '\n' | '\r') && c.is_other()
}

fn is_punctuation(c: char) -> bool {
    // Every ASCII character of a Unicode punctuation category is ASCII
    // punctuation, so ASCII needs no table look-up.
    if c.is_ascii() {
        c.is_ascii_punctuation()
    } else {
        c.is_punctuation()
    }
}

fn is_chinese_char(c: char) -> bool {
    matches!(
        c as u32,
        0x4E00..=0x9FFF
            | 0x3400..=0x4DBF
            | 0x20000..=0x2A6DF
            | 0x2A700..=0x2B73F
            | 0x2B740..=0x2B81F
            | 0x2B920..=0x2CEAF
            | 0xF900..=0xFAFF
            | 0x2F800..=0x2FA1F
    )
}
