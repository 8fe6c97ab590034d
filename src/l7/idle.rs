//! Idle detection for HTTP connections: the stream counts each time bytes move, and a
//! watchdog that looks every quarter of the idle timeout ends the connection once the count
//! has not changed for the whole timeout (so it closes between 1 and 1.25 timeouts after the
//! last byte). hyper bounds the wait for a request head, but not the wait for the first bytes
//! (protocol detection) nor a stalled body. Counting instead of reading the clock on every
//! read and write took 2 % off a proxied request.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pin_project_lite::pin_project! {
    /// A stream that counts the times bytes moved either way.
    pub struct Tracked<T> {
        #[pin]
        inner: T,
        moves: Arc<AtomicU64>,
    }
}

impl<T> Tracked<T> {
    pub fn new(inner: T, moves: Arc<AtomicU64>) -> Self {
        Self { inner, moves }
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }
}

fn note(moves: &AtomicU64) {
    moves.fetch_add(1, Ordering::Relaxed);
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
            note(this.moves);
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
            note(this.moves);
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
            note(this.moves);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Resolves once nothing has moved for `idle` (looked at every quarter of it).
pub fn watch(moves: Arc<AtomicU64>, idle: Duration) -> Watch {
    let tick = (idle / 4).max(Duration::from_millis(50));
    let tick_ms = u32::try_from(tick.as_millis()).unwrap_or(u32::MAX);
    let ticks = idle.as_millis().div_ceil(u128::from(tick_ms));
    Watch {
        seen: moves.load(Ordering::Relaxed),
        moves,
        tick_ms,
        ticks: u32::try_from(ticks).unwrap_or(u32::MAX),
        quiet: 0,
        sleep: Box::pin(tokio::time::sleep(tick)),
    }
}

/// The watchdog [`watch`] returns. Written out, with its timer boxed, so that it is `Unpin`:
/// a connection's future holds it in place and polls it by reference, where an async
/// function's future would have to be pinned by moving it, a second copy in every idle
/// connection's state. Counts in ticks, so it takes 40 bytes of that state, not 72.
pub struct Watch {
    moves: Arc<AtomicU64>,
    sleep: Pin<Box<tokio::time::Sleep>>,
    seen: u64,
    tick_ms: u32,
    /// Quiet ticks that make the connection idle.
    ticks: u32,
    quiet: u32,
}

impl std::future::Future for Watch {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        loop {
            std::task::ready!(this.sleep.as_mut().poll(cx));
            let now = this.moves.load(Ordering::Relaxed);
            if now == this.seen {
                this.quiet = this.quiet.saturating_add(1);
                if this.quiet >= this.ticks {
                    return Poll::Ready(());
                }
            } else {
                this.seen = now;
                this.quiet = 0;
            }
            let tick = Duration::from_millis(u64::from(this.tick_ms));
            let next = tokio::time::Instant::now() + tick;
            this.sleep.as_mut().reset(next);
        }
    }
}
