//! Idle detection for HTTP connections: the stream counts each time bytes move, and a
//! watchdog that looks at every tick of a shared clock (a quarter of the idle timeout) ends
//! the connection once the count has not changed for the whole timeout (so it closes between
//! 1 and 1.25 timeouts after the last byte). hyper bounds the wait for a request head, but
//! not the wait for the first bytes (protocol detection) nor a stalled body. Counting instead
//! of reading the clock on every read and write took 2 % off a proxied request.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::ticks::{Ticks, Waiter};

/// What a [`Watch`] watches: a count of the times bytes moved, which a [`Tracked`] stream
/// raises.
pub trait Watched {
    fn moves(&self) -> &AtomicU64;

    /// The connection may be closed at once though not idle (it waits for a request while
    /// the process drains).
    fn may_close(&self) -> bool {
        false
    }
}

impl Watched for AtomicU64 {
    fn moves(&self) -> &AtomicU64 {
        self
    }
}

impl<T: Watched> Watched for Arc<T> {
    fn moves(&self) -> &AtomicU64 {
        (**self).moves()
    }

    fn may_close(&self) -> bool {
        (**self).may_close()
    }
}

pin_project_lite::pin_project! {
    /// A stream that counts the times bytes moved either way.
    pub struct Tracked<T, W> {
        #[pin]
        inner: T,
        moves: W,
    }
}

impl<T, W: Watched> Tracked<T, W> {
    pub fn new(inner: T, moves: W) -> Self {
        Self { inner, moves }
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// Writing through this skips the count of moves: for a connection's last words.
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.inner
    }
}

fn note(w: &impl Watched) {
    w.moves().fetch_add(1, Ordering::Relaxed);
}

impl<T: AsyncRead, W: Watched> AsyncRead for Tracked<T, W> {
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

impl<T: AsyncWrite, W: Watched> AsyncWrite for Tracked<T, W> {
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

/// Why a [`Watch`] ended the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quiet {
    /// Nothing moved for the idle timeout.
    Idle,
    /// [`Watched::may_close`] said so at a tick (draining while it waits for a request).
    Closing,
}

/// Resolves once nothing has moved on `on` for `idle`, looked at on each tick of `ticks`
/// (so between `idle` and `idle` plus a period after the last move), or once `on` may close.
pub fn watch<W: Watched>(on: W, ticks: &'static Ticks, idle: Duration) -> Watch<W> {
    Watch {
        on,
        waiter: ticks.waiter(),
        // The first tick may come at once: it counts as a move, so the quiet ticks counted
        // after it each cover a whole period.
        seen: u64::MAX,
        quiet: 0,
        need: ticks.covering(idle),
    }
}

/// The watchdog [`watch`] returns. It owns no timer (a connection's would be allocated, and
/// put into tokio's wheel and taken out again for every connection): it waits for the ticks
/// of a clock every connection shares, which a poll between ticks checks with one load.
/// `Unpin`, so a connection's future holds it in place and polls it by reference.
pub struct Watch<W> {
    on: W,
    waiter: Waiter,
    /// The moves counted at the last tick.
    seen: u64,
    /// Ticks since then with no move.
    quiet: u32,
    /// Quiet ticks that make the connection idle.
    need: u32,
}

impl<W: Watched + Unpin> std::future::Future for Watch<W> {
    type Output = Quiet;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Quiet> {
        let this = &mut *self;
        while let Poll::Ready(ticks) = this.waiter.poll_ticks(cx) {
            if this.on.may_close() {
                return Poll::Ready(Quiet::Closing);
            }
            let now = this.on.moves().load(Ordering::Relaxed);
            if now == this.seen {
                this.quiet = this.quiet.saturating_add(ticks);
                if this.quiet >= this.need {
                    return Poll::Ready(Quiet::Idle);
                }
            } else {
                this.seen = now;
                this.quiet = 0;
            }
        }
        Poll::Pending
    }
}
