//! A job's stdout or stderr, kept in memory up to a cap: what is written
//! beyond it is dropped (and said to be), never an error for the guest.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Bytes kept of each of a job's stdout and stderr.
pub const CAP: usize = 64 * 1024;

/// One captured stream; clones share it.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Kept>>);

#[derive(Default)]
struct Kept {
    bytes: Vec<u8>,
    dropped: u64,
}

impl Captured {
    fn keep(&self, buf: &[u8]) {
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let room = CAP.saturating_sub(kept.bytes.len()).min(buf.len());
        kept.bytes.extend_from_slice(&buf[..room]);
        kept.dropped += (buf.len() - room) as u64;
    }

    /// What was kept (as UTF-8, invalid sequences replaced) and how many
    /// bytes were dropped past the cap.
    pub fn text(&self) -> (String, u64) {
        let kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        (
            String::from_utf8_lossy(&kept.bytes).into_owned(),
            kept.dropped,
        )
    }
}

impl AsyncWrite for Captured {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.keep(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl IsTerminal for Captured {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Captured {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    /// Written synchronously, so nothing is still in flight when the job ends.
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl Pollable for Captured {
    async fn ready(&mut self) {}
}

impl OutputStream for Captured {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.keep(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn keeps_up_to_the_cap_and_counts_the_rest() {
        let out = Captured::default();
        let mut w = out.clone();
        w.write_all(&vec![b'a'; CAP - 1]).await.unwrap();
        w.write_all(b"bcd").await.unwrap();
        let (text, dropped) = out.text();
        assert_eq!(text.len(), CAP);
        assert!(text.ends_with("ab"));
        assert_eq!(dropped, 2);
    }
}
