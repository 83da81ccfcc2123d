//! The serving loop: HTTP/1.1 (keep-alive) and HTTP/2 on one listener, each
//! request routed to its deployment, the admin listener beside it, and a
//! graceful shutdown on SIGINT/SIGTERM that lets in-flight requests finish.

use crate::body::{ResponseBody, error_response, full};
use crate::deployment::Deployment;
use crate::metrics::{Metrics, RequestLabels};
use crate::router::{Router, request_host};
use anyhow::{Context, Result};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use wasmtime::Engine;

/// Everything a request needs, shared by all connections.
pub struct Host {
    /// The engine all components run on.
    pub engine: Engine,
    /// The routing table.
    pub router: Router,
    /// Operator metrics.
    pub metrics: Arc<Metrics>,
    /// Set once shutdown begins (`/readyz` turns 503).
    pub draining: AtomicBool,
}

impl Host {
    async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        client: SocketAddr,
    ) -> Result<Response<ResponseBody>, Infallible> {
        let mut req = req;
        let host = request_host(&req);
        let Some(deployment) = self
            .router
            .route(host.as_deref(), req.uri().path())
            .cloned()
        else {
            self.metrics
                .requests
                .get_or_create(&RequestLabels {
                    deployment: "none".into(),
                    status: 404,
                })
                .inc();
            let id = crate::request_id::assign(req.headers_mut(), client);
            let mut response = error_response(
                StatusCode::NOT_FOUND,
                "no_route",
                &format!("no deployment serves {}", req.uri().path()),
            );
            crate::request_id::stamp(response.headers_mut(), &id);
            return Ok(response);
        };
        Ok(deployment.serve(&self.engine, req, client).await)
    }
}

/// Opens `count` listening sockets on `addr` that share its port
/// (`SO_REUSEPORT`; the kernel spreads connections over them). With port 0
/// the first socket picks the port and the others join it.
pub fn bind_shared(addr: SocketAddr, count: usize) -> Result<Vec<std::net::TcpListener>> {
    let open = |addr: SocketAddr| -> std::io::Result<std::net::TcpListener> {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            None,
        )?;
        socket.set_reuse_address(true)?;
        #[cfg(unix)]
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(1024)?;
        Ok(socket.into())
    };
    let first = open(addr).with_context(|| format!("cannot listen on {addr}"))?;
    let bound = first.local_addr()?;
    let mut all = vec![first];
    for _ in 1..count {
        all.push(open(bound).with_context(|| format!("cannot listen on {bound}"))?);
    }
    Ok(all)
}

/// Serves `listener` until `shutdown` resolves, then drains for up to `grace`.
pub async fn serve(
    host: Arc<Host>,
    listener: TcpListener,
    grace: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let host = host.clone();
                let service = service_fn(move |req| host.clone().handle(req, peer));
                let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!("connection ended: {e}");
                    }
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    host.draining.store(true, Ordering::Relaxed);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(grace) => tracing::warn!("grace period over; closing remaining connections"),
    }
}

/// Serves `/healthz`, `/readyz` and `/metrics` on the admin listener.
pub async fn serve_admin(host: Arc<Host>, listener: TcpListener) {
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let host = host.clone();
        let service = service_fn(move |req: Request<Incoming>| {
            let host = host.clone();
            async move { Ok::<_, Infallible>(admin_response(&host, req.uri().path())) }
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}

fn admin_response(host: &Host, path: &str) -> Response<ResponseBody> {
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
        "/healthz" => text(StatusCode::OK, "ok\n".into(), "text/plain"),
        "/readyz" if host.draining.load(Ordering::Relaxed) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining\n".into(),
            "text/plain",
        ),
        "/readyz" => {
            let names: Vec<&str> = host
                .router
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
            host.metrics.encode(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
        _ => error_response(
            StatusCode::NOT_FOUND,
            "not_found",
            "admin routes: /healthz, /readyz, /metrics",
        ),
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("received SIGINT"),
        _ = term => tracing::info!("received SIGTERM"),
    }
}
