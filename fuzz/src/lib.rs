//! Fuzz targets: one function per parser of untrusted bytes, each taking
//! arbitrary bytes and calling the code the host (or a guest component)
//! runs on them. A target passes when it returns; a panic that escapes the
//! code under test, or a broken property it asserts, is a finding.
//!
//! The same functions serve the libFuzzer binary (`src/bin/fuzz.rs`,
//! `fuzz/run.sh`) and the corpus smoke in `tests/smoke.rs`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// A named target.
pub struct Target {
    /// Its name: the folder of its corpus under `fuzz/corpus/`.
    pub name: &'static str,
    /// Runs it on one input.
    pub run: fn(&[u8]),
}

/// Every target.
pub const TARGETS: &[Target] = &[
    Target {
        name: "deployment_file",
        run: deployment_file,
    },
    Target {
        name: "wac_world",
        run: wac_world,
    },
    Target {
        name: "units",
        run: units,
    },
    Target {
        name: "gguf",
        run: gguf,
    },
    Target {
        name: "safetensors",
        run: safetensors,
    },
    Target {
        name: "kernel_declarations",
        run: kernel_declarations,
    },
    Target {
        name: "cuda_launch_args",
        run: cuda_launch_args,
    },
    Target {
        name: "keyvalue",
        run: keyvalue,
    },
    Target {
        name: "gateway_config",
        run: gateway_config,
    },
    Target {
        name: "openai_request",
        run: openai_request,
    },
    Target {
        name: "wordpiece",
        run: wordpiece,
    },
    Target {
        name: "bpe",
        run: bpe,
    },
    Target {
        name: "registry_record",
        run: registry_record,
    },
];

/// The target named `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// Deployment files (`serve FILE.toml`, the admin API's PUT): an error,
/// never a panic.
pub fn deployment_file(data: &[u8]) {
    let Some(text) = text(data) else { return };
    let defaults = tensor_wasm::assembly::spec::Limits {
        timeout: Duration::from_secs(30),
        memory: 1 << 28,
        concurrency: None,
        body: 1 << 20,
        tensor_memory: 1 << 30,
    };
    let _ =
        tensor_wasm::assembly::spec::parse(text, Path::new("/nonexistent/fuzz.toml"), &defaults);
}

/// WAC worlds, composed as `serve world.wac` does (no packages resolve, so
/// this reaches the parser and the resolver's errors). wac-parser asserts
/// on some inputs; the host catches those, as it does here.
pub fn wac_world(data: &[u8]) {
    let Some(text) = text(data) else { return };
    let sources = tensor_wasm::platform::compose::PackageSources::default();
    let _ = tensor_wasm::platform::compose::compose("fuzz.wac", text, &sources, &|_, b| Ok(b));
}

/// Sizes and durations (flags, deployment files).
pub fn units(data: &[u8]) {
    let Some(text) = text(data) else { return };
    let _ = tensor_wasm::platform::units::parse_size(text);
    let _ = tensor_wasm::platform::units::parse_duration(text);
}

/// GGUF weights: header, metadata, tensor index and extents.
pub fn gguf(data: &[u8]) {
    let _ = tensor_wasm::tensor::gguf::parse(data);
}

/// safetensors weights: header JSON, dtypes, offsets, conversion.
pub fn safetensors(data: &[u8]) {
    let _ = tensor_wasm::tensor::weights::read_safetensors(data);
}

/// `// @kernel name(p: kind, q: elem[extent])` declarations of a kernel
/// source.
pub fn kernel_declarations(data: &[u8]) {
    let Some(text) = text(data) else { return };
    if let Ok(sigs) = tensor_wasm::cuda::signature::declared(text) {
        for s in &sigs {
            let _ = s.kinds();
        }
    }
}

/// `wasi:cuda` launch arguments checked against a declared signature: the
/// input is a declaration, a NUL, then 9-byte arguments (a kind byte and 8
/// value bytes). A launch the checks accept must keep every pointer's
/// declared extent inside its buffer.
pub fn cuda_launch_args(data: &[u8]) {
    use tensor_wasm::cuda::signature::{Arg, Signature, check};
    let Some(split) = data.iter().position(|&b| b == 0) else {
        return;
    };
    let Some(decl) = text(&data[..split]) else {
        return;
    };
    let Ok(sig) = Signature::parse(decl) else {
        return;
    };
    let args: Vec<Arg> = data[split + 1..]
        .chunks_exact(9)
        .map(|c| {
            let v = u64::from_le_bytes(c[1..9].try_into().expect("8 bytes"));
            match c[0] % 7 {
                0 => Arg::I32(v as i32),
                1 => Arg::U32(v as u32),
                2 => Arg::I64(v as i64),
                3 => Arg::U64(v),
                4 => Arg::F32(f32::from_bits(v as u32)),
                5 => Arg::F64(f64::from_bits(v)),
                _ => Arg::Pointer {
                    offset: v & 0xffff_ffff,
                    size: v >> 32,
                },
            }
        })
        .collect();
    let _ = check(&sig.kinds(), Some(&sig), &args);
    let _ = check(&sig.kinds(), None, &args);
}

/// Keyvalue batches on the volatile store against a model: keys and values
/// of any bytes, increments of any value; a batch applies whole or not at
/// all, and reads give back what the model holds.
pub fn keyvalue(data: &[u8]) {
    use tensor_wasm::keyvalue::durable::Write;
    use tensor_wasm::keyvalue::volatile::Volatile;
    let store = Volatile::default();
    let table = tensor_wasm::keyvalue::table_name("fuzz", "bucket");
    let mut model: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut rest = data;
    let mut take = |n: usize| -> Option<Vec<u8>> {
        let n = n.min(rest.len());
        let (a, b) = rest.split_at(n);
        rest = b;
        Some(a.to_vec())
    };
    let key_of = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    for _ in 0..64 {
        let Some(head) = take(2) else { break };
        if head.len() < 2 {
            break;
        }
        let (op, len) = (head[0], usize::from(head[1]) % 24);
        let batch: Vec<Write> = (0..=op % 3)
            .filter_map(|i| {
                let key = key_of(take(len % 8 + usize::from(i))?);
                Some(match (op >> 2) % 3 {
                    0 => Write::Set(key, take(len)?),
                    1 => Write::Delete(key),
                    _ => {
                        let d = take(8)?;
                        let mut b = [0u8; 8];
                        b[..d.len()].copy_from_slice(&d);
                        Write::Increment(key, u64::from_le_bytes(b))
                    }
                })
            })
            .collect();
        let mut next = model.clone();
        let mut ok = true;
        for w in &batch {
            match w {
                Write::Set(k, v) => {
                    next.insert(k.clone(), v.clone());
                }
                Write::Delete(k) => {
                    next.remove(k);
                }
                Write::Increment(k, d) => {
                    let now = match next.get(k) {
                        None => Some(0u64),
                        Some(v) => std::str::from_utf8(v).ok().and_then(|s| s.parse().ok()),
                    };
                    match now.and_then(|n| n.checked_add(*d)) {
                        Some(n) => {
                            next.insert(k.clone(), n.to_string().into_bytes());
                        }
                        None => ok = false,
                    }
                }
            }
        }
        let keys: Vec<String> = batch
            .iter()
            .map(|w| match w {
                Write::Set(k, _) | Write::Delete(k) | Write::Increment(k, _) => k.clone(),
            })
            .collect();
        let applied = store.write(&table, batch).is_ok();
        assert_eq!(applied, ok, "the store and the model disagree on a batch");
        if ok {
            model = next;
        }
        let got = store.get_many(&table, &keys);
        let want: Vec<_> = keys.iter().map(|k| model.get(k).cloned()).collect();
        assert_eq!(got, want, "a read differs from the model");
    }
}

/// The gateway's config values: `auth.tokens`, `auth.identities`, scopes,
/// `router.routes`, rate specs.
pub fn gateway_config(data: &[u8]) {
    let Some(text) = text(data) else { return };
    let _ = gatewaykit::identity::parse_tokens(text);
    let _ = gatewaykit::identity::parse_identities(text);
    let _ = gatewaykit::scope::Scope::parse(text);
    let _ = gatewaykit::scope::prefixes(text);
    if let Some(v) = gatewaykit::identity::bearer(text) {
        assert!(!v.is_empty());
    }
    let _ = router::fuzz_routes(text);
    if let Ok(Some((qps, burst))) = ratelimit::fuzz_policy(text) {
        assert!(
            qps.is_finite() && qps > 0.0 && burst > 0,
            "{text:?} gave {qps}/{burst}"
        );
    }
}

/// OpenAI request bodies of every endpoint, up to the model call.
pub fn openai_request(data: &[u8]) {
    let _ = openai::fuzz_requests(data);
}

/// The WordPiece tokenizer (`minilm`'s) on any UTF-8 text, with a small
/// vocabulary; and vocabulary files themselves.
pub fn wordpiece(data: &[u8]) {
    use std::sync::OnceLock;
    static VOCAB: OnceLock<wordpiece::WordPiece> = OnceLock::new();
    let wp = VOCAB.get_or_init(|| {
        let vocab = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\nquick\nbrown\nfox\n##es\n##s\n##ing\na\nb\nc\n##a\n##b\n##c\n.\n,\n!\ncaf\n##é\n東\n京\n🙂\n";
        wordpiece::WordPiece::from_vocab_txt(vocab, 128).expect("the fixed vocabulary parses")
    });
    let Some(text) = text(data) else { return };
    let ids = wp.encode(text);
    assert!(
        ids.len() <= 128,
        "encode gave {} ids past max_len",
        ids.len()
    );
    let _ = wordpiece::WordPiece::from_vocab_txt(text, 16);
}

/// The byte-level BPE tokenizer (`smollm`'s) on any UTF-8 text with a small
/// fixed vocabulary, where decoding must give the text back (byte-level BPE
/// is lossless once no control token is written in it); and vocabularies
/// built from arbitrary lists, as a GGUF file's metadata could hold.
pub fn bpe(data: &[u8]) {
    use std::sync::OnceLock;
    const CONTROL: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
    static FIXED: OnceLock<bpe::Bpe> = OnceLock::new();
    let fixed = FIXED.get_or_init(|| {
        let mut alphabet: Vec<char> = tokenizers::pre_tokenizers::byte_level::ByteLevel::alphabet()
            .into_iter()
            .collect();
        alphabet.sort();
        let mut tokens: Vec<String> = alphabet.iter().map(char::to_string).collect();
        let merges: Vec<String> = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a", "e r", "Ġ 1"]
            .iter()
            .map(|m| m.to_string())
            .collect();
        tokens.extend(merges.iter().map(|m| m.replace(' ', "")));
        let mut types = vec![1; tokens.len()];
        tokens.extend(CONTROL.iter().map(|c| c.to_string()));
        types.extend([3, 3, 3]);
        bpe::Bpe::new(&tokens, &merges, &types).expect("the fixed vocabulary builds")
    });
    let Some(text) = text(data) else { return };
    let ids = fixed.encode(text).expect("byte-level BPE encodes any text");
    if !CONTROL.iter().any(|c| text.contains(c)) {
        assert_eq!(fixed.decode(&ids), text, "decode(encode(text)) != text");
    }
    let _ = fixed.decode(&[u32::MAX, 0, 300]);
    // The same text as a vocabulary: lines are tokens until an empty line,
    // merges after it; token types from the bytes.
    let (tokens, merges) = text.split_once("\n\n").unwrap_or((text, ""));
    let tokens: Vec<String> = tokens.lines().map(str::to_string).collect();
    let merges: Vec<String> = merges.lines().map(str::to_string).collect();
    let types: Vec<i64> = data.iter().map(|b| i64::from(b % 4)).collect();
    if let Ok(built) = bpe::Bpe::new(&tokens, &merges, &types) {
        let ids = built.encode(text).unwrap_or_default();
        let _ = built.decode(&ids);
    }
}

/// Registry records (the config blob of a pulled OCI artifact, and the
/// index file): parsed, their digest and names checked, and their
/// signatures judged by a policy trusting one key. No input carries that
/// key's signature, so none may be admitted as signed by it.
pub fn registry_record(data: &[u8]) {
    use registry::index::Record;
    use std::sync::OnceLock;
    static POLICY: OnceLock<registry::trust::Policy> = OnceLock::new();
    let policy = POLICY.get_or_init(|| {
        let key = registry::keys::SecretKey::generate().expect("a key");
        registry::trust::Policy {
            trusted: vec![(key.public(), "fuzz".into())],
            ..Default::default()
        }
    });
    if let Some(text) = text(data) {
        let _ = registry::name::Name::parse(text);
        let _ = registry::digest::Digest::parse(text);
        let _ = registry::keys::PublicKey::parse(text);
        let _ = registry::oci::Remote::parse(text);
    }
    let Ok(record) = serde_json::from_slice::<Record>(data) else {
        return;
    };
    let _ = record.digest();
    let _ = record.statement();
    if let Ok(signer) = policy.check(&record) {
        panic!("a record no key signed was admitted as signed by {signer}");
    }
}
