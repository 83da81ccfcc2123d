//! Busy-polling before a serving thread sleeps (`serve --busy-poll`): once
//! a thread has nothing left to do after a response, it keeps checking its
//! sockets (`epoll_wait` with no timeout) for up to a window before it goes
//! to sleep.
//!
//! Why: a client that sends its next request right after a response (a
//! keep-alive client, a proxy's pooled connection) otherwise finds the
//! thread asleep, and the wake-up — the kernel's scheduler, and on a
//! virtual machine an interrupt through the hypervisor — sits on that
//! request's latency and costs more CPU than the polling it replaces
//! (docs/PERFORMANCE.md, "Busy-polling"). The thread polls only while its
//! requests come close together: after a window with nothing arriving it
//! sleeps after its responses, until a request again arrives soon after
//! one. An idle server sleeps.

use std::cell::Cell;
use std::future::poll_fn;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

thread_local! {
    /// This thread's window (zero: off; it is zero off the serving threads).
    static WINDOW: Cell<Duration> = const { Cell::new(Duration::ZERO) };
    /// When this thread last sent a response's head.
    static LAST: Cell<Option<Instant>> = const { Cell::new(None) };
    /// Whether requests come close enough together to poll for the next.
    static WARM: Cell<bool> = const { Cell::new(true) };
    /// The spinner, while it waits for a response.
    static ASLEEP: Cell<Option<Waker>> = const { Cell::new(None) };
}

/// How soon after the last response a request that arrives on a sleeping
/// thread makes it poll again, in windows: lenient, since the last
/// response's head went out before its body and the thread's own work.
const REWARM: u32 = 4;

/// Notes a request's arrival (on a sleeping thread, one soon after the last
/// response makes the thread poll after its responses again).
pub fn arrived() {
    let window = WINDOW.get();
    if window.is_zero() || WARM.get() {
        return;
    }
    if LAST
        .get()
        .is_some_and(|last| last.elapsed() <= window * REWARM)
    {
        WARM.set(true);
    }
}

/// Notes a response: the thread polls once it has nothing else to do.
pub fn responded() {
    if WINDOW.get().is_zero() {
        return;
    }
    LAST.set(Some(Instant::now()));
    if WARM.get()
        && let Some(spinner) = ASLEEP.take()
    {
        spinner.wake();
    }
}

/// Runs for good on a serving thread's runtime (`window` > 0): after a
/// response, yields — so the runtime polls its sockets without sleeping —
/// until the thread has had nothing to do for `window`.
pub async fn spin_forever(window: Duration) {
    WINDOW.set(window);
    // A longer gap between two of the spinner's turns means the thread
    // worked in between (a turn is one `epoll_wait` with no timeout).
    let busy = window / 4;
    loop {
        poll_fn(|cx| {
            if WARM.get() && LAST.get().is_some_and(|l| l.elapsed() < window) {
                Poll::Ready(())
            } else {
                ASLEEP.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await;
        let began = Instant::now();
        let (mut idle_since, mut turn) = (began, began);
        let caught = loop {
            tokio::task::yield_now().await;
            let now = Instant::now();
            if now - turn > busy {
                idle_since = now;
            } else {
                // Idle since the last turn: whatever else is runnable on
                // this CPU goes first, so polling only takes idle time.
                std::thread::yield_now();
            }
            turn = now;
            if now - idle_since >= window {
                // Whether it caught a request (one was answered meanwhile).
                break LAST.get().is_some_and(|l| l > began);
            }
        };
        // A window with nothing arriving: sleep after responses until
        // requests come close together again.
        WARM.set(caught);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_thread_stops_polling_when_nothing_comes_and_polls_again_when_requests_do() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let window = Duration::from_millis(20);
            tokio::spawn(spin_forever(window));
            tokio::task::yield_now().await;
            responded();
            tokio::task::yield_now().await;
            assert!(WARM.get(), "a response opens the window");
            // The window runs from when the thread was last busy (a loaded
            // test machine may preempt it): wait for it to close.
            let deadline = Instant::now() + Duration::from_secs(10);
            while WARM.get() {
                assert!(
                    Instant::now() < deadline,
                    "a window with nothing arriving closes it"
                );
                tokio::time::sleep(window).await;
            }
            responded();
            tokio::time::sleep(window * (REWARM + 1)).await;
            arrived();
            assert!(!WARM.get(), "a request long after the last response");
            responded();
            arrived();
            assert!(WARM.get(), "one soon after it");
        });
    }
}
