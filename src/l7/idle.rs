//! Idle detection for HTTP connections: the stream records when bytes last moved, and a
//! watchdog ends the connection after a quiet period. hyper bounds the wait for a request
//! head, but not the wait for the first bytes (protocol detection) nor a stalled body.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pin_project_lite::pin_project! {
    /// A stream that notes (in ms since `born`) the last time bytes moved either way.
    pub struct Tracked<T> {
        #[pin]
        inner: T,
        last: Arc<AtomicU64>,
        born: Instant,
    }
}

impl<T> Tracked<T> {
    pub fn new(inner: T, last: Arc<AtomicU64>, born: Instant) -> Self {
        Self { inner, last, born }
    }
}

fn note(last: &AtomicU64, born: Instant) {
    last.store(born.elapsed().as_millis() as u64, Ordering::Relaxed);
}

impl<T: AsyncRead> AsyncRead for Tracked<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let r = this.inner.poll_read(cx, buf);
        if buf.filled().len() > before {
            note(this.last, *this.born);
        }
        r
    }
}

impl<T: AsyncWrite> AsyncWrite for Tracked<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let r = this.inner.poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            note(this.last, *this.born);
        }
        r
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let r = this.inner.poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            note(this.last, *this.born);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Resolves once nothing has moved for `idle`.
pub async fn watch(last: Arc<AtomicU64>, born: Instant, idle: Duration) {
    loop {
        let seen = last.load(Ordering::Relaxed);
        let deadline = born + Duration::from_millis(seen) + idle;
        tokio::time::sleep_until(deadline.into()).await;
        if last.load(Ordering::Relaxed) == seen {
            return;
        }
    }
}
