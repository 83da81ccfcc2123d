//! The export thread. A span is encoded as OTLP on the thread that ends it
//! (its memory is freed where it was allocated) and its bytes join a
//! bounded queue; the export thread sends them in batches. Limits come
//! from the SDK's variables: `OTEL_BSP_SCHEDULE_DELAY` (ms, default 5000),
//! `OTEL_BSP_MAX_QUEUE_SIZE` (2048 spans), `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`
//! (512). A span that finds the queue full is dropped and counted.

use super::{SPANS_DROPPED, SPANS_ENDED, SPANS_EXPORTED};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// The queue between the serving threads and the export thread.
pub(super) struct Queue {
    state: Mutex<State>,
    wake: Condvar,
    limits: Limits,
}

/// Encoded spans, each a `ScopeSpans.spans` field (see `otlp`).
#[derive(Default)]
struct State {
    spans: Vec<u8>,
    count: usize,
    closing: bool,
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    delay: Duration,
    queue: usize,
    batch: usize,
}

impl Limits {
    fn from_env() -> Limits {
        let var = |name: &str, default: u64| {
            super::env(name)
                .and_then(|v| v.trim().parse::<u64>().ok())
                .filter(|&v| v > 0)
                .unwrap_or(default)
        };
        let queue = var("OTEL_BSP_MAX_QUEUE_SIZE", 2048) as usize;
        Limits {
            delay: Duration::from_millis(var("OTEL_BSP_SCHEDULE_DELAY", 5000)),
            queue,
            batch: (var("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512) as usize).min(queue),
        }
    }
}

impl Queue {
    /// Queues one encoded span, or drops it when the queue is full.
    pub(super) fn push(&self, span: &[u8]) {
        SPANS_ENDED.inc();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.count >= self.limits.queue || state.closing {
            drop(state);
            SPANS_DROPPED.inc();
            return;
        }
        state.spans.extend_from_slice(span);
        state.count += 1;
        if state.count == self.limits.batch {
            self.wake.notify_one();
        }
    }

    /// Waits for a full batch, the schedule delay or closing; takes what
    /// is queued: everything after the delay or on closing, else whole
    /// batches only — the few spans ended between the wake-up and now stay
    /// for the next batch instead of costing an export of their own (they
    /// made every other export a handful of spans).
    fn next(&self, spare: Vec<u8>) -> (Vec<u8>, bool) {
        let batch = self.limits.batch;
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (mut state, _) = self
            .wake
            .wait_timeout_while(state, self.limits.delay, |s| s.count < batch && !s.closing)
            .unwrap_or_else(|e| e.into_inner());
        let (count, closing) = (state.count, state.closing);
        state.count = 0;
        let mut spans = std::mem::replace(&mut state.spans, spare);
        drop(state);
        if count > batch && !closing {
            let whole = super::otlp::split(&spans, count / batch * batch).0.len();
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            // Their order within an export does not matter to OTLP.
            state.spans.extend_from_slice(&spans[whole..]);
            state.count += count % batch;
            drop(state);
            spans.truncate(whole);
        }
        (spans, closing)
    }

    /// Asks the export thread to send what is queued and stop.
    pub(super) fn close(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).closing = true;
        self.wake.notify_one();
    }
}

/// Starts the export thread; `send` sends one batch of encoded spans and
/// says whether the collector took it. The thread ends, after a last send,
/// on [`Queue::close`].
pub(super) fn start<F>(send: F) -> std::io::Result<(Arc<Queue>, JoinHandle<()>)>
where
    F: Fn(&[u8]) -> bool + Send + 'static,
{
    let limits = Limits::from_env();
    let queue = Arc::new(Queue {
        state: Mutex::new(State::default()),
        wake: Condvar::new(),
        limits,
    });
    let q = queue.clone();
    let thread = std::thread::Builder::new()
        .name("otlp-export".into())
        .spawn(move || {
            let mut spare = Vec::new();
            loop {
                let (spans, closing) = q.next(spare);
                let mut rest = spans.as_slice();
                while !rest.is_empty() {
                    let (batch, n) = super::otlp::split(rest, limits.batch);
                    rest = &rest[batch.len()..];
                    if send(batch) {
                        SPANS_EXPORTED.inc_by(n as u64);
                    } else {
                        SPANS_DROPPED.inc_by(n as u64);
                    }
                }
                if closing {
                    return;
                }
                spare = spans;
                spare.clear();
            }
        })?;
    Ok((queue, thread))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(batch: usize) -> Queue {
        Queue {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            limits: Limits {
                delay: Duration::from_millis(50),
                queue: 100,
                batch,
            },
        }
    }

    /// One encoded span (a `ScopeSpans.spans` field) whose body is `tag`.
    fn span(tag: u8) -> [u8; 3] {
        [0x12, 1, tag]
    }

    #[test]
    fn a_full_queue_is_taken_in_whole_batches_and_the_rest_after_the_delay() {
        let q = queue(4);
        for tag in 0..6 {
            q.push(&span(tag));
        }
        let (spans, closing) = q.next(Vec::new());
        assert!(!closing);
        assert_eq!(
            super::super::otlp::split(&spans, 100).1,
            4,
            "one whole batch"
        );
        let (rest, _) = q.next(Vec::new());
        assert_eq!(
            rest,
            [span(4), span(5)].concat(),
            "the rest, after the delay"
        );
        for tag in 0..9 {
            q.push(&span(tag));
        }
        let (spans, _) = q.next(Vec::new());
        assert_eq!(
            super::super::otlp::split(&spans, 100).1,
            8,
            "two whole batches"
        );
        q.push(&span(9));
        q.close();
        let (rest, closing) = q.next(Vec::new());
        assert!(closing);
        assert_eq!(rest, [span(8), span(9)].concat(), "everything on closing");
    }
}
