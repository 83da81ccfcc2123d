//! The admin API under `/v1/` on the admin listener (docs/OPERATIONS.md,
//! docs/admin-api.yaml), JSON, authenticated by admin tokens
//! ([`super::admin_tokens`]):
//!
//! - `GET /v1/deployments`, `GET /v1/deployments/{name}`: what the token may read;
//! - `PUT /v1/deployments/{name}`: deploy a spec (a deployment table's keys,
//!   as JSON), new or replacing; `If-Match: REVISION` makes it conditional;
//! - `DELETE /v1/deployments/{name}`: undeploy;
//! - `GET /v1/deployments/{name}/revisions`: its history;
//! - `POST /v1/deployments/{name}/rollback` (`{"revision": N}`, or the one
//!   before): deploy an earlier revision's spec again.
//!
//! Changes go through [`crate::live::Live`]: built before they take
//! traffic, audited, recorded durably, swapped without dropping a request.
//! Jobs (`/v1/jobs`) are [`super::jobs_api`]'s.

use super::admin_tokens::Token;
use super::body::{ResponseBody, error_response, full};
use super::listener::Server;
use crate::live::{Applied, Caller, Live, Refusal};
use crate::serving::body::RequestBody;
use http::{HeaderValue, Method, Response, StatusCode};
use http_body_util::{BodyExt, Limited};

/// Largest request body the admin API reads.
const MAX_BODY: usize = 1 << 20;

/// A request refused before it reaches [`crate::live`]: status, code, message.
pub(super) type Rejected = (StatusCode, &'static str, String);

pub(super) fn reject((status, code, message): Rejected) -> Response<ResponseBody> {
    error_response(status, code, &message)
}

/// Answers a `/v1/…` request from `client`.
pub async fn respond(
    server: &std::sync::Arc<Server>,
    req: http::Request<RequestBody>,
    client: &str,
) -> Response<ResponseBody> {
    let request_id = super::request_id::generate();
    let mut response = route(server, req, client, request_id.to_str().unwrap_or("")).await;
    super::request_id::stamp(response.headers_mut(), &request_id);
    response
}

async fn route(
    server: &std::sync::Arc<Server>,
    req: http::Request<RequestBody>,
    client: &str,
    request_id: &str,
) -> Response<ResponseBody> {
    let Some(token) = server
        .admin_tokens
        .check(req.headers().get(http::header::AUTHORIZATION))
        .cloned()
    else {
        return unauthorized();
    };
    let path = req.uri().path().to_string();
    let may_deploy = |tenant: &str| token.may_deploy(tenant);
    let who = Caller {
        token: &token.id,
        request_id,
        client,
        may_deploy: &may_deploy,
    };
    if path == "/v1/jobs" || path.starts_with("/v1/jobs/") {
        return match &server.jobs {
            Some(jobs) => super::jobs_api::route(jobs, req, &path, &token, &who).await,
            None => error_response(
                StatusCode::NOT_FOUND,
                "not_found",
                "this server runs no jobs",
            ),
        };
    }
    if path == "/v1/deployments" {
        return match *req.method() {
            Method::GET => list(&server.live, &token),
            ref m => method_not_allowed(m, "GET"),
        };
    }
    let rest = path
        .strip_prefix("/v1/deployments/")
        .filter(|r| !r.is_empty());
    match rest.map(|r| r.split_once('/').unwrap_or((r, ""))) {
        Some((name, verb @ ("" | "revisions"))) if req.method() == Method::GET => {
            read(&server.live, &token, name, verb)
        }
        Some((name, verb @ ("" | "rollback"))) => change(&server.live, req, name, verb, &who).await,
        Some((_, "revisions")) => method_not_allowed(req.method(), "GET"),
        _ => error_response(
            StatusCode::NOT_FOUND,
            "not_found",
            "admin API routes: /v1/deployments, /v1/deployments/{name}, /v1/deployments/{name}/revisions, /v1/deployments/{name}/rollback, /v1/jobs, /v1/jobs/{id}",
        ),
    }
}

/// `GET /v1/deployments`: those `token` may read.
fn list(live: &Live, token: &Token) -> Response<ResponseBody> {
    let router = live.router();
    let visible: Vec<_> = router
        .deployments()
        .iter()
        .filter(|d| token.may_read(&d.tenant))
        .map(|d| d.describe())
        .collect();
    json(
        StatusCode::OK,
        serde_json::json!({ "deployments": visible }),
    )
}

/// `GET /v1/deployments/{name}` and `GET …/revisions`.
fn read(live: &Live, token: &Token, name: &str, verb: &str) -> Response<ResponseBody> {
    if live.tenant_of(name).is_some_and(|t| !token.may_read(&t)) {
        return forbidden(&token.id, name);
    }
    let router = live.router();
    let deployed = router.deployments().iter().find(|d| d.name == name);
    match (verb, deployed) {
        ("", Some(d)) => json(StatusCode::OK, d.describe()),
        ("revisions", _) => match live.history(name) {
            Some(h) => json(
                StatusCode::OK,
                serde_json::json!({ "name": name, "revisions": h }),
            ),
            None => not_found(name),
        },
        _ => not_found(name),
    }
}

/// `PUT` and `DELETE /v1/deployments/{name}`, `POST …/rollback`.
async fn change(
    live: &std::sync::Arc<Live>,
    req: http::Request<RequestBody>,
    name: &str,
    verb: &str,
    who: &Caller<'_>,
) -> Response<ResponseBody> {
    let condition = match if_match(&req) {
        Ok(m) => m,
        Err(r) => return reject(r),
    };
    let method = req.method().clone();
    let result = match (&method, verb) {
        (&Method::PUT, "") => match read_json(req, true).await {
            Ok(body) => live.deploy(name, body, condition, who).await,
            Err(r) => return reject(r),
        },
        (&Method::DELETE, "") => live.undeploy(name, condition, who).await,
        (&Method::POST, "rollback") => match read_json(req, false).await.and_then(revision) {
            Ok(to) => live.rollback(name, to, who).await,
            Err(r) => return reject(r),
        },
        (m, "rollback") => return method_not_allowed(m, "POST"),
        (m, _) => return method_not_allowed(m, "GET, PUT, DELETE"),
    };
    answer(name, result)
}

/// The `revision` a rollback body names, if any.
fn revision(body: serde_json::Value) -> Result<Option<u64>, Rejected> {
    match body.get("revision") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| bad_request("`revision` must be a revision number")),
    }
}

fn unauthorized() -> Response<ResponseBody> {
    let mut r = error_response(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "the admin API needs `Authorization: Bearer TOKEN` (the data dir's admin-token)",
    );
    r.headers_mut().insert(
        http::header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer"),
    );
    r
}

pub(super) fn method_not_allowed(method: &Method, allow: &'static str) -> Response<ResponseBody> {
    let mut r = error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        &format!("{method} is not allowed here (allowed: {allow})"),
    );
    r.headers_mut()
        .insert(http::header::ALLOW, HeaderValue::from_static(allow));
    r
}

/// The response to a change.
fn answer(name: &str, result: Result<Applied, Refusal>) -> Response<ResponseBody> {
    match result {
        Ok(applied) => {
            let status = match (&applied.deployment, applied.replaced) {
                (Some(_), false) => StatusCode::CREATED,
                _ => StatusCode::OK,
            };
            let mut body = serde_json::json!({
                "name": name,
                "revision": applied.revision,
                "replaced": applied.replaced,
            });
            match &applied.deployment {
                Some(d) => body["deployment"] = d.describe(),
                None => body["undeployed"] = true.into(),
            }
            let mut r = json(status, body);
            if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", applied.revision)) {
                r.headers_mut().insert(http::header::ETAG, v);
            }
            r
        }
        Err(Refusal::BadSpec(m)) => error_response(StatusCode::BAD_REQUEST, "invalid_spec", &m),
        Err(Refusal::Forbidden(m)) => error_response(StatusCode::FORBIDDEN, "forbidden", &m),
        Err(Refusal::NotFound(m)) => error_response(StatusCode::NOT_FOUND, "not_found", &m),
        Err(Refusal::Failed(m)) => error_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            "deploy_failed",
            &format!("the new revision did not build, so nothing changed: {m}"),
        ),
        Err(Refusal::Unavailable(m)) => {
            error_response(StatusCode::SERVICE_UNAVAILABLE, "unavailable", &m)
        }
        Err(Refusal::Conflict { message, current }) => json(
            StatusCode::CONFLICT,
            serde_json::json!({
                "error": { "code": "conflict", "message": message },
                "current_revision": current,
            }),
        ),
    }
}

/// The `If-Match` revision, if the request has one (`"3"` or `3`).
fn if_match(req: &http::Request<RequestBody>) -> Result<Option<u64>, Rejected> {
    let Some(value) = req.headers().get(http::header::IF_MATCH) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .map(|v| v.trim().trim_matches('"'))
        .and_then(|v| v.parse().ok())
        .map(Some)
        .ok_or_else(|| bad_request("If-Match must be a revision number, e.g. `If-Match: \"3\"`"))
}

/// The body as JSON (an empty body reads as `{}` unless `required`).
pub(super) async fn read_json(
    req: http::Request<RequestBody>,
    required: bool,
) -> Result<serde_json::Value, Rejected> {
    let bytes = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err((
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the admin API reads at most {MAX_BODY} bytes"),
            ));
        }
        Err(e) => return Err(bad_request(&format!("cannot read the body: {e}"))),
    };
    if bytes.iter().all(u8::is_ascii_whitespace) && !required {
        return Ok(serde_json::json!({}));
    }
    serde_json::from_slice(&bytes).map_err(|e| bad_request(&format!("the body is not JSON: {e}")))
}

pub(super) fn bad_request(message: &str) -> Rejected {
    (StatusCode::BAD_REQUEST, "bad_request", message.to_string())
}

fn forbidden(token: &str, name: &str) -> Response<ResponseBody> {
    error_response(
        StatusCode::FORBIDDEN,
        "forbidden",
        &format!("token `{token}` may not read deployment `{name}`"),
    )
}

fn not_found(name: &str) -> Response<ResponseBody> {
    error_response(
        StatusCode::NOT_FOUND,
        "not_found",
        &format!("no deployment `{name}`"),
    )
}

pub(super) fn json(status: StatusCode, value: serde_json::Value) -> Response<ResponseBody> {
    let mut r = Response::new(full(format!("{value}\n")));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}
