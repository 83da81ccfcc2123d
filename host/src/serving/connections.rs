//! Connections: how many a listener holds (in all and per client address),
//! how long one may take to send a request's headers or sit idle between
//! requests, and which go first when a listener is full or shutting down.
//!
//! hyper bounds what happens inside a request ([`http_builder`]: header
//! count and size, HTTP/2 streams and resets); this bounds what happens
//! between requests, for HTTP/1.1 and HTTP/2 alike. hyper's own header-read
//! timer is left off: it restarts on every keep-alive wait, so it cannot
//! tell a slow client's headers from an idle connection, and HTTP/2 has no
//! such timer. Here a connection is *busy* while a request of it is being
//! served or its response body is being sent, *reading* from its first
//! byte after being idle until a request starts, and *idle* otherwise; a
//! sweep closes reading connections past the header timeout and idle ones
//! past the idle timeout. A full listener closes its longest-idle
//! connection to take a new one (so a flood of silent connections cannot
//! lock clients out), and refuses the new one only when every connection
//! is busy. Shutdown closes idle and half-sent connections at once and
//! lets busy ones finish.

use super::body::{RequestBody, ResponseBody, Share};
use super::request_id::{self, Client};
use super::tls::{self, Tls};
use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulConnection, GracefulShutdown, Watcher};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// Most header fields in one HTTP/1.1 request (431 above it).
pub const MAX_HEADERS: usize = 100;
/// Most bytes of one request's head, HTTP/1.1 request line and headers
/// or an HTTP/2 header list (431 above it).
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Most concurrent HTTP/2 streams one connection may open.
pub const MAX_STREAMS: u32 = 256;
/// HTTP/2 streams a client may reset before the server accepts them
/// (the "rapid reset" flood) before the connection is closed.
pub const MAX_PENDING_RESETS: usize = 20;
/// HTTP/2 streams the server may reset for a client's protocol errors
/// before the connection is closed.
pub const MAX_ERROR_RESETS: usize = 256;

/// The HTTP/1.1 and HTTP/2 settings of every listener.
pub fn http_builder() -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .keep_alive(true)
        // One `send` of a flattened buffer rather than a `writev` of the
        // head and body: a response is mostly a small head and body, and
        // the copy costs less than the vectored write's kernel path (~3 %
        // more warm-instance requests/s on the development VM, within the
        // lent hosts' noise; docs/PERFORMANCE.md).
        .writev(false)
        .max_headers(MAX_HEADERS)
        .max_buf_size(MAX_HEADER_BYTES.max(8192));
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS)
        .max_pending_accept_reset_streams(MAX_PENDING_RESETS)
        .max_local_error_reset_streams(MAX_ERROR_RESETS)
        .max_header_list_size(MAX_HEADER_BYTES as u32);
    b
}

/// How many connections a listener holds and how long they may wait.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections open at once.
    pub max: usize,
    /// Connections open at once from one client address (none: no limit
    /// of its own; a load balancer or NAT puts many users behind one).
    pub per_client: Option<usize>,
    /// Time from a connection's first byte (or the first byte after an
    /// idle wait) to a complete request head.
    pub header_timeout: Duration,
    /// Time a connection may sit with no request and nothing being sent.
    pub idle_timeout: Duration,
}

/// Why a connection was closed by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Closed {
    /// Its request head did not arrive within the header timeout.
    HeaderTimeout = 1,
    /// It sat idle past the idle timeout.
    IdleTimeout,
    /// The listener (or its client's share) was full: it was the
    /// longest-idle connection, closed to take a new one.
    Evicted,
    /// The listener (or its client's share) was full of busy connections:
    /// it was closed as soon as it was accepted.
    Refused,
    /// Shutdown: it was idle or had sent only part of a request.
    Draining,
    /// Its TLS handshake failed (plain HTTP, an unknown or expired
    /// client certificate, a protocol error).
    TlsFailed,
}

impl Closed {
    /// Every reason, for metrics that exist at 0 from the start.
    pub const ALL: [Closed; 6] = [
        Closed::HeaderTimeout,
        Closed::IdleTimeout,
        Closed::Evicted,
        Closed::Refused,
        Closed::Draining,
        Closed::TlsFailed,
    ];

    /// Its metric label.
    pub fn label(self) -> &'static str {
        match self {
            Closed::HeaderTimeout => "header_timeout",
            Closed::IdleTimeout => "idle_timeout",
            Closed::Evicted => "evicted",
            Closed::Refused => "refused",
            Closed::Draining => "draining",
            Closed::TlsFailed => "tls_failed",
        }
    }

    fn from_u8(v: u8) -> Option<Closed> {
        Closed::ALL.into_iter().find(|c| *c as u8 == v)
    }
}

/// Labels of the connection metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct ClosedLabels {
    /// `serving` or `admin`.
    pub listener: &'static str,
    /// A [`Closed::label`].
    pub reason: &'static str,
}

/// Label of the open-connections gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct ListenerLabel {
    /// `serving` or `admin`.
    pub listener: &'static str,
}

/// The connection metrics, shared by every listener.
#[derive(Clone, Default)]
pub struct ConnectionMetrics {
    /// Connections open now.
    pub open: Family<ListenerLabel, Gauge>,
    /// Connections the server closed, by reason.
    pub closed: Family<ClosedLabels, Counter>,
}

/// One listener's connections (all its serving threads together).
pub struct Connections {
    listener: &'static str,
    limits: Limits,
    epoch: Instant,
    open: Mutex<Open>,
    draining: AtomicBool,
    /// This listener's series of [`ConnectionMetrics`].
    open_gauge: Gauge,
    closed: [Counter; Closed::ALL.len()],
    accept_errors: Mutex<Throttle>,
}

#[derive(Default)]
struct Open {
    next: u64,
    all: HashMap<u64, Arc<Conn>>,
    per_client: HashMap<IpAddr, usize>,
}

/// One connection's state, as the sweep and the limits see it.
pub struct Conn {
    id: u64,
    client: IpAddr,
    /// Requests being served, or whose response is being sent.
    active: AtomicU32,
    /// Bytes arrived since it was last idle, no request started yet.
    reading: AtomicBool,
    /// When it last turned idle, or started reading (ms since `epoch`).
    since: AtomicU64,
    /// Why it was told to close (0: it was not).
    closed: AtomicU8,
    close: Notify,
}

impl Conn {
    fn idle(&self) -> bool {
        self.active.load(Ordering::Acquire) == 0
    }

    fn tell_close(&self, why: Closed) {
        if self
            .closed
            .compare_exchange(0, why as u8, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.close.notify_one();
        }
    }
}

impl Connections {
    /// The connections of the listener named `listener`.
    pub fn new(listener: &'static str, limits: Limits, metrics: ConnectionMetrics) -> Arc<Self> {
        let open_gauge = metrics
            .open
            .get_or_create(&ListenerLabel { listener })
            .clone();
        let closed = Closed::ALL.map(|why| {
            metrics
                .closed
                .get_or_create(&ClosedLabels {
                    listener,
                    reason: why.label(),
                })
                .clone()
        });
        Arc::new(Self {
            listener,
            limits,
            epoch: Instant::now(),
            open: Mutex::new(Open::default()),
            draining: AtomicBool::new(false),
            open_gauge,
            closed,
            accept_errors: Mutex::new(Throttle::default()),
        })
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn count(&self, why: Closed) {
        self.closed[why as usize - 1].inc();
    }

    /// Takes a connection from `client`, closing the longest-idle one of
    /// the listener (or of that client, at its share) to make room; `None`
    /// when every one that would have to go is busy.
    fn admit(&self, client: IpAddr) -> Option<Arc<Conn>> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let from_client = open.per_client.get(&client).copied().unwrap_or(0);
        if let Some(cap) = self.limits.per_client
            && from_client >= cap
            && !self.evict(&open, Some(client))
        {
            return None;
        }
        if open.all.len() >= self.limits.max && !self.evict(&open, None) {
            return None;
        }
        open.next += 1;
        let conn = Arc::new(Conn {
            id: open.next,
            client,
            active: AtomicU32::new(0),
            reading: AtomicBool::new(false),
            since: AtomicU64::new(self.now()),
            closed: AtomicU8::new(0),
            close: Notify::new(),
        });
        open.all.insert(conn.id, conn.clone());
        *open.per_client.entry(client).or_default() += 1;
        self.open_gauge.inc();
        Some(conn)
    }

    /// Tells the longest-idle connection (of `client`, if given) that is
    /// not already closing to close; false if there is none. The count
    /// drops when its task ends, a moment later, so a full listener may
    /// briefly hold one connection more than its limit.
    fn evict(&self, open: &Open, client: Option<IpAddr>) -> bool {
        let victim = open
            .all
            .values()
            .filter(|c| client.is_none_or(|ip| c.client == ip))
            .filter(|c| c.idle() && c.closed.load(Ordering::Acquire) == 0)
            .min_by_key(|c| c.since.load(Ordering::Acquire));
        match victim {
            Some(c) => {
                c.tell_close(Closed::Evicted);
                true
            }
            None => false,
        }
    }

    fn remove(&self, conn: &Conn) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.all.remove(&conn.id);
        if let Some(n) = open.per_client.get_mut(&conn.client) {
            *n -= 1;
            if *n == 0 {
                open.per_client.remove(&conn.client);
            }
        }
        self.open_gauge.dec();
    }

    /// Closes what has waited too long (or, draining, whatever is not
    /// busy). Run every [`SWEEP`] by [`Connections::sweep_forever`].
    fn sweep(&self) {
        let now = self.now();
        let draining = self.draining.load(Ordering::Acquire);
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        for c in open.all.values().filter(|c| c.idle()) {
            let waited = Duration::from_millis(now.saturating_sub(c.since.load(Ordering::Acquire)));
            if draining {
                c.tell_close(Closed::Draining);
            } else if c.reading.load(Ordering::Acquire) {
                if waited > self.limits.header_timeout {
                    c.tell_close(Closed::HeaderTimeout);
                }
            } else if waited > self.limits.idle_timeout {
                c.tell_close(Closed::IdleTimeout);
            }
        }
    }

    /// Sweeps every [`SWEEP`], for good.
    pub async fn sweep_forever(self: Arc<Self>) {
        let mut tick = tokio::time::interval(SWEEP);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.sweep();
        }
    }

    /// Starts the shutdown: idle and half-sent connections close now,
    /// busy ones once their requests are done.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Release);
        self.sweep();
    }

    /// Accepts the listener's next connection that the limits let in.
    /// Failures to accept (out of file descriptors, mostly) are logged at
    /// most once every few seconds, with a count, and an idle connection is
    /// closed to free a descriptor.
    pub async fn accept(&self, listener: &TcpListener) -> (Watched, SocketAddr) {
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => match self.admit(peer.ip()) {
                    Some(conn) => {
                        let _ = stream.set_nodelay(true);
                        let stream = Watched {
                            stream,
                            conn,
                            epoch: self.epoch,
                        };
                        return (stream, peer);
                    }
                    None => {
                        self.count(Closed::Refused);
                        drop(stream);
                    }
                },
                Err(e) => {
                    self.accept_failed(&e);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }

    /// Logs a failed accept (throttled); when it failed for want of file
    /// descriptors, closes an idle connection to free one.
    fn accept_failed(&self, e: &io::Error) {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        #[cfg(unix)]
        let out_of_descriptors = matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
        #[cfg(not(unix))]
        let out_of_descriptors = true;
        if out_of_descriptors {
            self.evict(&open, None);
        }
        let count = open.all.len();
        drop(open);
        let mut throttle = self.accept_errors.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(suppressed) = throttle.ready() {
            tracing::warn!(
                "{} listener: accept failed: {e} ({suppressed} more since the last warning; \
                 {count} connections open, limit {})",
                self.listener,
                self.limits.max
            );
        }
    }

    /// Serves one accepted connection with `handle` on this thread's
    /// runtime until it ends or is told to close, after a TLS handshake
    /// when `tls` is given (bounded by the header timeout, as a request
    /// head is); `graceful` (when given) lets shutdown finish its requests
    /// first. `handle` gets each request and who sent it.
    pub fn spawn<F, Fut>(
        self: &Arc<Self>,
        builder: &Arc<auto::Builder<TokioExecutor>>,
        graceful: Option<&GracefulShutdown>,
        tls: Option<&Tls>,
        (stream, peer): (Watched, SocketAddr),
        handle: F,
    ) where
        F: Fn(Request<RequestBody>, Client) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<ResponseBody>> + Send + 'static,
    {
        let conn = stream.conn.clone();
        let tracked = conn.clone();
        let epoch = self.epoch;
        let builder = builder.clone();
        let watcher = graceful.map(GracefulShutdown::watcher);
        let acceptor = tls.map(Tls::acceptor);
        let this = self.clone();
        let served = async move {
            let addr = request_id::client_value(peer);
            let service = move |client: Client| {
                hyper::service::service_fn(move |req| {
                    let busy = Busy::start(tracked.clone(), epoch);
                    let (req, request_body) = RequestBody::share(req);
                    let response = handle(req, client.clone());
                    async move {
                        let response = response.await;
                        Ok::<_, Infallible>(response.map(|body| {
                            Tracked {
                                body,
                                _busy: Some(busy),
                                _request_body: request_body,
                            }
                            .boxed_unsync()
                        }))
                    }
                })
            };
            match acceptor {
                None => {
                    let client = Client {
                        addr,
                        identity: None,
                    };
                    let served = builder.serve_connection(TokioIo::new(stream), service(client));
                    watched(watcher, served).await
                }
                Some(acceptor) => {
                    let (stream, identity) = match tls::accept(acceptor, stream).await {
                        Ok(accepted) => accepted,
                        Err(e) => {
                            this.count(Closed::TlsFailed);
                            return Err(format!("TLS handshake failed: {e}").into());
                        }
                    };
                    let client = Client { addr, identity };
                    let served = builder.serve_connection(TokioIo::new(stream), service(client));
                    watched(watcher, served).await
                }
            }
        };
        tokio::spawn(self.clone().run(conn, served));
    }

    async fn run(
        self: Arc<Self>,
        conn: Arc<Conn>,
        served: impl Future<Output = Result<(), BoxError>>,
    ) {
        tokio::select! {
            ended = served => {
                if let Err(e) = ended {
                    tracing::debug!("connection ended: {e}");
                }
            }
            _ = conn.close.notified() => {
                if let Some(why) = Closed::from_u8(conn.closed.load(Ordering::Acquire)) {
                    self.count(why);
                }
            }
        }
        self.remove(&conn);
    }
}

/// How often [`Connections::sweep`] runs: the timeouts' resolution.
const SWEEP: Duration = Duration::from_millis(250);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Runs a served connection, under `watcher` (graceful shutdown) if given.
async fn watched<C>(watcher: Option<Watcher>, served: C) -> Result<(), BoxError>
where
    C: GracefulConnection<Error = BoxError>,
{
    match watcher {
        Some(w) => w.watch(served).await,
        None => served.await,
    }
}

/// A log line at most every [`Throttle::EVERY`], counting the ones left out.
#[derive(Default)]
struct Throttle {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    const EVERY: Duration = Duration::from_secs(5);

    /// Whether to log now; if so, how many were left out since the last.
    fn ready(&mut self) -> Option<u64> {
        if self.last.is_some_and(|t| t.elapsed() < Self::EVERY) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(Instant::now());
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// A request being served: the connection is busy until this (moved into
/// the response body) is dropped, which hyper does once the body is sent
/// or the connection ends.
struct Busy {
    conn: Arc<Conn>,
    epoch: Instant,
}

impl Busy {
    fn start(conn: Arc<Conn>, epoch: Instant) -> Self {
        conn.active.fetch_add(1, Ordering::AcqRel);
        conn.reading.store(false, Ordering::Release);
        Busy { conn, epoch }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let now = self.epoch.elapsed().as_millis() as u64;
        self.conn.since.store(now, Ordering::Release);
        self.conn.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its connection busy, and its request's body
/// alive ([`RequestBody`]), while it is sent.
struct Tracked {
    body: ResponseBody,
    _busy: Option<Busy>,
    _request_body: Share,
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = <ResponseBody as Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// An accepted TCP stream that marks its connection *reading* when bytes
/// arrive while it is idle (the start of the next request's head).
pub struct Watched {
    stream: TcpStream,
    conn: Arc<Conn>,
    epoch: Instant,
}

impl Watched {
    /// Reads what has arrived without taking it off the stream.
    pub async fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.peek(buf).await
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before
            && self.conn.idle()
            && !self.conn.reading.load(Ordering::Acquire)
        {
            let now = self.epoch.elapsed().as_millis() as u64;
            self.conn.since.store(now, Ordering::Release);
            self.conn.reading.store(true, Ordering::Release);
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Raises this process's open-file limit to its hard limit (as most
/// servers do at start-up) and returns the limit now in force.
pub fn raise_fd_limit() -> u64 {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit only read and write `lim`.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
                return 1024;
            }
            if lim.rlim_cur < lim.rlim_max {
                let raised = libc::rlimit {
                    rlim_cur: lim.rlim_max,
                    rlim_max: lim.rlim_max,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    lim.rlim_cur = lim.rlim_max;
                }
            }
        }
        lim.rlim_cur
    }
    #[cfg(not(unix))]
    {
        8192
    }
}

/// The default connection limit for a process allowed `fds` open files:
/// three quarters of them (the rest stay for the database, the cache,
/// components, models and the GPU driver), at least 16.
pub fn default_max_connections(fds: u64) -> usize {
    (fds.saturating_mul(3) / 4).clamp(16, 1 << 20) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conns(max: usize, per_client: Option<usize>) -> Arc<Connections> {
        Connections::new(
            "serving",
            Limits {
                max,
                per_client,
                header_timeout: Duration::from_secs(10),
                idle_timeout: Duration::from_secs(60),
            },
            ConnectionMetrics::default(),
        )
    }

    #[test]
    fn a_full_listener_closes_its_longest_idle_connection_and_refuses_when_all_are_busy() {
        let c = conns(2, None);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let a = c.admit(ip).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        let b = c.admit(ip).unwrap();
        let third = c.admit(ip).expect("room made by closing an idle one");
        assert_eq!(a.closed.load(Ordering::Acquire), Closed::Evicted as u8);
        assert_eq!(b.closed.load(Ordering::Acquire), 0);
        c.remove(&a);
        b.active.store(1, Ordering::Release);
        third.active.store(1, Ordering::Release);
        assert!(c.admit(ip).is_none(), "every connection is busy");
    }

    #[test]
    fn a_client_at_its_share_loses_its_own_idle_connections_not_others() {
        let c = conns(100, Some(1));
        let (x, y): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let from_y = c.admit(y).unwrap();
        let first = c.admit(x).unwrap();
        first.active.store(1, Ordering::Release);
        assert!(c.admit(x).is_none(), "x's only connection is busy");
        first.active.store(0, Ordering::Release);
        assert!(c.admit(x).is_some());
        assert_eq!(first.closed.load(Ordering::Acquire), Closed::Evicted as u8);
        assert_eq!(from_y.closed.load(Ordering::Acquire), 0);
    }

    #[test]
    fn the_sweep_closes_slow_heads_and_idle_connections_and_draining_closes_the_rest_but_busy() {
        let c = Connections::new(
            "serving",
            Limits {
                max: 10,
                per_client: None,
                header_timeout: Duration::from_millis(20),
                idle_timeout: Duration::from_millis(200),
            },
            ConnectionMetrics::default(),
        );
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let (slow, idle, busy, fresh) = (
            c.admit(ip).unwrap(),
            c.admit(ip).unwrap(),
            c.admit(ip).unwrap(),
            c.admit(ip).unwrap(),
        );
        slow.reading.store(true, Ordering::Release);
        busy.active.store(1, Ordering::Release);
        std::thread::sleep(Duration::from_millis(50));
        c.sweep();
        assert_eq!(
            slow.closed.load(Ordering::Acquire),
            Closed::HeaderTimeout as u8
        );
        assert_eq!(idle.closed.load(Ordering::Acquire), 0);
        std::thread::sleep(Duration::from_millis(200));
        c.sweep();
        assert_eq!(
            idle.closed.load(Ordering::Acquire),
            Closed::IdleTimeout as u8
        );
        assert_eq!(
            busy.closed.load(Ordering::Acquire),
            0,
            "busy connections never time out"
        );
        fresh.since.store(c.now(), Ordering::Release);
        fresh.closed.store(0, Ordering::Release);
        c.drain();
        assert_eq!(fresh.closed.load(Ordering::Acquire), Closed::Draining as u8);
        assert_eq!(busy.closed.load(Ordering::Acquire), 0);
    }

    #[test]
    fn accept_failures_are_logged_at_most_every_few_seconds_with_a_count() {
        let mut t = Throttle::default();
        assert_eq!(t.ready(), Some(0));
        assert_eq!(t.ready(), None);
        assert_eq!(t.ready(), None);
        t.last = Some(Instant::now() - Throttle::EVERY);
        assert_eq!(t.ready(), Some(2));
    }

    #[test]
    fn the_default_limit_leaves_a_quarter_of_the_descriptors() {
        assert_eq!(default_max_connections(256), 192);
        assert_eq!(default_max_connections(4), 16);
    }
}
