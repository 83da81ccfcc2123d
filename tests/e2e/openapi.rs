//! docs/admin-api.json against a live server: every documented operation
//! answers with documented status codes and bodies that match the
//! documented schemas, and nothing answers that the document does not name.

use crate::support::{Server, guest, request, root, scratch};
use serde_json::{Value, json};

/// The document.
fn document() -> Value {
    let text = std::fs::read_to_string(root().join("docs/admin-api.json")).unwrap();
    serde_json::from_str(&text).expect("docs/admin-api.json is JSON")
}

/// The documented path template `path` matches, if any.
fn template<'a>(doc: &'a Value, path: &str) -> Option<&'a str> {
    let parts: Vec<&str> = path.split('/').collect();
    doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .find(|t| {
            let want: Vec<&str> = t.split('/').collect();
            want.len() == parts.len()
                && want
                    .iter()
                    .zip(&parts)
                    .all(|(w, p)| w.starts_with('{') || w == p)
        })
}

/// Checks `v` against `schema` (type, required, properties, items, enum, $ref).
fn conforms(doc: &Value, schema: &Value, v: &Value, at: &str) -> Result<(), String> {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let target = doc
            .pointer(r.trim_start_matches('#'))
            .ok_or(format!("{at}: no {r}"))?;
        return conforms(doc, target, v, at);
    }
    if let Some(t) = schema.get("type") {
        let types: Vec<&str> = match t {
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            t => t.as_str().into_iter().collect(),
        };
        let ok = types.iter().any(|t| match *t {
            "object" => v.is_object(),
            "array" => v.is_array(),
            "string" => v.is_string(),
            "integer" => v.is_u64() || v.is_i64(),
            "boolean" => v.is_boolean(),
            "null" => v.is_null(),
            _ => false,
        });
        if !ok {
            return Err(format!("{at}: {v} is not of type {t}"));
        }
    }
    for key in schema["required"].as_array().into_iter().flatten() {
        if v.get(key.as_str().unwrap()).is_none() {
            return Err(format!("{at}: `{key}` missing in {v}"));
        }
    }
    if let (Some(props), Some(obj)) = (schema["properties"].as_object(), v.as_object()) {
        for (k, s) in props.iter().filter(|(k, _)| obj.contains_key(*k)) {
            conforms(doc, s, &obj[k], &format!("{at}.{k}"))?;
        }
    }
    for (i, x) in v.as_array().into_iter().flatten().enumerate() {
        conforms(doc, &schema["items"], x, &format!("{at}[{i}]"))?;
    }
    match schema["enum"].as_array() {
        Some(e) if !e.contains(v) => Err(format!("{at}: {v} not in {e:?}")),
        _ => Ok(()),
    }
}

/// Makes one call and checks it against the document: (status, body).
fn documented(
    server: &Server,
    doc: &Value,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, Value) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    let resp = request(server.admin, method, path, &headers, body.as_bytes());
    let value: Value = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
    let t = template(doc, path).unwrap_or_else(|| panic!("{method} {path}: undocumented path"));
    let op = &doc["paths"][t][method.to_ascii_lowercase()];
    assert!(op.is_object(), "{method} {t}: undocumented operation");
    let documented = &op["responses"][resp.status.to_string()];
    assert!(
        documented.is_object(),
        "{method} {path}: status {} is not documented ({value})",
        resp.status
    );
    let schema = &documented["content"]["application/json"]["schema"];
    conforms(
        doc,
        schema,
        &value,
        &format!("{method} {path} {}", resp.status),
    )
    .unwrap();
    (resp.status, value)
}

#[test]
fn the_admin_api_answers_as_its_openapi_document_says() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    let dir = scratch("openapi");
    let data = dir.join("data");
    let hello = guest("hello");
    let server = Server::start(
        &[
            hello.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &dir.join("cache"),
    );
    let token = std::fs::read_to_string(data.join("admin-token")).unwrap();
    scripted_calls(&server, &doc, token.trim());
    job_calls(&server, &doc, token.trim());
    nothing_undocumented(&server, &doc, token.trim());
}

/// Each documented operation, with success and refusals.
fn scripted_calls(server: &Server, doc: &Value, token: &str) {
    let hello = guest("hello");
    let t = Some(token);
    let probe = json!({ "tenant": "acme", "component": guest("init_probe"), "route": { "path": "/probe" } }).to_string();
    let calls: &[(Option<&str>, &str, &str, &str, u16)] = &[
        (None, "GET", "/v1/deployments", "", 401),
        (t, "GET", "/v1/deployments", "", 200),
        (t, "GET", "/v1/deployments/hello", "", 200),
        (t, "GET", "/v1/deployments/nope", "", 404),
        (t, "PUT", "/v1/deployments/probe", &probe, 201),
        (t, "PUT", "/v1/deployments/probe", &probe, 200),
        (t, "PUT", "/v1/deployments/probe", "{\"tenant\": 1}", 400),
        (
            t,
            "PUT",
            "/v1/deployments/bad",
            &json!({ "tenant": "acme", "component": guest("guard") }).to_string(),
            422,
        ),
        (
            t,
            "PUT",
            "/v1/deployments/twin",
            &json!({ "tenant": "acme", "component": hello }).to_string(),
            409,
        ),
        (t, "GET", "/v1/deployments/probe/revisions", "", 200),
        (
            t,
            "POST",
            "/v1/deployments/probe/rollback",
            "{\"revision\": 1}",
            200,
        ),
        (
            t,
            "POST",
            "/v1/deployments/probe/rollback",
            "{\"revision\": 99}",
            404,
        ),
        (t, "DELETE", "/v1/deployments/probe", "", 200),
        (t, "DELETE", "/v1/deployments/probe", "", 404),
        (t, "GET", "/v1/deployments/ghost/revisions", "", 404),
    ];
    for (token, method, path, body, want) in calls {
        let (status, value) = documented(server, doc, *token, method, path, body);
        assert_eq!(status, *want, "{method} {path}: {value}");
    }
}

/// The jobs API's operations, with success and refusals.
fn job_calls(server: &Server, doc: &Value, token: &str) {
    let t = Some(token);
    let calc = guest("calc");
    let job =
        |call: &str| json!({ "tenant": "acme", "component": calc, "invoke": call }).to_string();
    let (status, done) = documented(server, doc, t, "POST", "/v1/jobs", &job("add(1, 2)"));
    assert_eq!(status, 202, "{done}");
    let (status, spinning) = documented(server, doc, t, "POST", "/v1/jobs", &job("spin(0)"));
    assert_eq!(status, 202, "{spinning}");
    let (done, spinning) = (
        format!("/v1/jobs/{}", done["id"].as_str().unwrap()),
        format!("/v1/jobs/{}", spinning["id"].as_str().unwrap()),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while documented(server, doc, t, "GET", &done, "").1["state"] != "succeeded" {
        assert!(
            std::time::Instant::now() < deadline,
            "{done} never succeeded"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let calls: &[(Option<&str>, &str, &str, &str, u16)] = &[
        (None, "GET", "/v1/jobs", "", 401),
        (t, "GET", "/v1/jobs", "", 200),
        (t, "POST", "/v1/jobs", "{\"tenant\": \"acme\"}", 400),
        (t, "GET", "/v1/jobs/ghost", "", 404),
        (t, "DELETE", &spinning, "", 200),
        (t, "DELETE", &spinning, "", 409),
        (t, "DELETE", &done, "", 409),
        (t, "DELETE", "/v1/jobs/ghost", "", 404),
    ];
    for (token, method, path, body, want) in calls {
        let (status, value) = documented(server, doc, *token, method, path, body);
        assert_eq!(status, *want, "{method} {path}: {value}");
    }
}

/// Whatever else answers (not 404/405) must be a documented operation; a
/// documented one never answers 405.
fn nothing_undocumented(server: &Server, doc: &Value, token: &str) {
    let paths = [
        "/v1/deployments",
        "/v1/deployments/ghost",
        "/v1/deployments/ghost/revisions",
        "/v1/deployments/ghost/rollback",
        "/v1/deployments/ghost/other",
        "/v1/other",
        "/v1/deployments/ghost/revisions/x",
        "/v1/jobs",
        "/v1/jobs/ghost",
        "/v1/jobs/ghost/x",
    ];
    let auth = format!("Bearer {}", token);
    for path in paths {
        for method in ["GET", "PUT", "POST", "DELETE", "PATCH"] {
            let resp = request(server.admin, method, path, &[("authorization", &auth)], b"");
            let op = template(doc, path).map(|t| &doc["paths"][t][method.to_ascii_lowercase()]);
            let is_documented = op.is_some_and(Value::is_object);
            match resp.status {
                404 | 405 if !is_documented => {}
                405 => panic!("{method} {path}: documented, but 405"),
                s => {
                    assert!(
                        is_documented,
                        "{method} {path}: answers {s}, undocumented: {}",
                        resp.text()
                    );
                    documented(server, doc, Some(token), method, path, "");
                }
            }
        }
    }
}
