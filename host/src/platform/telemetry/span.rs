//! Our spans: a span is a plain value; dropped, it is encoded as OTLP
//! (`otlp`) on the thread that ends it and joins the export queue.
//!
//! Why not `tracing` spans through `tracing-opentelemetry`: that path made
//! each span three times (a registry entry, an OTel span builder, an SDK
//! span) and cost ~7 µs a span on the serving threads — a traced gateway
//! request paid a third of its CPU for its five spans. Here a span is one
//! box (reused: a thread keeps those of the spans it ended), its attributes
//! a `Vec`, and "current" a thread-local pair of
//! ids, set while a scoped future is polled ([`within`]) or a guard lives
//! ([`Span::enter`]). Attributes are encoded as OTLP when set (no value is
//! kept). Nothing is made when traces are off or a request is not sampled:
//! a child is made only under a current span.

use super::export::Queue;
use crate::platform::hex;
use opentelemetry::Value;
use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::SystemTime;

/// Where ended spans go, set once when traces start.
pub(super) static QUEUE: OnceLock<Arc<Queue>> = OnceLock::new();
/// Whether per-op `wasi:tensor` spans are made (`--trace-tensor-ops`).
pub(super) static VERBOSE: AtomicBool = AtomicBool::new(false);

thread_local! {
    static CURRENT: RefCell<Option<Cx>> = const { RefCell::new(None) };
}

/// A deployment's `tenant` and `deployment` attributes, which every span
/// under its requests carries: encoded as OTLP once per deployment, so a
/// span pays one reference count and one copy of bytes for them.
#[derive(Debug, Clone, PartialEq)]
pub struct Labels(pub(super) Arc<[u8]>);

/// Makes a deployment's [`Labels`].
pub fn labels(tenant: &str, deployment: &str) -> Labels {
    Labels(super::otlp::attributes(&[("tenant", tenant), ("deployment", deployment)]).into())
}

/// The ids of a span, as its children and the W3C headers need them, and
/// the labels its children inherit.
#[derive(Debug, Clone, PartialEq)]
pub struct Cx {
    pub(super) trace: u128,
    pub(super) span: u64,
    pub(super) labels: Option<Labels>,
}

/// The span current on this thread, if any.
pub fn current() -> Option<Cx> {
    CURRENT.with_borrow(Clone::clone)
}

/// Runs `f` with `cx` as the current span (on another thread, say).
pub fn with_current<T>(cx: Option<Cx>, f: impl FnOnce() -> T) -> T {
    let _guard = Entered(CURRENT.replace(cx));
    f()
}

/// Polls `fut` with `cx` as the current span.
pub fn within<F: Future>(cx: Option<Cx>, fut: F) -> Within<F> {
    Within { cx, fut }
}

pin_project_lite::pin_project! {
    /// A future polled with a span current ([`within`]).
    pub struct Within<F> {
        cx: Option<Cx>,
        #[pin]
        fut: F,
    }
}

impl<F: Future> Future for Within<F> {
    type Output = F::Output;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        // Lent to the thread while polled, taken back after: no clone (and
        // no reference count) per poll.
        let lent = Lent {
            before: CURRENT.replace(this.cx.take()),
            home: this.cx,
        };
        let out = this.fut.poll(cx);
        drop(lent);
        out
    }
}

/// Takes a [`Within`]'s span back from the thread (also on unwind).
struct Lent<'a> {
    before: Option<Cx>,
    home: &'a mut Option<Cx>,
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        *self.home = CURRENT.replace(self.before.take());
    }
}

/// Restores the span that was current before.
pub struct Entered(Option<Cx>);

impl Drop for Entered {
    fn drop(&mut self) {
        CURRENT.set(self.0.take());
    }
}

/// A span being recorded, or nothing (traces off, not sampled, no parent);
/// it ends when dropped.
#[derive(Default)]
pub struct Span(Option<Box<Open>>);

/// What a span records (read by `otlp` when it is exported).
pub(super) struct Open {
    pub(super) cx: Cx,
    pub(super) parent: u64,
    pub(super) remote_parent: bool,
    /// The client's `tracestate`, passed on.
    pub(super) state: Option<Box<str>>,
    pub(super) name: Cow<'static, str>,
    pub(super) kind: Kind,
    pub(super) start: SystemTime,
    /// Its attributes, encoded (`Span.attributes` fields).
    pub(super) attributes: Vec<u8>,
    pub(super) error: bool,
}

/// OTLP's span kinds (the values are the protobuf enum's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Internal = 1,
    Server = 2,
    Client = 3,
}

impl Span {
    /// No span.
    pub const fn none() -> Span {
        Span(None)
    }

    /// A child of the current span; nothing when there is none.
    pub fn child(name: impl Into<Cow<'static, str>>) -> Span {
        let Some(parent) = current() else {
            return Span::none();
        };
        let mut span = Span::open(parent.trace, parent.span, false, name.into());
        if let Some(open) = &mut span.0 {
            open.cx.labels = parent.labels;
        }
        span
    }

    /// Gives it (and the spans made under it) `labels`.
    pub fn label(&mut self, labels: Labels) {
        if let Some(open) = &mut self.0 {
            open.cx.labels = Some(labels);
        }
    }

    /// A child of the current span, made only with `--trace-tensor-ops`.
    pub fn verbose(name: impl Into<Cow<'static, str>>) -> Span {
        if VERBOSE.load(Ordering::Relaxed) {
            Span::child(name)
        } else {
            Span::none()
        }
    }

    /// A child of the current span, else (traces on) the root of a trace
    /// of its own: for work done when deployments start.
    pub fn root(name: impl Into<Cow<'static, str>>) -> Span {
        match current() {
            Some(_) => Span::child(name),
            None if QUEUE.get().is_some() => Span::open(new_id(), 0, false, name.into()),
            None => Span::none(),
        }
    }

    /// A server span continuing `parent` (a client's `traceparent`), else
    /// starting a trace; `state` is the client's `tracestate`.
    pub(super) fn server(
        name: Cow<'static, str>,
        parent: Option<(u128, u64)>,
        state: Option<Box<str>>,
    ) -> Span {
        let mut span = match parent {
            Some((trace, span)) => Span::open(trace, span, true, name),
            None => Span::open(new_id(), 0, false, name),
        };
        if let Some(open) = &mut span.0 {
            open.kind = Kind::Server;
            open.state = state;
        }
        span
    }

    fn open(trace: u128, parent: u64, remote_parent: bool, name: Cow<'static, str>) -> Span {
        let cx = Cx {
            trace,
            span: new_id() as u64,
            labels: None,
        };
        let start = SystemTime::now();
        // A box (and its attributes' buffer) this thread's last spans left.
        let spare = SPARE
            .try_with(|s| s.borrow_mut().boxes.pop())
            .ok()
            .flatten();
        Span(Some(match spare {
            Some(mut open) => {
                (open.cx, open.parent, open.remote_parent) = (cx, parent, remote_parent);
                (open.name, open.kind, open.start) = (name, Kind::Internal, start);
                open
            }
            None => Box::new(Open {
                cx,
                parent,
                remote_parent,
                state: None,
                name,
                kind: Kind::Internal,
                start,
                attributes: Vec::with_capacity(256),
                error: false,
            }),
        }))
    }

    /// Whether this span is recorded (else every setter does nothing).
    pub fn is_recording(&self) -> bool {
        self.0.is_some()
    }

    /// Its ids, for [`within`] and [`with_current`].
    pub fn cx(&self) -> Option<Cx> {
        self.0.as_ref().map(|o| o.cx.clone())
    }

    /// Sets attribute `key`.
    pub fn with(mut self, key: &'static str, value: impl Into<Value>) -> Span {
        self.set(key, value);
        self
    }

    /// Sets attribute `key`.
    pub fn set(&mut self, key: &'static str, value: impl Into<Value>) {
        if let Some(open) = &mut self.0 {
            super::otlp::attribute(&mut open.attributes, key, &value.into());
        }
    }

    /// Sets string attribute `key` (no copy of `value` is made).
    pub fn set_str(&mut self, key: &'static str, value: &str) {
        if let Some(open) = &mut self.0 {
            super::otlp::attribute_str(&mut open.attributes, key, value);
        }
    }

    /// Sets string attribute `key` (no copy of `value` is made).
    pub fn with_str(mut self, key: &'static str, value: &str) -> Span {
        self.set_str(key, value);
        self
    }

    /// Makes it a client span (an outgoing call).
    pub fn client(mut self) -> Span {
        if let Some(open) = &mut self.0 {
            open.kind = Kind::Client;
        }
        self
    }

    /// Renames it.
    pub fn rename(&mut self, name: impl Into<Cow<'static, str>>) {
        if let Some(open) = &mut self.0 {
            open.name = name.into();
        }
    }

    /// Marks it failed (status `ERROR`).
    pub fn fail(&mut self) {
        if let Some(open) = &mut self.0 {
            open.error = true;
        }
    }

    /// Makes it the current span until the guard drops.
    pub fn enter(&self) -> Entered {
        Entered(CURRENT.replace(self.cx().or_else(current)))
    }

    /// Polls `fut` with this span current; the span ends when `fut` does.
    pub async fn over<F: Future>(self, fut: F) -> F::Output {
        within(self.cx().or_else(current), fut).await
    }

    /// Its trace id as 32 hex digits (for exemplars).
    pub fn trace_id(&self) -> Option<String> {
        let open = self.0.as_ref()?;
        Some(hex::encode(&open.cx.trace.to_be_bytes()))
    }

    /// Its W3C `traceparent` (sampled) and the `tracestate` it carries.
    pub fn traceparent(&self) -> Option<(http::HeaderValue, Option<http::HeaderValue>)> {
        let open = self.0.as_ref()?;
        let mut text = [0u8; 55];
        text[..3].copy_from_slice(b"00-");
        hex::encode_into(&open.cx.trace.to_be_bytes(), &mut text[3..35]);
        text[35] = b'-';
        hex::encode_into(&open.cx.span.to_be_bytes(), &mut text[36..52]);
        text[52..].copy_from_slice(b"-01");
        let parent = http::HeaderValue::from_bytes(&text).ok()?;
        let state = open
            .state
            .as_deref()
            .and_then(|s| http::HeaderValue::from_str(s).ok());
        Some((parent, state))
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        let (Some(mut open), Some(queue)) = (self.0.take(), QUEUE.get()) else {
            return;
        };
        let end = SystemTime::now();
        let encoded = SPARE.try_with(|spare| {
            let spare = &mut *spare.borrow_mut();
            super::otlp::span_body(&open, end, &mut spare.body);
            queue.push(&spare.body);
        });
        if encoded.is_err() {
            // The thread is exiting: encode without its buffers.
            let mut body = Vec::new();
            super::otlp::span_body(&open, end, &mut body);
            queue.push(&body);
            return;
        }
        // Emptied for the next span this thread opens.
        open.cx.labels = None;
        open.state = None;
        open.name = Cow::Borrowed("");
        open.attributes.clear();
        open.error = false;
        let _ = SPARE.try_with(|spare| {
            let boxes = &mut spare.borrow_mut().boxes;
            // One a client's long header grew is not kept.
            if boxes.len() < SPARE_BOXES && open.attributes.capacity() <= SPARE_ATTRIBUTES {
                boxes.push(open);
            }
        });
    }
}

/// Spans' boxes a thread keeps for reuse, at most.
const SPARE_BOXES: usize = 32;
/// The most attribute bytes a kept box may hold room for.
const SPARE_ATTRIBUTES: usize = 4096;

/// What a thread reuses from span to span: the encoding buffer and the
/// boxes of ended spans (two allocations and two frees a span, saved).
#[derive(Default)]
struct Spare {
    body: Vec<u8>,
    #[expect(
        clippy::vec_box,
        reason = "the boxes are what is reused: a `Span` holds one"
    )]
    boxes: Vec<Box<Open>>,
}

thread_local! {
    static SPARE: RefCell<Spare> = RefCell::default();
}

/// A random id, never zero (zero means "none" in W3C and OTLP): SplitMix64
/// over a per-thread state seeded from the OS generator — ids must be
/// unique and unguessable enough to not collide, not secret.
fn new_id() -> u128 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(rand::random());
    }
    let next = || {
        STATE.with(|s| {
            let x = s.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
            s.set(x);
            let z = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            let z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        })
    };
    loop {
        let (hi, lo) = (next(), next());
        if hi != 0 && lo != 0 {
            return u128::from(hi) << 64 | u128::from(lo);
        }
    }
}

/// The trace id, parent span id and sampled flag of a well-formed W3C
/// `traceparent` (version 00, or a later one read as 00 reads it).
pub fn parse_traceparent(value: &str) -> Option<(u128, u64, bool)> {
    let mut parts = value.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let well_formed = version.len() == 2
        && version != "ff"
        && (version != "00" || parts.next().is_none())
        && trace.len() == 32
        && span.len() == 16
        && flags.len() == 2;
    let lower = |s: &str| s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !well_formed || ![version, trace, span, flags].iter().all(|s| lower(s)) {
        return None;
    }
    let trace = u128::from_str_radix(trace, 16).ok()?;
    let span = u64::from_str_radix(span, 16).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    (trace != 0 && span != 0).then_some((trace, span, flags & 1 == 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_are_read_strictly() {
        assert_eq!(
            parse_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            Some((0x0af7651916cd43dd8448eb211c80319c, 0xb7ad6b7169203331, true))
        );
        for bad in [
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
            "garbage",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad}");
        }
    }

    #[test]
    fn children_follow_the_current_span_and_render_as_traceparent() {
        assert!(!Span::child("x").is_recording(), "no parent, no span");
        let mut root = Span::server("request".into(), Some((7, 9)), None);
        root.label(labels("acme", "gw"));
        let _in = root.enter();
        let child = Span::child("route");
        let (cx, parent) = (
            child.0.as_ref().unwrap().cx.clone(),
            child.0.as_ref().unwrap().parent,
        );
        assert_eq!((cx.trace, parent), (7, root.cx().unwrap().span));
        assert_eq!(
            cx.labels,
            Some(labels("acme", "gw")),
            "labels are inherited"
        );
        assert!(Span::child("x").0.as_ref().unwrap().attributes.is_empty());
        let (header, state) = child.traceparent().unwrap();
        let header = header.to_str().unwrap().to_string();
        assert_eq!(parse_traceparent(&header), Some((7, cx.span, true)));
        assert!(state.is_none());
        drop(_in);
        assert_eq!(current(), None);
    }
}
