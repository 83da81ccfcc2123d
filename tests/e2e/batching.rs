//! Batching across requests (`[deployment.inference]`,
//! worlds/openai-batched.wac): concurrent requests share one long-lived
//! model instance per model component, and each gets what it would get
//! alone, or its own error.

use crate::openai::{EMBEDDER, GENERATOR, TIMEOUT, TOKEN, post, serve_world, tools};
use crate::support::*;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The `[deployment.inference]` line of a batching OpenAI deployment.
pub(crate) const BATCHED: &str = r#"inference = { embeddings = "tensorwasm:minilm", generation = "tensorwasm:smollm", max-batch = 8, window = "50ms" }"#;

/// Sends every `(path, body)` at once, each from a thread of its own.
fn all_at_once(server: &Server, calls: &[(&'static str, Value)]) -> Vec<(u16, Value)> {
    std::thread::scope(|s| {
        let handles: Vec<_> = calls
            .iter()
            .map(|(path, body)| s.spawn(move || post(server, path, body)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn chat(content: &str, max_tokens: u32, extra: Value) -> (&'static str, Value) {
    let mut body = json!({
        "model": GENERATOR,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0,
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    ("/v1/chat/completions", body)
}

fn embed(input: Value) -> (&'static str, Value) {
    ("/v1/embeddings", json!({"model": EMBEDDER, "input": input}))
}

#[test]
fn batched_requests_get_what_they_would_get_alone() {
    let (models, _) = tools();
    let dir = scratch("batching_same");
    let (plain_dir, batched_dir) = (dir.join("plain"), dir.join("batched"));
    std::fs::create_dir_all(&plain_dir).unwrap();
    std::fs::create_dir_all(&batched_dir).unwrap();
    let plain = serve_world(&plain_dir, models, "worlds/openai.wac", 1000, TIMEOUT, "");
    let batched = serve_world(
        &batched_dir,
        models,
        "worlds/openai-batched.wac",
        1000,
        TIMEOUT,
        BATCHED,
    );
    let calls = vec![
        chat("What is the capital of France?", 12, json!({})),
        chat("Write a haiku about the sea.", 24, json!({})),
        chat("List three prime numbers.", 20, json!({"stop": ["3"]})),
        chat(
            "Describe a cat.",
            16,
            json!({"temperature": 0.8, "seed": 7}),
        ),
        chat("Say hello in Spanish.", 9000, json!({})), // past the context: its own 400
        chat("Why is the sky blue?", 18, json!({})),
        embed(json!("Hello world")),
        embed(json!([
            "The quick brown fox.",
            "Café naïve façade — résumé!"
        ])),
        embed(json!([[101, 999_999, 102]])), // a token outside the vocabulary: its own 400
        embed(json!([
            "a",
            "TensorWasm runs GPU work as WebAssembly components.",
            "b c"
        ])),
    ];
    let alone: Vec<(u16, Value)> = calls.iter().map(|(p, b)| post(&plain, p, b)).collect();
    let together = all_at_once(&batched, &calls);
    for (((path, body), (s1, v1)), (s2, v2)) in calls.iter().zip(&alone).zip(&together) {
        assert_eq!(s1, s2, "{path} {body}: {v1} vs {v2}");
        if *s1 != 200 {
            assert_eq!(*s1, 400, "{v1}");
            assert_eq!(v1["error"]["code"], v2["error"]["code"], "{v1} vs {v2}");
            continue;
        }
        assert_eq!(v1["usage"], v2["usage"], "{body}");
        if *path == "/v1/embeddings" {
            for (a, b) in v1["data"]
                .as_array()
                .unwrap()
                .iter()
                .zip(v2["data"].as_array().unwrap())
            {
                let (a, b) = (
                    a["embedding"].as_array().unwrap(),
                    b["embedding"].as_array().unwrap(),
                );
                assert_eq!(a.len(), 384);
                let diff = a
                    .iter()
                    .zip(b)
                    .map(|(x, y)| (x.as_f64().unwrap() - y.as_f64().unwrap()).abs())
                    .fold(0.0, f64::max);
                assert!(diff < 1e-4, "{body}: vectors differ by {diff}");
            }
        } else {
            assert_eq!(v1["choices"], v2["choices"], "{body}");
        }
    }
    // The work was batched: some model call served more than one request.
    let m = batched.metrics();
    for kind in ["kind=\"embeddings\"", "kind=\"generation\""] {
        let calls = metric(&m, "tensorwasm_inference_batch_size_count", &[kind]);
        let served = metric(&m, "tensorwasm_inference_batch_size_sum", &[kind]);
        assert!(
            calls >= 1.0 && served > calls,
            "{kind}: {served} in {calls} calls\n{m}"
        );
        // Each call timed.
        let timed = metric(&m, "tensorwasm_inference_batch_seconds_count", &[kind]);
        let seconds = metric(&m, "tensorwasm_inference_batch_seconds_sum", &[kind]);
        assert!(
            timed == calls && seconds > 0.0,
            "{kind}: {timed} calls timed, {seconds} s\n{m}"
        );
    }
    // Every sequence leaves the batch. The gauge is set by the model's
    // thread after its next step, which can come just after the last
    // response reached its client.
    assert!(
        batch_empties(&batched, Duration::from_secs(5)),
        "sequences left in the batch:\n{}",
        batched.metrics()
    );
}

/// Waits until no sequence is left in the deployment's batch.
fn batch_empties(server: &Server, within: Duration) -> bool {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if metric(&server.metrics(), "tensorwasm_inference_sequences", &[]) == 0.0 {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn sequences_leave_the_batch_when_their_client_leaves_or_their_deadline_passes() {
    let (models, _) = tools();
    let dir = scratch("batching_leave");
    let server = serve_world(
        &dir,
        models,
        "worlds/openai-batched.wac",
        1000,
        r#"timeout = "6s""#,
        BATCHED,
    );
    let long = |stream: bool| {
        let (_, mut body) = chat("Tell me a very long story about a dragon.", 4000, json!({}));
        body["stream"] = json!(stream);
        body.to_string()
    };
    // A streaming client reads its first chunk and hangs up.
    let mut conn = TcpStream::connect(server.addr).unwrap();
    let auth = format!("Bearer {TOKEN}");
    let body = long(true);
    write_request(
        &mut conn,
        "POST",
        "/v1/chat/completions",
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        body.as_bytes(),
        true,
    );
    conn.flush().unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    // The role chunk, then two tokens' chunks.
    let mut events = 0;
    while events < 3 {
        let mut line = String::new();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "the stream ended early"
        );
        events += usize::from(line.starts_with("data: "));
    }
    assert!(
        metric(&server.metrics(), "tensorwasm_inference_sequences", &[]) >= 1.0,
        "the streaming request's sequence is in the batch"
    );
    drop(reader);
    drop(conn);
    assert!(
        batch_empties(&server, Duration::from_secs(5)),
        "the sequence of a client that left is still decoding:\n{}",
        server.metrics()
    );
    // A request past its deadline: 504, and its sequence leaves too.
    let started = Instant::now();
    let r = try_request(
        server.addr,
        "POST",
        "/v1/chat/completions",
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        long(false).as_bytes(),
    )
    .unwrap();
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(
        batch_empties(&server, Duration::from_secs(5)),
        "the sequence of a request past its deadline is still decoding"
    );
    // The batch goes on serving.
    let (status, v) = post(
        &server,
        "/v1/chat/completions",
        &chat("Say hi.", 4, json!({})).1,
    );
    assert_eq!(status, 200, "{v}");
}

#[test]
fn a_batch_past_the_tenants_tensor_quota_fails_its_requests_alone() {
    let (models, _) = tools();
    let dir = scratch("batching_quota");
    let server = serve_world(
        &dir,
        models,
        "worlds/openai-batched.wac",
        1000,
        r#"timeout = "60s", tensor-memory = "16KiB""#,
        BATCHED,
    );
    let calls = vec![
        chat("What is the capital of France?", 8, json!({})),
        chat("Why is the sky blue?", 8, json!({})),
        embed(json!(["The quick brown fox jumps over the lazy dog."])),
    ];
    for (status, v) in all_at_once(&server, &calls) {
        assert_eq!(status, 500, "{v}");
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("quota"), "{v}");
    }
    // Nothing is left charged to the tenant, and the server goes on.
    let m = server.metrics();
    assert_eq!(
        metric(&m, "tensorwasm_tensor_bytes", &["tenant=\"acme\""]),
        0.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "tensorwasm_inference_sequences", &[]),
        0.0,
        "{m}"
    );
    let auth = format!("Bearer {TOKEN}");
    let r = request(
        server.addr,
        "GET",
        "/v1/models",
        &[("authorization", &auth)],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn batching_deployments_are_checked_at_deploy_time() {
    let dir = scratch("batching_checks");
    let world = |w: &str| root().join(w).display().to_string();
    let cases = [
        (
            world("worlds/openai-batched.wac"),
            "",
            "imports tensorwasm:inference/embeddings@0.1.0",
        ),
        (
            world("worlds/openai.wac"),
            BATCHED,
            "does not import tensorwasm:inference/embeddings@0.1.0",
        ),
        (
            world("worlds/openai-batched.wac"),
            r#"inference = { embeddings = "tensorwasm:nope", generation = "tensorwasm:smollm" }"#,
            "`tensorwasm:nope`: no such package",
        ),
        (
            world("worlds/openai-batched.wac"),
            r#"inference = { embeddings = "tensorwasm:smollm", generation = "tensorwasm:smollm" }"#,
            "does not export the batched model interface",
        ),
        (
            world("worlds/openai-batched.wac"),
            r#"inference = { embeddings = "tensorwasm:minilm", max-batch = 0 }"#,
            "`inference.max-batch` must be in 1..=1024",
        ),
    ];
    for (i, (world, extra, want)) in cases.iter().enumerate() {
        let at = dir.join(i.to_string());
        std::fs::create_dir_all(&at).unwrap();
        let file = deployment_file(
            &at,
            &format!(
                "[[deployment]]\nname = \"openai\"\ntenant = \"acme\"\nworld = {world:?}\n{extra}\n"
            ),
        );
        let (code, _, err) = run(&[
            "serve",
            file.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "off",
            "--data-dir",
            at.join("data").to_str().unwrap(),
            "--cache-dir",
            dir.join("cache").to_str().unwrap(),
        ]);
        assert_ne!(code, 0, "case {i} deployed");
        assert!(err.contains(want), "case {i}: want {want:?} in:\n{err}");
    }
}
