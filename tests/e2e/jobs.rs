//! The jobs API: typed calls with WAVE and JSON arguments, `wasi:cli/run`
//! jobs with argv and captured output, refusals, deadlines, cancellation,
//! and jobs that survive a `kill -9`.

use crate::support::{Server, audit_records, guest, request, scratch, token_hash};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

/// One jobs API call: (status, JSON body).
fn call(
    server: &Server,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let auth = format!("Bearer {token}");
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let resp = request(
        server.admin,
        method,
        path,
        &[("authorization", auth.as_str())],
        body.as_bytes(),
    );
    (
        resp.status,
        serde_json::from_slice(&resp.body).unwrap_or(Value::Null),
    )
}

/// Submits `job`; its id.
fn submit(server: &Server, token: &str, job: Value) -> String {
    let (status, body) = call(server, "POST", "/v1/jobs", token, Some(job));
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["state"], "queued", "{body}");
    body["id"].as_str().unwrap().to_string()
}

/// Polls job `id` until `done` holds of it (at most 60 s).
fn wait(server: &Server, token: &str, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let (status, job) = call(server, "GET", &format!("/v1/jobs/{id}"), token, None);
        assert_eq!(status, 200, "{job}");
        if done(&job) {
            return job;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "job never got there: {job}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn ended(job: &Value) -> bool {
    ["succeeded", "failed", "cancelled"].contains(&job["state"].as_str().unwrap_or(""))
}

/// A server (hello) with its own data dir, a `deploy:acme` token `tw_acme`
/// beside the admin token; the server and the admin token.
fn start(data: &Path, cache: &Path) -> (Server, String) {
    std::fs::create_dir_all(data).unwrap();
    let line = format!("acme {} deploy:acme\n", token_hash("tw_acme"));
    std::fs::write(data.join("admin-tokens"), line).unwrap();
    let hello = guest("hello");
    let args = [
        hello.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ];
    let server = Server::start(&args, cache);
    let token = std::fs::read_to_string(data.join("admin-token")).unwrap();
    (server, token.trim().to_string())
}

#[test]
fn typed_calls_and_run_jobs_report_results_output_and_errors() {
    let dir = scratch("jobs-typed");
    let (server, admin) = start(&dir.join("data"), &dir.join("cache"));
    let calc = guest("calc");
    let wave = submit(
        &server,
        "tw_acme",
        json!({"tenant": "acme", "component": calc, "invoke": "add(40, 2)"}),
    );
    let via_json = submit(
        &server,
        "tw_acme",
        json!({"tenant": "acme", "component": calc, "function": "summarize", "arguments": [[1.0, 2.0, 4.5], "xs"]}),
    );
    let mismatch = submit(
        &server,
        "tw_acme",
        json!({"tenant": "acme", "component": calc, "function": "add", "arguments": [1, "two"]}),
    );
    let trap = submit(
        &server,
        "tw_acme",
        json!({"tenant": "acme", "component": calc, "invoke": "boom()"}),
    );
    let run = submit(
        &server,
        "tw_acme",
        json!({"tenant": "acme", "component": guest("matmul-job"), "args": ["16"]}),
    );
    let bad_arg = submit(
        &server,
        "tw_acme",
        json!({"tenant": "acme", "component": guest("matmul-job"), "args": ["sixteen"]}),
    );

    let job = wait(&server, "tw_acme", &wave, ended);
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["result"]["wave"], json!(["ok(42)"]), "{job}");
    assert_eq!(job["result"]["json"], json!([{"ok": 42}]), "{job}");
    assert_eq!(job["attempts"], 1);
    assert!(job["run_ms"].as_u64().is_some(), "{job}");

    let job = wait(&server, "tw_acme", &via_json, ended);
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(
        job["result"]["json"],
        json!([{"count": 3, "mean": 2.5, "label": "xs"}]),
        "{job}"
    );

    let job = wait(&server, "tw_acme", &mismatch, ended);
    assert_eq!(job["state"], "failed", "{job}");
    let error = job["error"].as_str().unwrap();
    assert!(
        error.contains("parameter `b`") && error.contains("expected an integer"),
        "{error}"
    );

    let job = wait(&server, "tw_acme", &trap, ended);
    assert_eq!(job["state"], "failed", "{job}");
    assert!(job["error"].as_str().unwrap().contains("trapped"), "{job}");
    assert!(
        job["stderr"].as_str().unwrap().contains("boom, as asked"),
        "{job}"
    );

    let job = wait(&server, "tw_acme", &run, ended);
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["exit_status"], 0, "{job}");
    assert!(
        job["stdout"].as_str().unwrap().contains("checksum"),
        "{job}"
    );

    let job = wait(&server, "tw_acme", &bad_arg, ended);
    assert_eq!(job["state"], "failed", "{job}");
    assert_ne!(job["exit_status"], 0, "{job}");

    // The list: newest first, without output; the admin token sees them too.
    let (status, list) = call(&server, "GET", "/v1/jobs", &admin, None);
    assert_eq!(status, 200);
    let ids: Vec<&str> = list["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 6, "{list}");
    assert_eq!(ids[0], bad_arg);
    assert!(list["jobs"][0].get("stdout").is_none(), "{list}");
}

#[test]
fn bad_requests_and_wrong_tokens_are_refused_and_nothing_runs() {
    let dir = scratch("jobs-refused");
    let (server, admin) = start(&dir.join("data"), &dir.join("cache"));
    let calc = guest("calc");
    let refused = [
        (
            json!({"tenant": "acme", "component": calc, "invoke": "add(1, 2)", "function": "add"}),
            "not both",
        ),
        (
            json!({"tenant": "acme", "component": calc, "invoke": "add(1, "}),
            "invoke",
        ),
        (
            json!({"tenant": "acme", "component": calc, "arguments": [1]}),
            "`arguments` needs `function`",
        ),
        (json!({"component": calc}), "tenant"),
        (
            json!({"tenant": "acme", "world": "worlds/gateway.wac"}),
            "one component",
        ),
        (
            json!({"tenant": "acme", "component": calc, "args": "x"}),
            "array of strings",
        ),
        (
            json!({"tenant": "acme", "component": calc, "limits": {"memory": "1TiB"}}),
            "limits.memory",
        ),
        (json!([1, 2]), "JSON object"),
    ];
    for (body, says) in refused {
        let (status, answer) = call(&server, "POST", "/v1/jobs", &admin, Some(body.clone()));
        assert_eq!(status, 400, "{body} -> {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{body} -> {message}");
    }
    // Another tenant's job: 403 for the acme token, and it does not see it.
    let body = json!({"tenant": "lab", "component": calc, "invoke": "add(1, 2)"});
    let (status, _) = call(&server, "POST", "/v1/jobs", "tw_acme", Some(body.clone()));
    assert_eq!(status, 403);
    let lab = submit(&server, &admin, body);
    wait(&server, &admin, &lab, ended);
    let (status, _) = call(&server, "GET", &format!("/v1/jobs/{lab}"), "tw_acme", None);
    assert_eq!(status, 403);
    let (_, list) = call(&server, "GET", "/v1/jobs", "tw_acme", None);
    assert_eq!(list["jobs"], json!([]), "{list}");
    let (status, _) = call(
        &server,
        "DELETE",
        &format!("/v1/jobs/{lab}"),
        "tw_acme",
        None,
    );
    assert_eq!(status, 403);
    // No token, an unknown job, a wrong method.
    let (status, _) = call(&server, "GET", "/v1/jobs", "tw_nope", None);
    assert_eq!(status, 401);
    let (status, _) = call(&server, "GET", "/v1/jobs/0000", &admin, None);
    assert_eq!(status, 404);
    let (status, _) = call(&server, "PUT", "/v1/jobs", &admin, None);
    assert_eq!(status, 405);
    // Only the lab job was ever recorded.
    let (_, list) = call(&server, "GET", "/v1/jobs", &admin, None);
    assert_eq!(list["jobs"].as_array().unwrap().len(), 1, "{list}");
}

#[test]
fn deadlines_cancellation_and_restarts() {
    let dir = scratch("jobs-lifecycle");
    let (data, cache) = (dir.join("data"), dir.join("cache"));
    let (server, admin) = start(&data, &cache);
    let calc = guest("calc");
    // Past its deadline: failed, saying so, with the output it printed.
    let timed = submit(
        &server,
        &admin,
        json!({"tenant": "acme", "component": calc, "invoke": "spin(2)", "limits": {"timeout": "500ms"}}),
    );
    let job = wait(&server, &admin, &timed, ended);
    assert_eq!(job["state"], "failed", "{job}");
    assert!(job["error"].as_str().unwrap().contains("timeout"), "{job}");
    assert_eq!(job["stdout"], "line 0\nline 1\n", "{job}");

    // Running (its output visible so far), then the server is killed: it
    // runs again after the restart.
    let spinning = submit(
        &server,
        &admin,
        json!({"tenant": "acme", "component": calc, "invoke": "spin(3)"}),
    );
    wait(&server, &admin, &spinning, |j| {
        j["stdout"] == "line 0\nline 1\nline 2\n"
    });
    server.kill9();
    let (server, admin) = start(&data, &cache);
    let job = wait(&server, &admin, &spinning, |j| {
        j["attempts"] == 2 && j["state"] == "running"
    });
    assert!(job["finished_ms"].is_null(), "{job}");

    // Cancelled: its output so far kept; a second cancel is a conflict.
    let (status, job) = call(
        &server,
        "DELETE",
        &format!("/v1/jobs/{spinning}"),
        "tw_acme",
        None,
    );
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["state"], "cancelled", "{job}");
    let (status, _) = call(
        &server,
        "DELETE",
        &format!("/v1/jobs/{spinning}"),
        "tw_acme",
        None,
    );
    assert_eq!(status, 409);
    let job = wait(&server, &admin, &spinning, ended);
    assert_eq!(job["state"], "cancelled", "{job}");
    assert_eq!(job["stdout"], "line 0\nline 1\nline 2\n", "{job}");

    // Each submit and the cancel were audited, by token, before they took effect.
    let actions: Vec<(String, String)> = audit_records(&data, "acme")
        .iter()
        .map(|r| {
            (
                r["admin"]["action"].as_str().unwrap_or("").to_string(),
                r["token"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let want = |a: &str, t: &str| (a.to_string(), t.to_string());
    assert_eq!(
        actions,
        [
            want("job-submit", "admin"),
            want("job-submit", "admin"),
            want("job-cancel", "acme")
        ],
        "{actions:?}"
    );

    // Finished jobs survive a restart as they were; nothing runs again.
    drop(server);
    let (server, admin) = start(&data, &cache);
    let job = wait(&server, &admin, &timed, ended);
    assert_eq!(
        (job["state"].as_str(), job["attempts"].as_u64()),
        (Some("failed"), Some(1))
    );
    let job = wait(&server, &admin, &spinning, ended);
    assert_eq!(job["state"], "cancelled", "{job}");
}
