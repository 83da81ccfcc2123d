//! The export thread. A span is encoded as OTLP on the thread that ends it
//! (its memory is freed where it was allocated) and its bytes join a
//! bounded queue; the export thread sends them in batches. Limits come
//! from the SDK's variables: `OTEL_BSP_SCHEDULE_DELAY` (ms, default 5000),
//! `OTEL_BSP_MAX_QUEUE_SIZE` (2048 spans), `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`
//! (512). A span that finds the queue full is dropped and counted.

use super::{SPANS_DROPPED, SPANS_ENDED, SPANS_EXPORTED};
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// The queue between the serving threads and the export thread.
pub(super) struct Queue {
    state: Mutex<State>,
    wake: Condvar,
    limits: Limits,
    /// Bytes left free at the start of each batch, where the export thread
    /// writes the request's prefix (so a batch is sent without a copy).
    room: usize,
}

/// Encoded spans in batches, each a run of `ScopeSpans.spans` fields (see
/// `otlp`) after `room` free bytes.
#[derive(Default)]
struct State {
    /// Batches of `limits.batch` spans, oldest first.
    full: VecDeque<Vec<u8>>,
    /// The batch being filled (empty until its first span) and its spans.
    filling: Vec<u8>,
    filled: usize,
    /// The bytes of the last full batch: what the next one reserves.
    size: usize,
    /// Spans queued, in all batches.
    count: usize,
    closing: bool,
}

/// A batch taken for export: its buffer (`room` free bytes, then the
/// spans) and how many spans it holds.
pub(super) struct Batch {
    pub(super) buffer: Vec<u8>,
    pub(super) spans: usize,
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
    fn new(limits: Limits, room: usize) -> Queue {
        Queue {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            limits,
            room,
        }
    }

    /// Queues one encoded span (its `Span` message, framed here as a
    /// `ScopeSpans.spans` field: copied once), or drops it when the queue
    /// is full.
    pub(super) fn push(&self, span: &[u8]) {
        SPANS_ENDED.inc();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.count >= self.limits.queue || state.closing {
            drop(state);
            SPANS_DROPPED.inc();
            return;
        }
        let state = &mut *state;
        if state.filling.is_empty() {
            // Sized like the last full batch: a batch grows without copies.
            state.filling.reserve(state.size.max(self.room));
            state.filling.resize(self.room, 0);
        }
        super::otlp::frame(&mut state.filling, span);
        state.filled += 1;
        state.count += 1;
        if state.filled == self.limits.batch {
            let full = std::mem::take(&mut state.filling);
            state.size = full.len();
            state.full.push_back(full);
            state.filled = 0;
            self.wake.notify_one();
        }
    }

    /// Waits for a full batch, the schedule delay or closing; takes the full
    /// batches, and the one being filled too after the delay or on closing
    /// (a few spans ended just after a batch filled wait for the next one
    /// instead of costing an export of their own).
    fn next(&self) -> (Vec<Batch>, bool) {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (mut state, _) = self
            .wake
            .wait_timeout_while(state, self.limits.delay, |s| {
                s.full.is_empty() && !s.closing
            })
            .unwrap_or_else(|e| e.into_inner());
        let batch = self.limits.batch;
        let mut out: Vec<Batch> = state
            .full
            .drain(..)
            .map(|buffer| Batch {
                buffer,
                spans: batch,
            })
            .collect();
        if (out.is_empty() || state.closing) && state.filled > 0 {
            out.push(Batch {
                buffer: std::mem::take(&mut state.filling),
                spans: std::mem::take(&mut state.filled),
            });
        }
        state.count -= out.iter().map(|b| b.spans).sum::<usize>();
        (out, state.closing)
    }

    /// Asks the export thread to send what is queued and stop.
    pub(super) fn close(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).closing = true;
        self.wake.notify_one();
    }
}

/// Starts the export thread; batches leave `room` free bytes before their
/// spans; `send` sends one and says whether the collector took it. The
/// thread ends, after a last send, on [`Queue::close`].
pub(super) fn start<F>(room: usize, send: F) -> std::io::Result<(Arc<Queue>, JoinHandle<()>)>
where
    F: Fn(Batch) -> bool + Send + 'static,
{
    let queue = Arc::new(Queue::new(Limits::from_env(), room));
    let q = queue.clone();
    let thread = std::thread::Builder::new()
        .name("otlp-export".into())
        .spawn(move || {
            loop {
                let (batches, closing) = q.next();
                for batch in batches {
                    let n = batch.spans as u64;
                    if send(batch) {
                        SPANS_EXPORTED.inc_by(n);
                    } else {
                        SPANS_DROPPED.inc_by(n);
                    }
                }
                if closing {
                    return;
                }
            }
        })?;
    Ok((queue, thread))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(batch: usize) -> Queue {
        let limits = Limits {
            delay: Duration::from_millis(50),
            queue: 100,
            batch,
        };
        Queue::new(limits, 2)
    }

    /// How the queue holds a span whose body is `[tag]`: a
    /// `ScopeSpans.spans` field.
    fn field(tag: u8) -> [u8; 3] {
        [0x12, 1, tag]
    }

    /// A batch's buffer holding `tags`, after the room.
    fn buffer(tags: std::ops::Range<u8>) -> Vec<u8> {
        let mut b = vec![0, 0];
        tags.for_each(|t| b.extend(field(t)));
        b
    }

    #[test]
    fn full_batches_go_at_once_and_the_rest_after_the_delay() {
        let q = queue(4);
        for tag in 0..6 {
            q.push(&[tag]);
        }
        let (batches, closing) = q.next();
        assert!(!closing);
        assert_eq!(batches.len(), 1, "one whole batch");
        assert_eq!((batches[0].spans, &batches[0].buffer), (4, &buffer(0..4)));
        let (rest, _) = q.next();
        assert_eq!(rest.len(), 1, "the rest, after the delay");
        assert_eq!((rest[0].spans, &rest[0].buffer), (2, &buffer(4..6)));
        for tag in 0..9 {
            q.push(&[tag]);
        }
        let (batches, _) = q.next();
        assert_eq!(batches.len(), 2, "two whole batches");
        assert_eq!(batches[1].buffer, buffer(4..8));
        q.push(&[9]);
        q.close();
        let (rest, closing) = q.next();
        assert!(closing);
        assert_eq!(rest.len(), 1, "everything on closing");
        assert_eq!((rest[0].spans, &rest[0].buffer), (2, &buffer(8..10)));
        q.push(&[10]);
        assert_eq!(
            q.state.lock().unwrap().count,
            0,
            "nothing queued once closing"
        );
    }
}
