//! A deployment at run time: its pre-instantiated component, grants, limits
//! and metrics, and the handling of one request for it — a fresh instance,
//! or a warm one where the deployment reuses them (`instances.rs`), under the
//! tenant's wall-clock budget and memory cap.

use crate::assembly::capabilities::{DeploymentCapabilities, InstanceEnv, InstanceState};
use crate::assembly::spec::{DeploymentSpec, Instances, Limits, Route, Source};
use crate::platform::metrics::{DeploymentLabel, Metrics, RequestLabels, TraceLabel};
use crate::platform::telemetry;
use crate::serving::body::RequestBody;
use crate::serving::body::{self, Collected, ResponseBody, error_response};
use crate::serving::guest::GuestRun;
use crate::serving::instances::{Discard, Pool, Pools, Warm};
use crate::serving::request_id;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::component::Resource;
use wasmtime::{Engine, Store, Trap};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::{Proxy, ProxyPre};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::p2::types::{HostIncomingRequest, HostResponseOutparam};

/// How long past the deadline a response waits for its guest's verdict.
const TASK_END_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// One deployment, ready to serve.
pub struct Deployment {
    /// Unique name.
    pub name: String,
    /// Tenant its requests run for.
    pub tenant: String,
    /// Which requests it serves.
    pub route: Route,
    /// Its revision (0: the start-up spec; `crate::live`).
    pub revision: u64,
    limits: Limits,
    /// What it runs (a file, a checkout of a registry artifact, or the
    /// embedded world), for the admin API.
    source: String,
    /// Its artifacts' digests ([`Source::digests`]).
    digests: serde_json::Value,
    instances: Instances,
    /// `tenant/name`, for logs.
    who: Arc<str>,
    /// Its spans' `tenant` and `deployment`.
    labels: telemetry::Labels,
    pre: ProxyPre<InstanceState>,
    caps: Arc<DeploymentCapabilities>,
    /// Its idle instances, when it reuses them.
    pool: Option<Arc<Pool>>,
    /// Every deployment's, to make room in a full instance pool.
    pools: Arc<Pools>,
    slots: Option<Arc<Semaphore>>,
    stats: Arc<Stats>,
    metrics: Arc<Metrics>,
}

/// This deployment's metric handles, resolved once.
struct Stats {
    in_flight: Gauge,
    latency: HistogramWithExemplars<TraceLabel>,
    instantiation: Histogram,
    traps: Counter,
    deadline_kills: Counter,
    memory_cap_kills: Counter,
    queued: Gauge,
    /// `requests_total{status="200"}`, resolved on the first 200.
    ok: std::sync::OnceLock<Counter>,
}

/// What the guest task yields: how it ended, and its store after a clean
/// return.
type Finished = (GuestEnd, Option<Store<InstanceState>>);

/// Where the guest's response head arrives.
type AnswerRx = tokio::sync::oneshot::Receiver<
    Result<
        http::Response<HyperOutgoingBody>,
        wasmtime_wasi_http::p2::bindings::http::types::ErrorCode,
    >,
>;

/// A request ready to run: a store holding it and its outparam, with the
/// instance already in it when it is a warm one.
struct Call {
    store: Store<InstanceState>,
    proxy: Option<Proxy>,
    /// Requests the instance served before this one.
    served: u32,
    request: Resource<HostIncomingRequest>,
    outparam: Resource<HostResponseOutparam>,
    answer: Answer,
}

/// What the request's side keeps: where the answer arrives, and what became
/// of the request body.
struct Answer {
    rx: AnswerRx,
    body: Arc<BodyState>,
}

/// What became of a request body while the guest read it.
#[derive(Default)]
struct BodyState {
    /// It went past the deployment's cap (the client gets a 413).
    overflow: AtomicBool,
    /// Reading it failed (past the cap, or the client broke off).
    broken: AtomicBool,
}

/// How a guest's run ended.
#[derive(Debug)]
enum GuestEnd {
    Returned,
    Deadline,
    MemoryCap(String),
    /// The instance pool (`--max-instances`) was full.
    PoolFull,
    Trapped(String),
    HostError(String),
}

impl Deployment {
    /// Writes the host's own audit record of this deployment (an admin API
    /// change) where the deployment keeps its audit bucket (its Redis, else
    /// the server's database), durably.
    pub async fn record_audit(&self, key: String, record: Vec<u8>) -> anyhow::Result<()> {
        self.caps.keyvalue.record_audit(key, record).await
    }

    /// Wraps a prepared component for `spec`, whose capabilities are `caps`
    /// (built by [`crate::assembly::Assembly`]); a reusing deployment keeps
    /// its idle instances in a pool registered with `pools`.
    pub fn new(
        spec: DeploymentSpec,
        pre: ProxyPre<InstanceState>,
        metrics: Arc<Metrics>,
        caps: Arc<DeploymentCapabilities>,
        pools: &Arc<Pools>,
    ) -> Self {
        let label = DeploymentLabel::new(&spec.tenant, &spec.name);
        if let Some(n) = spec.limits.concurrency {
            metrics
                .concurrency_limit
                .get_or_create(&label)
                .set(i64::from(n));
        }
        let stats = Stats {
            in_flight: metrics.in_flight.get_or_create(&label).clone(),
            latency: metrics.latency.get_or_create(&label).clone(),
            instantiation: metrics.instantiation.get_or_create(&label).clone(),
            traps: metrics.traps.get_or_create(&label).clone(),
            deadline_kills: metrics.deadline_kills.get_or_create(&label).clone(),
            memory_cap_kills: metrics.memory_cap_kills.get_or_create(&label).clone(),
            queued: metrics.queued.get_or_create(&label).clone(),
            ok: std::sync::OnceLock::new(),
        };
        let pool = pools.pool(&label, spec.instances, &metrics);
        let source = match &spec.source {
            Source::Component(path) | Source::World(path, _) => path.display().to_string(),
            Source::Embedded(name) => format!("the embedded world `{name}`"),
        };
        Self {
            source,
            digests: spec.source.digests(),
            instances: spec.instances,
            who: format!("{}/{}", spec.tenant, spec.name).into(),
            labels: telemetry::labels(&spec.tenant, &spec.name),
            name: spec.name,
            tenant: spec.tenant,
            route: spec.route,
            revision: 0,
            slots: spec
                .limits
                .concurrency
                .map(|n| Arc::new(Semaphore::new(n as usize))),
            limits: spec.limits,
            pool,
            pools: pools.clone(),
            pre,
            caps,
            stats: Arc::new(stats),
            metrics,
        }
    }

    /// What the admin API shows of it: its spec as running and its counters.
    pub fn describe(&self) -> serde_json::Value {
        let l = &self.limits;
        serde_json::json!({
            "name": self.name,
            "tenant": self.tenant,
            "revision": self.revision,
            "source": self.source,
            "digests": self.digests,
            "route": { "host": self.route.host, "path": self.route.path.as_deref().unwrap_or("/") },
            "limits": {
                "timeout_ms": l.timeout.as_millis() as u64,
                "memory": l.memory,
                "concurrency": l.concurrency,
                "body": l.body,
                "tensor_memory": l.tensor_memory,
            },
            "instances": {
                "reuse": self.instances.reuse,
                "idle_ms": self.instances.idle.as_millis() as u64,
                "idle_now": self.pool.as_ref().map_or(0, |p| p.idle_count()),
            },
            "requests": {
                "in_flight": self.stats.in_flight.get(),
                "ok": self.stats.ok.get().map_or(0, |c| c.get()),
                "traps": self.stats.traps.get(),
                "deadline_kills": self.stats.deadline_kills.get(),
                "memory_cap_kills": self.stats.memory_cap_kills.get(),
            },
        })
    }

    /// Serves one request from `client` and records it. The request carries
    /// an `x-request-id` (the client's when valid, else a new one),
    /// `x-client-addr` and `x-client-identity` into the world; the response
    /// carries the same id.
    pub async fn serve(
        &self,
        engine: &Engine,
        mut req: Request<RequestBody>,
        client: &request_id::Client,
        span: &mut telemetry::Span,
    ) -> Response<ResponseBody> {
        let started = Instant::now();
        let id = request_id::assign(req.headers_mut(), client);
        telemetry::served_by(
            span,
            req.method(),
            &self.labels,
            self.route.path.as_deref().unwrap_or("/"),
            id.to_str().unwrap_or_default(),
        );
        // The world sees the host's span as the caller.
        telemetry::stamp(span, req.headers_mut());
        // A sampled request is its latency bucket's exemplar.
        let exemplar = span.trace_id().map(|trace_id| TraceLabel { trace_id });
        let access = tracing::enabled!(target: "access", tracing::Level::INFO).then(|| {
            let trace = telemetry::trace_id(req.headers()).map(str::to_owned);
            (req.method().clone(), req.uri().path().to_string(), trace)
        });
        self.stats.in_flight.inc();
        // What runs the request makes its spans with the deployment's labels.
        let mut response = telemetry::within(span.cx(), self.run(engine, req, &id)).await;
        request_id::stamp(response.headers_mut(), &id);
        self.stats.in_flight.dec();
        self.stats
            .latency
            .observe(started.elapsed().as_secs_f64(), exemplar);
        self.count(response.status());
        if let Some((method, path, trace_id)) = access {
            tracing::info!(
                target: "access",
                request_id = id.to_str().unwrap_or(""),
                trace_id,
                tenant = %self.tenant,
                deployment = %self.name,
                %method,
                path,
                status = response.status().as_u16(),
                micros = started.elapsed().as_micros() as u64,
                "served"
            );
        }
        response
    }

    /// Counts a response in `requests_total` (the common 200 without a
    /// label lookup).
    fn count(&self, status: StatusCode) {
        let counter = |status: StatusCode| {
            let labels = RequestLabels {
                tenant: self.tenant.clone(),
                deployment: self.name.clone(),
                status: status.as_u16(),
            };
            self.metrics.requests.get_or_create(&labels).clone()
        };
        if status == StatusCode::OK {
            self.stats.ok.get_or_init(|| counter(status)).inc();
        } else {
            counter(status).inc();
        }
    }

    async fn run(
        &self,
        engine: &Engine,
        req: Request<RequestBody>,
        id: &http::HeaderValue,
    ) -> Response<ResponseBody> {
        let started = Instant::now();
        let deadline = tokio::time::Instant::from_std(started) + self.limits.timeout;
        if content_length(&req).is_some_and(|n| n > self.limits.body) {
            return too_large(self.limits.body);
        }
        if let Some(why) = self.caps.tensor.unavailable() {
            return gpu_unavailable(&why);
        }
        let permit = match self.acquire_slot(deadline).await {
            Ok(p) => p,
            Err(r) => return r,
        };
        let call = match self.prepare(engine, req, started) {
            Ok(c) => c,
            Err(r) => return r,
        };
        let failed = Arc::new(AtomicBool::new(false));
        let (mut guest, answer) = self.start(call, permit, deadline, id, failed.clone());
        let response = match self.answer(&mut guest, answer.rx, deadline).await {
            Ok(r) => r,
            Err(r) => return r,
        };
        if answer.body.overflow.load(Ordering::Relaxed) {
            return too_large(self.limits.body);
        }
        self.finish(guest, response, deadline, failed, &answer.body.overflow)
            .await
    }

    /// The store for this request — a warm instance's, renewed for it, or a
    /// fresh one under the deployment's memory cap — with the request's
    /// wall-clock budget, holding the request and its outparam. (The error
    /// is the response to send instead, built once per request.)
    #[allow(clippy::result_large_err)]
    fn prepare(
        &self,
        engine: &Engine,
        req: Request<RequestBody>,
        started: Instant,
    ) -> Result<Call, Response<ResponseBody>> {
        let env = InstanceEnv {
            started,
            budget: Some(self.limits.timeout),
            random_seed: None,
            slot: None,
        };
        // A warm instance on a GPU taken out since is dropped for a fresh one.
        let warm = self.pool.as_ref().and_then(|p| p.take());
        let warm = warm.filter(|w| !w.store.data().caps.tensor.down());
        let (mut store, proxy, served) = match warm {
            Some(warm) => {
                let mut store = warm.store;
                store.data_mut().renew(&env);
                (store, Some(warm.proxy), warm.served)
            }
            None => {
                let state =
                    InstanceState::new(&self.caps, self.limits.memory, &env).map_err(|e| {
                        error_response(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "grant_failed",
                            &format!("{e:#}"),
                        )
                    })?;
                let mut store = Store::new(engine, state);
                store.limiter(|s| &mut s.limiter);
                (store, None, 0)
            }
        };
        // A running guest yields to the runtime every couple of epoch ticks
        // and is interrupted (a trap) past its budget.
        crate::platform::engine::set_wall_deadline(&mut store, Some(started + self.limits.timeout));
        let body = Arc::new(BodyState::default());
        let req = limit_body(req, self.limits.body, body.clone());
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut http = store.data_mut().http();
        let (request, outparam) = http
            .new_incoming_request(Scheme::Http, req)
            .and_then(|r| Ok((r, http.new_response_outparam(tx)?)))
            .map_err(|e| {
                if proxy.is_some()
                    && let Some(pool) = &self.pool
                {
                    pool.discard(Discard::HostError);
                }
                error_response(StatusCode::BAD_REQUEST, "bad_request", &e.to_string())
            })?;
        Ok(Call {
            store,
            proxy,
            served,
            request,
            outparam,
            answer: Answer { rx, body },
        })
    }

    /// Instantiates (unless warm) and runs the guest on its own task
    /// ([`GuestRun`]); it sets `failed` if it ends any way but returning.
    fn start(
        &self,
        call: Call,
        permit: Option<OwnedSemaphorePermit>,
        deadline: tokio::time::Instant,
        id: &http::HeaderValue,
        failed: Arc<AtomicBool>,
    ) -> (GuestRun<Finished>, Answer) {
        let Call {
            mut store,
            mut proxy,
            served,
            request,
            outparam,
            answer,
        } = call;
        let (pre, stats, who) = (self.pre.clone(), self.stats.clone(), self.who.clone());
        let (pool, pools) = (self.pool.clone(), self.pools.clone());
        let body = answer.body.clone();
        let request_id = id.clone();
        let guest = GuestRun::new(telemetry::within(telemetry::current(), async move {
            let _permit = permit;
            let mut room_made = false;
            let run = async {
                let instance = match proxy.take() {
                    Some(warm) => {
                        drop(
                            telemetry::Span::child("reuse").with("instance.served", served as i64),
                        );
                        warm
                    }
                    None => {
                        // Boxed: it is large, and a warm request never runs it.
                        telemetry::Span::child("instantiate")
                            .over(Box::pin(instantiate(
                                &pre,
                                &mut store,
                                &pools,
                                &stats,
                                &mut room_made,
                            )))
                            .await?
                    }
                };
                let handled = handle(&instance, &mut store, request, outparam).await;
                proxy = Some(instance);
                handled
            };
            let result = tokio::time::timeout_at(deadline, run).await;
            // A guest stopped at its deadline never got to its handler's
            // report: count the tensor work it did before it was stopped.
            store.data_mut().caps.tensor.report();
            let end = classify(result, store.data().limiter.hit);
            stats.record(&who, request_id.to_str().unwrap_or_default(), &end);
            if !matches!(end, GuestEnd::Returned) {
                failed.store(true, Ordering::Release);
                if let (Some(pool), Some(why)) = (&pool, end.discard()) {
                    pool.discard(why);
                }
                // Dropping the store ends the guest's body (and outparam).
                return (end, None);
            }
            let (Some(pool), Some(proxy)) = (pool, proxy) else {
                // After a clean return the store goes to whoever finishes
                // the response: dropping it resets the instance's memory,
                // which need not delay the response.
                return (end, Some(store));
            };
            let warm = Warm::new(store, proxy, served + 1);
            keep(&pool, warm, &body, room_made);
            (end, None)
        }));
        (guest, answer)
    }

    /// The guest's response head, or the error response that replaces it.
    async fn answer(
        &self,
        guest: &mut GuestRun<Finished>,
        mut rx: AnswerRx,
        deadline: tokio::time::Instant,
    ) -> Result<http::Response<HyperOutgoingBody>, Response<ResponseBody>> {
        let answer = match guest
            .run_until(tokio::time::timeout_at(deadline, &mut rx))
            .await
        {
            Some(Ok(Ok(answer))) => Some(answer),
            Some(Ok(Err(_))) => None,
            // The guest (detached on drop) stops itself at the same deadline
            // and counts the kill.
            Some(Err(_)) => return Err(deadline_response(&self.limits)),
            // The guest ended: it answered just before, or never will.
            None => rx.try_recv().ok(),
        };
        match answer {
            Some(Ok(response)) => Ok(response),
            Some(Err(code)) => Err(error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "guest_error",
                &format!("the component answered with an error: {code:?}"),
            )),
            None => {
                let end = guest.end().await.map_or(GuestEnd::Returned, |(end, _)| end);
                Err(failure_response(&end, &self.limits))
            }
        }
    }

    /// Collects (or streams) the body alongside the guest; the store is
    /// dropped after the body is sent.
    async fn finish(
        &self,
        mut guest: GuestRun<Finished>,
        response: http::Response<HyperOutgoingBody>,
        deadline: tokio::time::Instant,
        failed: Arc<AtomicBool>,
        overflow: &AtomicBool,
    ) -> Response<ResponseBody> {
        let (parts, guest_body) = response.into_parts();
        let streaming = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("text/event-stream"));
        let collected = guest
            .alongside(body::collect(guest_body, streaming, deadline, failed))
            .await;
        let body = match collected {
            Collected::Complete(bytes) => body::full(bytes),
            Collected::Stream(stream) => stream,
            Collected::Deadline => return deadline_response(&self.limits),
            Collected::Failed(msg) => {
                // The guest is ending (or ends at its deadline): wait for its verdict.
                let end =
                    match tokio::time::timeout_at(deadline + TASK_END_GRACE, guest.end()).await {
                        Ok(Some((end, _))) => end,
                        _ => GuestEnd::Trapped(msg),
                    };
                return failure_response(&end, &self.limits);
            }
        };
        if overflow.load(Ordering::Relaxed) {
            return too_large(self.limits.body);
        }
        let body = match guest.take_finished() {
            Some((_, Some(mut store))) => {
                if store.data_mut().left_behind() {
                    // Tensor memory or CUDA objects the request left are
                    // charged to its tenant: freed before the client hears.
                    drop(store);
                    body
                } else {
                    body::drop_after(body, self.pools.defer_teardown(store))
                }
            }
            _ => body,
        };
        Response::from_parts(parts, body)
    }

    async fn acquire_slot(
        &self,
        deadline: tokio::time::Instant,
    ) -> Result<Option<OwnedSemaphorePermit>, Response<ResponseBody>> {
        let Some(slots) = &self.slots else {
            return Ok(None);
        };
        if let Ok(p) = slots.clone().try_acquire_owned() {
            return Ok(Some(p));
        }
        // Counted as queued while it waits (a client that goes away stops
        // waiting: the guard's drop).
        self.stats.queued.inc();
        let _queued = scopeguard(|| {
            self.stats.queued.dec();
        });
        match tokio::time::timeout_at(deadline, slots.clone().acquire_owned()).await {
            Ok(Ok(p)) => Ok(Some(p)),
            _ => Err(overloaded(
                "the deployment's concurrency limit was reached for the whole request budget",
            )),
        }
    }
}

impl Stats {
    fn record(&self, who: &str, request_id: &str, end: &GuestEnd) {
        match end {
            GuestEnd::Returned => {}
            GuestEnd::PoolFull => {
                tracing::warn!(deployment = who, request_id, "instance pool full")
            }
            GuestEnd::Deadline => {
                self.deadline_kills.inc();
                tracing::warn!(
                    deployment = who,
                    request_id,
                    "guest stopped at its deadline"
                );
            }
            GuestEnd::MemoryCap(msg) => {
                self.traps.inc();
                self.memory_cap_kills.inc();
                tracing::warn!(
                    deployment = who,
                    request_id,
                    "guest died at its memory cap: {msg}"
                );
            }
            GuestEnd::Trapped(msg) => {
                self.traps.inc();
                tracing::warn!(deployment = who, request_id, "guest trapped: {msg}");
            }
            GuestEnd::HostError(msg) => {
                tracing::error!(deployment = who, request_id, "host error: {msg}")
            }
        }
    }
}

impl GuestEnd {
    /// Why an instance that ended this way is not reused (`None`: no
    /// instance was made, or it may be).
    fn discard(&self) -> Option<Discard> {
        match self {
            GuestEnd::Returned | GuestEnd::PoolFull => None,
            GuestEnd::Deadline => Some(Discard::Deadline),
            GuestEnd::MemoryCap(_) => Some(Discard::MemoryCap),
            GuestEnd::Trapped(_) => Some(Discard::Trap),
            GuestEnd::HostError(_) => Some(Discard::HostError),
        }
    }
}

/// Gives `warm` back to `pool` after a clean return, unless the request's
/// body broke, making room for it may have left a partial instance in its
/// store, or the request left tensors or CUDA objects behind.
fn keep(pool: &Pool, mut warm: Warm, body: &BodyState, room_made: bool) {
    if body.broken.load(Ordering::Acquire) {
        pool.discard(Discard::Body);
    } else if room_made {
        pool.discard(Discard::Evicted);
    } else if warm.store.data_mut().left_behind() {
        pool.discard(Discard::HandlesLeft);
    } else {
        pool.give_back(warm);
    }
}

/// Runs the guest's handler in a span of its own, which sums up the
/// `wasi:tensor` work it did (ops, read-backs and their time), reported to
/// the deployment's counters too.
async fn handle(
    instance: &Proxy,
    store: &mut Store<InstanceState>,
    request: Resource<HostIncomingRequest>,
    outparam: Resource<HostResponseOutparam>,
) -> wasmtime::Result<()> {
    let mut span = telemetry::Span::child("wasi:http/incoming-handler.handle");
    let handled = telemetry::within(
        span.cx(),
        instance
            .wasi_http_incoming_handler()
            .call_handle(&mut *store, request, outparam),
    )
    .await;
    let d = store.data_mut().caps.tensor.report();
    if span.is_recording() && d.ops + d.reads > 0 {
        span.set("tensor.ops", d.ops as i64);
        span.set("tensor.op_us", (d.op_nanos / 1000) as i64);
        span.set("tensor.reads", d.reads as i64);
        span.set("tensor.read_us", (d.read_nanos / 1000) as i64);
        span.set("tensor.read_bytes", d.read_bytes as i64);
    }
    handled
}

/// Instantiates `pre` in `store`, timed into `stats`; when the instance
/// pool is full, drops another deployment's (or this one's) longest-idle
/// instance, noting in `room_made` that it did, or waits for an answered
/// request's instance to be torn down, and tries again.
async fn instantiate(
    pre: &ProxyPre<InstanceState>,
    store: &mut Store<InstanceState>,
    pools: &Pools,
    stats: &Stats,
    room_made: &mut bool,
) -> wasmtime::Result<Proxy> {
    let t0 = Instant::now();
    loop {
        let seen = pools.teardowns_done();
        let result = pre.instantiate_async(&mut *store).await;
        if let Err(e) = &result
            && e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
                .is_some()
        {
            if pools.evict_one() {
                *room_made = true;
                continue;
            }
            // An answered request's instance about to be dropped.
            if pools.wait_teardown(seen).await {
                continue;
            }
        }
        stats.instantiation.observe(t0.elapsed().as_secs_f64());
        return result;
    }
}

fn classify(
    result: Result<wasmtime::Result<()>, tokio::time::error::Elapsed>,
    memory_hit: bool,
) -> GuestEnd {
    match result {
        Err(_) => GuestEnd::Deadline,
        Ok(Ok(())) => GuestEnd::Returned,
        Ok(Err(e)) => {
            if e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
                .is_some()
            {
                return GuestEnd::PoolFull;
            }
            if matches!(e.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
                return GuestEnd::Deadline;
            }
            // The innermost cause names the fault ("unknown handle index 3");
            // the outer layers only say that wasm was running.
            let msg = e
                .root_cause()
                .to_string()
                .lines()
                .next()
                .unwrap_or_default()
                .to_string();
            let in_guest = e.downcast_ref::<Trap>().is_some()
                || e.downcast_ref::<wasmtime::WasmBacktrace>().is_some();
            if memory_hit {
                GuestEnd::MemoryCap(msg)
            } else if in_guest {
                // A trap, or a fault the runtime caught on the guest's
                // behalf (a dropped or forged resource handle).
                GuestEnd::Trapped(msg)
            } else {
                GuestEnd::HostError(msg)
            }
        }
    }
}

fn failure_response(end: &GuestEnd, limits: &Limits) -> Response<ResponseBody> {
    let internal = StatusCode::INTERNAL_SERVER_ERROR;
    match end {
        GuestEnd::Deadline => deadline_response(limits),
        GuestEnd::MemoryCap(_) => error_response(
            internal,
            "memory_limit",
            &format!(
                "the component exceeded its memory limit of {}",
                crate::platform::units::format_size(limits.memory)
            ),
        ),
        GuestEnd::Trapped(msg) => error_response(
            internal,
            "guest_trap",
            &format!("the component trapped: {msg}"),
        ),
        GuestEnd::PoolFull => {
            overloaded("the server is running as many instances as it may (--max-instances)")
        }
        GuestEnd::Returned => error_response(
            internal,
            "no_response",
            "the component returned without sending a response",
        ),
        GuestEnd::HostError(msg) => error_response(internal, "host_error", msg),
    }
}

fn deadline_response(limits: &Limits) -> Response<ResponseBody> {
    error_response(
        StatusCode::GATEWAY_TIMEOUT,
        "deadline_exceeded",
        &format!(
            "the component did not finish within its {} budget",
            humantime::format_duration(limits.timeout)
        ),
    )
}

/// A 503 asking the client to retry in a second.
fn overloaded(message: &str) -> Response<ResponseBody> {
    let mut r = error_response(StatusCode::SERVICE_UNAVAILABLE, "overloaded", message);
    r.headers_mut().insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from_static("1"),
    );
    r
}

/// A 503 for a deployment whose GPUs cannot compute (`tensor::gpus`).
fn gpu_unavailable(why: &str) -> Response<ResponseBody> {
    let mut r = error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "gpu_unavailable",
        &format!("this deployment's GPU cannot serve: {why}"),
    );
    r.headers_mut().insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from_static("30"),
    );
    r
}

fn too_large(max: u64) -> Response<ResponseBody> {
    error_response(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        &format!(
            "the request body exceeds the limit of {}",
            crate::platform::units::format_size(max)
        ),
    )
}

/// Runs `f` when dropped.
fn scopeguard<F: FnOnce()>(f: F) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f()
            }
        }
    }
    Guard(Some(f))
}

fn content_length(req: &Request<RequestBody>) -> Option<u64> {
    req.headers()
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Caps the request body at `max` bytes; past it the guest's read fails and
/// `state.overflow` is set so the client gets a 413. Any failed read sets
/// `state.broken`.
fn limit_body(
    req: Request<RequestBody>,
    max: u64,
    state: Arc<BodyState>,
) -> Request<
    impl http_body::Body<Data = bytes::Bytes, Error = wasmtime_wasi_http::Error> + Send + 'static,
> {
    req.map(move |b| {
        Limited::new(b, max as usize).map_err(move |e| {
            state.broken.store(true, Ordering::Release);
            if e.is::<http_body_util::LengthLimitError>() {
                state.overflow.store(true, Ordering::Relaxed);
                wasmtime_wasi_http::Error::HttpRequestBodySize(Some(max))
            } else {
                match e.downcast::<hyper::Error>() {
                    Ok(h) => wasmtime_wasi_http::Error::Hyper(*h),
                    Err(e) => wasmtime_wasi_http::Error::InternalError(Some(e.to_string())),
                }
            }
        })
    })
}
