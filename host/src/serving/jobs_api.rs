//! The jobs API under `/v1/jobs` on the admin listener (docs/OPERATIONS.md,
//! "Jobs"; docs/admin-api.json), over [`crate::jobs::Jobs`]:
//!
//! - `POST /v1/jobs`: run a job for a tenant (`deploy:TENANT`); 202 with the
//!   job, recorded before the answer;
//! - `GET /v1/jobs`: the newest jobs the token may read;
//! - `GET /v1/jobs/{id}`: one job — state, exit status or result,
//!   stdout/stderr, timings;
//! - `DELETE /v1/jobs/{id}`: cancel it (`deploy:TENANT`).

use super::admin_api::{json, method_not_allowed, read_json, reject};
use super::admin_tokens::Token;
use super::body::{ResponseBody, error_response};
use crate::jobs::Jobs;
use crate::live::{Caller, Refusal};
use crate::serving::body::RequestBody;
use http::{HeaderValue, Method, Response, StatusCode};
use std::sync::Arc;

/// Answers a request under `/v1/jobs` (`path`).
pub async fn route(
    jobs: &Arc<Jobs>,
    req: http::Request<RequestBody>,
    path: &str,
    token: &Token,
    who: &Caller<'_>,
) -> Response<ResponseBody> {
    let id = path.strip_prefix("/v1/jobs/").filter(|r| !r.is_empty());
    match (id, req.method().clone()) {
        (None, Method::GET) => {
            let may_read = |tenant: &str| token.may_read(tenant);
            match jobs.list(&may_read) {
                Ok(list) => {
                    let list: Vec<_> = list.iter().map(|j| j.public(true)).collect();
                    json(StatusCode::OK, serde_json::json!({ "jobs": list }))
                }
                Err(r) => refused(r),
            }
        }
        (None, Method::POST) => match read_json(req, true).await {
            Ok(body) => match jobs.submit(body, who).await {
                Ok(job) => {
                    let mut r = json(StatusCode::ACCEPTED, job.public(false));
                    if let Ok(v) = HeaderValue::from_str(&format!("/v1/jobs/{}", job.id)) {
                        r.headers_mut().insert(http::header::LOCATION, v);
                    }
                    r
                }
                Err(r) => refused(r),
            },
            Err(r) => reject(r),
        },
        (None, m) => method_not_allowed(&m, "GET, POST"),
        (Some(id), _) if id.contains('/') => error_response(
            StatusCode::NOT_FOUND,
            "not_found",
            "jobs API routes: /v1/jobs, /v1/jobs/{id}",
        ),
        (Some(id), Method::GET) => match jobs.get(id) {
            Ok(job) if token.may_read(&job.tenant) => json(StatusCode::OK, job.public(false)),
            Ok(_) => error_response(
                StatusCode::FORBIDDEN,
                "forbidden",
                &format!("token `{}` may not read job `{id}`", token.id),
            ),
            Err(r) => refused(r),
        },
        (Some(id), Method::DELETE) => match jobs.cancel(id, who).await {
            Ok(job) => json(StatusCode::OK, job.public(false)),
            Err(r) => refused(r),
        },
        (Some(_), m) => method_not_allowed(&m, "GET, DELETE"),
    }
}

fn refused(r: Refusal) -> Response<ResponseBody> {
    let (status, code, message) = match r {
        Refusal::BadSpec(m) => (StatusCode::BAD_REQUEST, "invalid_job", m),
        Refusal::Forbidden(m) => (StatusCode::FORBIDDEN, "forbidden", m),
        Refusal::NotFound(m) => (StatusCode::NOT_FOUND, "not_found", m),
        Refusal::Conflict { message, .. } => (StatusCode::CONFLICT, "conflict", message),
        Refusal::Failed(m) => (StatusCode::UNPROCESSABLE_ENTITY, "job_failed", m),
        Refusal::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", m),
    };
    error_response(status, code, &message)
}
