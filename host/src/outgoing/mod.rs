//! `wasi:http` (wasmtime-wasi-http): the handler types every served
//! component uses, and outgoing requests, denied unless the deployment
//! grants the host (`grants.outgoing-hosts`, `name` or `name:port`).

use crate::assembly::capabilities::{
    Capability, DeploymentEnv, InstanceEnv, InstanceState, ServerEnv,
};
use crate::platform::telemetry::Span;
use anyhow::Result;
use std::sync::Arc;
use wasmtime::component::Linker;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

/// The wasi:http capability (no server-wide state).
pub struct Outgoing;

/// Per-instance wasi:http state.
pub struct OutgoingCtx {
    http: WasiHttpCtx,
    policy: OutgoingPolicy,
}

impl Capability for Outgoing {
    /// The granted hosts, lowercased.
    type Deployment = Arc<[String]>;
    type Instance = OutgoingCtx;

    fn new(_: &ServerEnv) -> Result<Self> {
        Ok(Outgoing)
    }

    fn add_to_linker(linker: &mut Linker<InstanceState>) -> Result<()> {
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker).map_err(anyhow::Error::from)
    }

    fn deployment(&self, env: &DeploymentEnv) -> Result<Arc<[String]>> {
        Ok(env
            .grants
            .outgoing_hosts
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect())
    }

    fn instance(allowed: &Arc<[String]>, _: &InstanceEnv) -> Result<OutgoingCtx> {
        Ok(OutgoingCtx {
            http: WasiHttpCtx::new(),
            policy: OutgoingPolicy {
                allowed: allowed.clone(),
            },
        })
    }
}

impl WasiHttpView for InstanceState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        let ctx = &mut self.caps.outgoing;
        WasiHttpCtxView {
            ctx: &mut ctx.http,
            table: &mut self.table,
            hooks: &mut ctx.policy,
        }
    }
}

/// Outgoing HTTP: denied unless the host is granted.
struct OutgoingPolicy {
    allowed: Arc<[String]>,
}

impl WasiHttpHooks for OutgoingPolicy {
    /// The library's default list, checked without the `Arc` its default
    /// method makes per header (five allocations a request).
    fn is_forbidden_header(&mut self, name: &http::HeaderName) -> bool {
        wasmtime_wasi_http::DEFAULT_FORBIDDEN_HEADERS.contains(name)
    }

    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        http::Response<wasmtime_wasi_http::WasiBody>,
                        Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                    ),
                    wasmtime_wasi_http::Error,
                >,
            > + Send,
    > {
        drop(fut);
        let uri = request.uri();
        let host = uri.host().unwrap_or("").to_ascii_lowercase();
        let with_port = uri.port_u16().map(|p| format!("{host}:{p}"));
        let granted = self
            .allowed
            .iter()
            .any(|a| *a == host || with_port.as_deref() == Some(a.as_str()));
        if !granted {
            tracing::info!(%host, "outgoing request denied: host not granted");
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        // The call is a client span of the request's trace, and the next
        // service continues it (unless the guest set its own traceparent).
        let mut span = Span::child(request.method().as_str().to_string()).client();
        if span.is_recording() {
            span.set_str("http.request.method", request.method().as_str());
            span.set_str("server.address", &host);
            span.set_str("url.path", request.uri().path());
        }
        let mut request = request;
        if !request
            .headers()
            .contains_key(&crate::platform::telemetry::PARENT)
        {
            crate::platform::telemetry::stamp(&span, request.headers_mut());
        }
        Box::new(span.over(async move {
            use http_body_util::BodyExt;
            let (res, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                res.map(BodyExt::boxed_unsync),
                Box::new(io)
                    as Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
            ))
        }))
    }
}
