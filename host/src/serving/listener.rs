//! The serving loop: one single-threaded runtime per serving thread, each
//! accepting HTTP/1.1 (keep-alive) and HTTP/2 on its own `SO_REUSEPORT`
//! listener (a request stays on one thread from accept to response), each
//! request routed to its deployment, the admin listener ([`super::admin`])
//! beside them, and a graceful shutdown on SIGINT/SIGTERM that lets
//! in-flight requests finish.

use super::admin_tokens::AdminTokens;
use super::body::{ResponseBody, error_response};
use super::connections::{Connections, Limits, http_builder};
use super::request_id::Client;
use super::spin;
use super::tls::Tls;
use crate::live::{Live, Unrouted};
use crate::platform::metrics::{Metrics, RequestLabels};
use crate::platform::telemetry;
use crate::serving::body::RequestBody;
use anyhow::{Context, Result};
use http::{Request, Response, StatusCode};
use hyper_util::server::graceful::GracefulShutdown;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use wasmtime::Engine;

/// Everything a request needs, shared by all connections.
pub struct Server {
    /// The engine all components run on.
    pub engine: Engine,
    /// The deployments it serves (changed live through the admin API).
    pub live: Arc<Live>,
    /// Operator metrics.
    pub metrics: Arc<Metrics>,
    /// Set once shutdown begins (`/readyz` turns 503).
    pub draining: AtomicBool,
    /// Who may call the admin API.
    pub admin_tokens: AdminTokens,
    /// The jobs API's jobs (none without an admin listener).
    pub jobs: Option<Arc<crate::jobs::Jobs>>,
}

/// Where and how to listen.
pub struct Listen {
    /// The serving address.
    pub addr: SocketAddr,
    /// The admin address, if any.
    pub admin: Option<SocketAddr>,
    /// Serving threads (each with its own listener and runtime).
    pub threads: usize,
    /// How long in-flight requests may finish after a shutdown signal.
    pub grace: Duration,
    /// How long a serving thread polls after a response before it sleeps
    /// (zero: it sleeps at once; [`super::spin`]).
    pub busy_poll: Duration,
    /// Connection limits of the serving listener (the admin listener's
    /// are the same but for a share of the connections).
    pub limits: Limits,
    /// TLS for both listeners, if any.
    pub tls: Option<Arc<Tls>>,
}

impl Server {
    /// A server over `live`'s deployments, not yet draining.
    pub fn new(
        engine: Engine,
        live: Arc<Live>,
        metrics: Arc<Metrics>,
        admin_tokens: AdminTokens,
        jobs: Option<Arc<crate::jobs::Jobs>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            engine,
            live,
            metrics,
            draining: AtomicBool::new(false),
            admin_tokens,
            jobs,
        })
    }

    /// Binds, serves until SIGINT or SIGTERM, then drains for up to the
    /// grace period and returns.
    pub fn run(self: Arc<Self>, listen: &Listen) -> Result<()> {
        let listeners = bind_shared(listen.addr, listen.threads.max(1))?;
        let admin = listen
            .admin
            .map(|a| bind_shared(a, 1).context("--admin-listen"))
            .transpose()?;
        let scheme = if listen.tls.is_some() {
            "https"
        } else {
            "http"
        };
        tracing::info!(
            "serving on {scheme}://{} ({} threads)",
            listeners[0].local_addr()?,
            listeners.len()
        );
        if let Some(a) = &admin {
            tracing::info!("admin on {scheme}://{}", a[0].local_addr()?);
        }
        let metrics = self.metrics.connections.clone();
        let conns = Connections::new("serving", listen.limits.clone(), metrics.clone());
        let admin_conns = Connections::new(
            "admin",
            Limits {
                max: (listen.limits.max / 16).max(16),
                ..listen.limits.clone()
            },
            metrics,
        );
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut workers = Vec::new();
        for (i, listener) in listeners.into_iter().enumerate() {
            let (server, mut stop, grace) = (self.clone(), stop_rx.clone(), listen.grace);
            let busy_poll = listen.busy_poll;
            let (conns, tls) = (conns.clone(), listen.tls.clone());
            let worker = std::thread::Builder::new()
                .name(format!("serve-{i}"))
                .spawn(move || -> Result<()> {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    rt.block_on(async move {
                        tokio::spawn(timer_floor());
                        if !busy_poll.is_zero() {
                            tokio::spawn(spin::spin_forever(busy_poll));
                        }
                        let listener = TcpListener::from_std(listener)?;
                        let stopped = async move {
                            let _ = stop.wait_for(|s| *s).await;
                        };
                        serve(server, listener, &conns, tls, grace, stopped).await;
                        Ok(())
                    })
                })
                .context("cannot start a serving thread")?;
            workers.push(worker);
        }
        self.control(
            admin.map(|mut a| (a.remove(0), admin_conns)),
            &conns,
            listen,
        )?;
        let _ = stop_tx.send(true);
        for worker in workers {
            match worker.join() {
                Ok(r) => r?,
                Err(_) => anyhow::bail!("a serving thread panicked"),
            }
        }
        tracing::info!("stopped");
        Ok(())
    }

    /// Serves the admin listener until a shutdown signal, then marks the
    /// server draining.
    fn control(
        self: &Arc<Self>,
        admin: Option<(std::net::TcpListener, Arc<Connections>)>,
        conns: &Arc<Connections>,
        listen: &Listen,
    ) -> Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        rt.block_on(async {
            tokio::spawn(conns.clone().sweep_forever());
            if let Some(tls) = &listen.tls {
                tokio::spawn(tls.clone().reload_forever());
            }
            if let Some((admin, admin_conns)) = admin {
                let admin = TcpListener::from_std(admin)?;
                tokio::spawn(admin_conns.clone().sweep_forever());
                tokio::spawn(super::admin::serve_admin(
                    self.clone(),
                    admin,
                    admin_conns,
                    listen.tls.clone(),
                ));
            }
            tokio::spawn(reread_on_hangup(self.live.clone()));
            tokio::spawn(self.live.clone().watch_models());
            shutdown_signal().await;
            self.draining.store(true, Ordering::Relaxed);
            conns.drain();
            tracing::info!(
                "shutting down: no new connections; waiting up to {} for in-flight requests",
                humantime::format_duration(listen.grace)
            );
            anyhow::Ok(())
        })
    }

    /// Serves one request inside its span (`platform::telemetry`).
    ///
    /// Not an `async fn`: one would hold the routing future in its own state
    /// as well as in the box (rustc keeps the temporary), ~6 KiB that hyper
    /// and the layers above copy a few times per request. Here the request's
    /// state is made once, in a box, and what is returned is small.
    fn handle(
        self: Arc<Self>,
        req: Request<RequestBody>,
        client: Client,
    ) -> impl Future<Output = Response<ResponseBody>> + Send + 'static {
        spin::arrived();
        let span = telemetry::request_span(&req, &client.addr);
        let cx = span.cx();
        let route = Box::pin(self.route(req, client, span));
        async move {
            let response = telemetry::within(cx, route).await;
            spin::responded();
            response
        }
    }

    /// Routes a request to its deployment, which serves it, and ends its
    /// span.
    async fn route(
        self: Arc<Self>,
        mut req: Request<RequestBody>,
        client: Client,
        mut span: telemetry::Span,
    ) -> Response<ResponseBody> {
        let routed = match duplicated(req.headers()) {
            Some(name) => Err((
                StatusCode::BAD_REQUEST,
                "duplicate_header",
                format!("the request has more than one `{name}` header"),
            )),
            None => {
                let _span = telemetry::Span::child("route");
                let routed = self.live.route(&req);
                routed.map_err(|why| match why {
                    Unrouted::NoRoute => (
                        StatusCode::NOT_FOUND,
                        "no_route",
                        format!("no deployment serves {}", req.uri().path()),
                    ),
                    Unrouted::Waiting(m) => (StatusCode::SERVICE_UNAVAILABLE, "models_missing", m),
                })
            }
        };
        let mut response = match routed {
            Ok(deployment) => {
                deployment
                    .serve(&self.engine, req, &client, &mut span)
                    .await
            }
            Err((status, code, message)) => self.refuse(&mut req, &client, status, code, &message),
        };
        telemetry::finish(&mut span, &mut response);
        response
    }

    /// The response to a request no deployment serves, counted and carrying
    /// a request id.
    fn refuse(
        &self,
        req: &mut Request<RequestBody>,
        client: &Client,
        status: StatusCode,
        code: &str,
        message: &str,
    ) -> Response<ResponseBody> {
        self.metrics
            .requests
            .get_or_create(&RequestLabels {
                tenant: "none".into(),
                deployment: "none".into(),
                status: status.as_u16(),
            })
            .inc();
        let id = crate::serving::request_id::assign(req.headers_mut(), client);
        let mut response = error_response(status, code, message);
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_static("2"),
            );
        }
        crate::serving::request_id::stamp(response.headers_mut(), &id);
        response
    }
}

/// The first header that a request may carry once at most but carries more
/// often: a component reading one copy and a proxy before us another would
/// disagree on who is calling or which host is asked.
fn duplicated(headers: &http::HeaderMap) -> Option<http::HeaderName> {
    // No name has two values: nothing to look up.
    if headers.len() == headers.keys_len() {
        return None;
    }
    [http::header::AUTHORIZATION, http::header::HOST]
        .into_iter()
        .find(|name| headers.get_all(name).iter().nth(1).is_some())
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

/// Serves `listener` until `shutdown` resolves, then drains for up to `grace`
/// (idle and half-sent connections close at once: [`Connections::drain`]).
async fn serve(
    server: Arc<Server>,
    listener: TcpListener,
    conns: &Arc<Connections>,
    tls: Option<Arc<Tls>>,
    grace: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let builder = Arc::new(http_builder());
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = conns.accept(&listener) => {
                let server = server.clone();
                conns.spawn(&builder, Some(&graceful), tls.as_deref(), accepted, move |req, client| {
                    server.clone().handle(req, client)
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    server.draining.store(true, Ordering::Relaxed);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(grace) => tracing::warn!("grace period over; closing remaining connections"),
    }
}

/// Re-reads the start-up specs on every SIGHUP ([`Live::reread`]).
async fn reread_on_hangup(live: Arc<Live>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hup.recv().await.is_some() {
            tracing::info!("received SIGHUP: reading the start-up specs again");
            for line in live.reread().await {
                tracing::info!("SIGHUP: {line}");
            }
        }
    }
    #[cfg(not(unix))]
    let _ = live;
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
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

/// Keeps a timer due within [`TIMER_FLOOR`] on this thread's runtime, for
/// good. Tokio wakes its driver (an eventfd write and one more turn of the
/// event loop) whenever a new timer is due before every other one; without
/// a nearer timer that is every request's deadline timer on a quiet server.
/// With this one, only deadlines shorter than the floor do.
async fn timer_floor() {
    let mut tick = tokio::time::interval(TIMER_FLOOR);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
    }
}

/// See [`timer_floor`].
const TIMER_FLOOR: Duration = Duration::from_millis(250);
