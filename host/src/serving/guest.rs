//! Driving a guest's run inline with its response.
//!
//! Spawning a task per request costs a cross-thread hand-off on the hot
//! path. Instead the request's own task polls the guest alongside whatever
//! it is waiting for (the response, the body); a guest still running when
//! the response leaves — streaming its body, or doing work after it — is
//! detached onto a task of its own, where its deadline still stops it.

use std::future::Future;
use std::pin::Pin;

type Run<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A guest's run: still going, or ended with `T`.
pub struct GuestRun<T: Send + 'static> {
    state: State<T>,
}

enum State<T> {
    Running(Run<T>),
    Done(Option<T>),
}

impl<T: Send + 'static> GuestRun<T> {
    /// Wraps the guest's future; nothing runs until it is polled.
    pub fn new(run: impl Future<Output = T> + Send + 'static) -> Self {
        Self {
            state: State::Running(Box::pin(run)),
        }
    }

    /// Awaits `fut` while also driving the guest.
    pub async fn alongside<F: Future>(&mut self, fut: F) -> F::Output {
        let mut fut = std::pin::pin!(fut);
        loop {
            match &mut self.state {
                State::Running(run) => tokio::select! {
                    biased;
                    out = &mut fut => return out,
                    end = run => self.state = State::Done(Some(end)),
                },
                State::Done(_) => return fut.await,
            }
        }
    }

    /// Awaits `fut` while driving the guest, but only until the guest ends:
    /// then `fut` is polled once more and `None` returned if it is not ready.
    pub async fn run_until<F: Future>(&mut self, fut: F) -> Option<F::Output> {
        let mut fut = std::pin::pin!(fut);
        loop {
            match &mut self.state {
                State::Running(run) => tokio::select! {
                    biased;
                    out = &mut fut => return Some(out),
                    end = run => self.state = State::Done(Some(end)),
                },
                State::Done(_) => {
                    return std::future::poll_fn(|cx| match fut.as_mut().poll(cx) {
                        std::task::Poll::Ready(out) => std::task::Poll::Ready(Some(out)),
                        std::task::Poll::Pending => std::task::Poll::Ready(None),
                    })
                    .await;
                }
            }
        }
    }

    /// The guest's end, if it has ended and nobody took it yet.
    pub fn take_finished(&mut self) -> Option<T> {
        match &mut self.state {
            State::Running(_) => None,
            State::Done(end) => end.take(),
        }
    }

    /// Awaits the guest's end (once).
    pub async fn end(&mut self) -> Option<T> {
        match &mut self.state {
            State::Running(run) => {
                let end = run.await;
                self.state = State::Done(None);
                Some(end)
            }
            State::Done(end) => end.take(),
        }
    }
}

impl<T: Send + 'static> Drop for GuestRun<T> {
    fn drop(&mut self) {
        if let State::Running(run) = std::mem::replace(&mut self.state, State::Done(None)) {
            tokio::spawn(run);
        }
    }
}
