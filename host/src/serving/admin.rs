//! The admin listener: `/healthz`, `/readyz` (503 while draining; both 503 once every GPU was taken out),
//! Prometheus `/metrics`, and the admin API under `/v1/` ([`super::admin_api`]).

use super::body::{ResponseBody, error_response, full};
use super::connections::{Connections, http_builder};
use super::deployment::Deployment;
use super::listener::Server;
use super::tls::Tls;
use crate::serving::body::RequestBody;
use http::{Request, Response, StatusCode};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::net::TcpListener;

/// Serves `/healthz`, `/readyz` and `/metrics` on the admin listener.
pub async fn serve_admin(
    server: Arc<Server>,
    listener: TcpListener,
    conns: Arc<Connections>,
    tls: Option<Arc<Tls>>,
) {
    let builder = Arc::new(http_builder());
    loop {
        let accepted = conns.accept(&listener).await;
        let server = server.clone();
        conns.spawn(
            &builder,
            None,
            tls.as_deref(),
            accepted,
            move |req: Request<RequestBody>, client| {
                let server = server.clone();
                async move {
                    if req.uri().path().starts_with("/v1/") {
                        let client = client.addr.to_str().unwrap_or_default();
                        super::admin_api::respond(&server, req, client).await
                    } else {
                        admin_response(&server, req.uri().path())
                    }
                }
            },
        );
    }
}

fn admin_response(server: &Server, path: &str) -> Response<ResponseBody> {
    let text = |status: StatusCode, body: String, ctype: &'static str| {
        let mut r = Response::new(full(body));
        *r.status_mut() = status;
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(ctype),
        );
        r
    };
    match path {
        // A GPU taken out is back only in a new process (a context fault
        // poisons every context of this one: docs/DEPLOYMENTS.md "GPUs").
        "/healthz" | "/readyz" if server.live.gpus_out().is_some() => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{}\n", server.live.gpus_out().unwrap_or_default()),
            "text/plain",
        ),
        "/healthz" => text(StatusCode::OK, "ok\n".into(), "text/plain"),
        "/readyz" if server.draining.load(Ordering::Relaxed) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining\n".into(),
            "text/plain",
        ),
        "/readyz" => {
            let router = server.live.router();
            let names: Vec<&str> = router
                .deployments()
                .iter()
                .map(|d: &Arc<Deployment>| d.name.as_str())
                .collect();
            text(
                StatusCode::OK,
                format!("ready: {}\n", names.join(", ")),
                "text/plain",
            )
        }
        "/metrics" => text(
            StatusCode::OK,
            server.metrics.encode(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
        _ => error_response(
            StatusCode::NOT_FOUND,
            "not_found",
            "admin routes: /healthz, /readyz, /metrics, /v1/deployments, /v1/jobs",
        ),
    }
}
