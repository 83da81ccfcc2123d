//! Response bodies: host-made ones, and the guest's, held back until complete
//! (or large, or a stream) so a guest that stalls before finishing still gets
//! its request a clean 504, then streamed under the request's deadline. And
//! the request body, shared with its response ([`RequestBody`]).

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::time::{Instant, Sleep};

/// A boxed error from a body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type of every response the host sends.
pub type ResponseBody = UnsyncBoxBody<Bytes, BoxError>;

/// A request's body, shared between its handler and its response: whoever
/// drops it last drops it, after reading what is left of it, up to
/// [`DRAIN_BYTES`] within [`DRAIN_TIME`]. A handler that answers without
/// reading the body (a 401 to an upload, a 413) drops its share early; the
/// response holds the other until it is sent. Dropped before, an HTTP/2
/// stream would be reset (CANCEL) before the response and the client would
/// lose it; dropped after but unread, h2 resets it with NO_ERROR as RFC 9113
/// §8.1 allows, which clients such as curl before 8.x still report as an
/// error (exit 92) while their upload is unfinished. Read to its end, the
/// stream closes cleanly and an HTTP/1.1 connection stays open.
pub struct RequestBody(Share);

/// Most bytes of an unread request body read (and dropped) after its response.
pub const DRAIN_BYTES: usize = 1 << 20;
/// Longest an unread request body is read after its response.
pub const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// One holder's share of a request body.
pub struct Share(Option<Arc<Mutex<hyper::body::Incoming>>>);

impl Drop for Share {
    fn drop(&mut self) {
        let Some(last) = self.0.take().and_then(Arc::into_inner) else {
            return;
        };
        let mut body = last.into_inner().unwrap_or_else(|p| p.into_inner());
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if body.is_end_stream() {
            return;
        }
        runtime.spawn(async move {
            let mut left = DRAIN_BYTES;
            let drained = async {
                while let Some(Ok(frame)) = body.frame().await {
                    let n = frame.data_ref().map_or(0, Bytes::len);
                    if n > left {
                        return;
                    }
                    left -= n;
                }
            };
            let _ = tokio::time::timeout(DRAIN_TIME, drained).await;
        });
    }
}

impl RequestBody {
    /// `req` with a shared body, and the response's share of it.
    pub fn share(req: http::Request<hyper::body::Incoming>) -> (http::Request<Self>, Share) {
        let (parts, body) = req.into_parts();
        let shared = Arc::new(Mutex::new(body));
        let response = Share(Some(shared.clone()));
        (
            http::Request::from_parts(parts, Self(Share(Some(shared)))),
            response,
        )
    }

    fn body(&self) -> std::sync::MutexGuard<'_, hyper::body::Incoming> {
        let shared = self.0.0.as_ref().expect("taken only on drop");
        shared.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut *self.body()).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body().is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body().size_hint()
    }
}

/// Bytes of a guest's body held back before the response is streamed.
pub const HOLD_BACK: usize = 64 * 1024;

/// A complete body from `bytes`.
pub fn full(bytes: impl Into<Bytes>) -> ResponseBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A JSON error response made by the host: `{"error":{"code","message"}}`.
pub fn error_response(status: StatusCode, code: &str, message: &str) -> Response<ResponseBody> {
    let body = format!(
        "{{\"error\":{{\"code\":\"{code}\",\"message\":{}}}}}\n",
        json_string(message)
    );
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `body`, holding `guard` until the body itself is dropped and then
/// dropping it on a task of its own.
///
/// hyper drops a body as soon as its last frame is buffered, before the
/// flush; dropping a store there (resetting the instance's memory, tens of
/// µs) would delay every response by that much. The task runs after the
/// flush, on the same thread, before that thread reads its next request.
pub fn drop_after<G: Send + Unpin + 'static>(body: ResponseBody, guard: G) -> ResponseBody {
    Guarded {
        body,
        guard: Some(guard),
    }
    .boxed_unsync()
}

struct Guarded<G: Send + 'static> {
    body: ResponseBody,
    guard: Option<G>,
}

impl<G: Send + 'static> Drop for Guarded<G> {
    fn drop(&mut self) {
        // Outside a runtime (shutting down) it is dropped here.
        if let (Some(guard), Ok(runtime)) =
            (self.guard.take(), tokio::runtime::Handle::try_current())
        {
            runtime.spawn(async move { drop(guard) });
        }
    }
}

impl<G: Send + Unpin + 'static> Body for Guarded<G> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// How collecting a guest's body ended.
pub enum Collected {
    /// The whole body arrived.
    Complete(Bytes),
    /// Streaming begins: what was held back, then the rest.
    Stream(ResponseBody),
    /// The deadline passed before the body completed.
    Deadline,
    /// The guest's body failed (it trapped or aborted the body).
    Failed(String),
}

/// Holds back the guest's `body` until it completes, passes [`HOLD_BACK`]
/// bytes, or `stream` is set (e.g. server-sent events), all before `deadline`.
///
/// wasmtime ends a guest's body cleanly even when the guest died before
/// finishing it, so `failed` (set by the guest's task before its store is
/// dropped) tells a finished body from a cut-off one.
pub async fn collect<B>(
    mut body: B,
    stream: bool,
    deadline: Instant,
    failed: Arc<AtomicBool>,
) -> Collected
where
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: std::fmt::Display + Into<BoxError>,
{
    let mut held = BytesMut::new();
    let mut trailers = None;
    let mut ended = false;
    if !stream {
        loop {
            match tokio::time::timeout_at(deadline, body.frame()).await {
                Err(_) => return Collected::Deadline,
                Ok(None) => {
                    ended = true;
                    break;
                }
                Ok(Some(Err(e))) => return Collected::Failed(e.to_string()),
                Ok(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        held.extend_from_slice(&data);
                        if held.len() > HOLD_BACK {
                            break;
                        }
                    }
                    Err(frame) => {
                        trailers = frame.into_trailers().ok();
                        break;
                    }
                },
            }
        }
        if ended && failed.load(Ordering::Acquire) {
            return Collected::Failed("the component died before finishing its body".into());
        }
        if ended {
            return Collected::Complete(held.freeze());
        }
    }
    let prefix = Frame::data(held.freeze());
    let rest = DeadlineBody {
        inner: body,
        failed,
        prefix: Some(prefix),
        trailers,
        sleep: Box::pin(tokio::time::sleep_until(deadline)),
    };
    Collected::Stream(rest.boxed_unsync())
}

/// Streams a body after a held-back prefix, ending it with an error (which
/// aborts the connection) if the deadline passes first.
struct DeadlineBody<B> {
    inner: B,
    failed: Arc<AtomicBool>,
    prefix: Option<Frame<Bytes>>,
    trailers: Option<http::HeaderMap>,
    sleep: Pin<Box<Sleep>>,
}

impl<B> Body for DeadlineBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(prefix) = self.prefix.take()
            && prefix.data_ref().is_none_or(|d| !d.is_empty())
        {
            return Poll::Ready(Some(Ok(prefix)));
        }
        if let Some(trailers) = self.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        if self.sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(
                "request deadline passed while streaming the response".into(),
            )));
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(None) if self.failed.load(Ordering::Acquire) => Poll::Ready(Some(Err(
                "the component died before finishing its body".into(),
            ))),
            other => other.map_err(Into::into),
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
