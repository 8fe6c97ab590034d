//! HTTP/1.1 served without hyper's generic connection machinery: the head is parsed with
//! `httparse` into a buffer borrowed for the exchange, the request runs the application flow
//! (the same [`server::handle`] every HTTP version uses), and the response is written with the
//! head and a ready body in one write. Between requests a connection holds no buffer: it
//! waits for the socket to become readable, as the L4 relay does, so an idle keep-alive
//! client costs a few hundred bytes instead of hyper's per-connection buffers.
//!
//! What this path hands over with the bytes it read: HTTP/2 prior knowledge (to vane's
//! HTTP/2 server, [`super::h2`]), and to hyper protocol upgrades (WebSocket), `CONNECT` and
//! `Expect: 100-continue`.

pub mod body;
pub mod client;
pub mod decode;
pub mod fields;
pub mod head;
pub mod rewind;
pub mod write;

use std::io;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::conn::Socket;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::{Request, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use self::body::{BodyError, Failed, Feed, Step};
use self::head::{HeadError, Parsed};
use super::server::{self, count_connection_error as count, Ctx};

/// The largest request head (hyper's `max_buf_size` before this path).
pub const MAX_HEAD: usize = 64 * 1024;
/// The first read of a head (a thread's spare buffer); doubled while a head does not fit.
const FIRST_READ: usize = crate::spare::SIZE;
/// A body read from the client at most this much at a time.
const BODY_READ: usize = 16 * 1024;
/// After a refusal, unread input is read and dropped for at most this long and this much
/// before closing, so the client sees the answer instead of a reset.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 256 * 1024;

/// What the fast path needs of a connection besides reading and writing.
pub trait Readiness: AsyncWrite + Unpin {
    /// Readable without a read buffer: plain TCP waits on the socket (registering it with
    /// the reactor if it was not); TLS reads (rustls may already hold decrypted bytes).
    fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;

    /// Ends the write side just before the connection is dropped, when nothing is left to
    /// read from the client. A TCP socket needs nothing: dropping it closes it, which sends
    /// the FIN, and a `shutdown` first costs a syscall and guards nothing (a client that still
    /// sends is reset either way). TLS sends its `close_notify`.
    fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

impl Readiness for Socket {
    fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Socket::poll_readable(self, cx)
    }

    fn poll_finish(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// TLS: readable when rustls holds decrypted bytes (or a close to report); otherwise when the
/// socket is. Waiting on the socket keeps an idle TLS client out of an exchange, which would
/// hold a head buffer and the exchange's state for as long as the client says nothing.
impl Readiness for tokio_rustls::server::TlsStream<Socket> {
    fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let (tcp, tls) = self.get_mut();
        if tls.wants_read() {
            tcp.poll_readable(cx)
        } else {
            Poll::Ready(Ok(()))
        }
    }

    /// The `close_notify` alert and a flush; tokio-rustls' `poll_shutdown` would also shut
    /// the socket's write side down. Asking rustls again after a pending flush queues no
    /// second alert.
    fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().1.send_close_notify();
        std::pin::Pin::new(self).poll_flush(cx)
    }
}

impl<T: Readiness, W: super::idle::Watched> Readiness for super::idle::Tracked<T, W> {
    fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_readable(cx)
    }

    fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_finish(cx)
    }
}

/// How the fast path left a connection.
pub enum Ended {
    /// Closed (by either side, an error, or draining).
    Closed,
    /// The connection continues in hyper, which must first read these bytes.
    Handover(Bytes),
}

/// Serves HTTP/1.x requests on `io` until the connection ends or must go to hyper, starting
/// from `buf` (bytes of the first request the L4+ stage read already; borrowed, so the bytes
/// and the buffer are the caller's one slot in a waiting connection's state). Not an async
/// function: its arguments would be kept twice in that state, as they were and as bound.
#[allow(clippy::manual_async_fn)] // written out on purpose: see above
pub fn serve<'a, IO>(
    ctx: &'a Arc<Ctx>,
    io: &'a mut IO,
    buf: &'a mut BytesMut,
) -> impl std::future::Future<Output = Ended> + 'a
where
    IO: AsyncRead + AsyncWrite + Readiness + Unpin,
{
    async move {
        let mut first = true;
        loop {
            if buf.is_empty() {
                // Idle: give the buffer back to the thread and wait for the socket.
                crate::spare::give(std::mem::take(buf));
                // Draining closes a connection here: at once when it has begun, or by the
                // watchdog (`Ctx::may_close`) when it begins during the wait.
                ctx.set_waiting(true);
                if ctx.rt().draining.is_on() {
                    return Ended::Closed;
                }
                let readable = std::future::poll_fn(|cx| io.poll_readable(cx)).await;
                ctx.set_waiting(false);
                if readable.is_err() {
                    return Ended::Closed;
                }
                // A wake with nothing to read (a readiness gone stale, a TLS record not yet
                // whole) goes back to the wait above, where draining closes it; the head read
                // does not.
                *buf = crate::spare::take();
                match read_now(io, buf).await {
                    None => continue,
                    Some(Ok(0)) => return Ended::Closed,
                    Some(Ok(_)) => {}
                    Some(Err(_)) => {
                        count("io");
                        return Ended::Closed;
                    }
                }
            }
            // Boxed: the state of an exchange exists only while one runs, not while idle.
            let next = crate::boxed::pin_in_place(|| exchange(ctx, io, buf, first)).await;
            first = false;
            if let Some(ended) = next {
                return ended;
            }
        }
    }
}

/// One request and its response; `None` when the connection may carry another.
async fn exchange<IO>(ctx: &Arc<Ctx>, io: &mut IO, buf: &mut BytesMut, first: bool) -> Option<Ended>
where
    IO: AsyncRead + Readiness,
{
    let header_timeout = ctx.rt().settings.http_header_timeout;
    let head = match read_head(io, buf, first, header_timeout).await {
        Ok(Some(Parsed::Head(h))) => h,
        Ok(Some(Parsed::Special | Parsed::Partial)) => {
            return Some(Ended::Handover(std::mem::take(buf).freeze()))
        }
        Ok(None) => return Some(Ended::Closed),
        Err(e) => {
            refuse(io, buf, e).await;
            return Some(Ended::Closed);
        }
    };
    let x = write::Exchange {
        method: head.method.clone(),
        version: head.version,
        close: head.close,
    };
    let (mut feed, body) = match head.body {
        None => (None, super::body::empty()),
        Some(framing) => {
            let (feed, body) = Feed::new(framing);
            (Some(feed), body.boxed())
        }
    };
    let mut req = Request::new(body);
    *req.method_mut() = head.method;
    *req.uri_mut() = head.uri;
    *req.version_mut() = head.version;
    *req.headers_mut() = head.headers;
    // The handler's future lies here once (an argument of `run` would be kept in `run`'s
    // state beside what it became), in a block so its room is free again for the response.
    let answer = {
        let handler = std::pin::pin!(server::handle(ctx.clone(), req));
        run(ctx, handler, feed.as_mut(), io, buf).await
    };
    // A body the flow did not read to the end, or that failed, leaves the connection's
    // framing unknown.
    let failed = feed.as_ref().and_then(Feed::failed);
    let unread = failed.is_some() || feed.as_ref().is_some_and(|f| !f.done());
    drop(feed);
    if failed == Some(Failed::Malformed) {
        // The client broke its body's framing: its fault, not the upstream's, whatever the
        // flow made of the body's error (a 502 from a `failure` branch, most often).
        answer_and_close(io, buf, StatusCode::BAD_REQUEST).await;
        return Some(Ended::Closed);
    }
    let Ok(resp) = answer else {
        return Some(Ended::Closed); // aborted by the flow: close without an answer
    };
    let x = write::Exchange {
        close: x.close || unread || ctx.rt().draining.is_on(),
        ..x
    };
    match write::response(io, resp, &x).await {
        Ok(true) => None,
        Ok(false) => {
            close(io, buf, unread).await;
            Some(Ended::Closed)
        }
        Err(e) => {
            count(match e {
                write::WriteError::Io(_) => "io",
                _ => "upstream_body",
            });
            tracing::debug!("HTTP/1.1 response cut: {e}");
            Some(Ended::Closed)
        }
    }
}

/// Runs the request's flow, feeding it the client's body as it asks for it. Its own future:
/// its state ends before the response is written, so the two share their room in the
/// exchange's state instead of adding up.
async fn run<IO, H>(
    ctx: &Ctx,
    mut handler: std::pin::Pin<&mut H>,
    mut feed: Option<&mut Feed>,
    io: &mut IO,
    buf: &mut BytesMut,
) -> Result<super::reply::Reply, server::Aborted>
where
    IO: AsyncRead + Unpin,
    H: std::future::Future<Output = Result<super::reply::Reply, server::Aborted>>,
{
    let mut pumping = feed.is_some();
    loop {
        let Some(f) = feed.as_deref_mut().filter(|_| pumping) else {
            return handler.as_mut().await;
        };
        tokio::select! {
            biased;
            r = handler.as_mut() => return r,
            r = pump(f, io, buf) => match r {
                Ok(()) => pumping = !f.done(),
                Err(BodyError::Abandoned) => pumping = false,
                Err(e) => {
                    count(match e {
                        BodyError::Malformed(_) => "malformed",
                        BodyError::Incomplete => "incomplete",
                        _ => "io",
                    });
                    if matches!(e, BodyError::Malformed(_)) {
                        // Before the flow can see the error: its accounting says 400.
                        ctx.mark_body_malformed();
                    }
                    f.fail(e);
                    pumping = false;
                }
            },
        }
    }
}

/// Reads until a head is complete: `Ok(None)` when the client closed or went silent
/// (counted), `Partial` only for an HTTP/2 preface (handed over as it is).
async fn read_head<IO>(
    io: &mut IO,
    buf: &mut BytesMut,
    first: bool,
    timeout: Duration,
) -> Result<Option<Parsed>, HeadError>
where
    IO: AsyncRead + Unpin,
{
    // Set at the first read: a head that came whole with the first bytes (most do) reads no
    // clock.
    let mut deadline = None;
    let mut deadline = move || *deadline.get_or_insert_with(|| Instant::now() + timeout);
    loop {
        if !buf.is_empty() {
            if first {
                match head::is_h2_preface(buf) {
                    Some(true) => return Ok(Some(Parsed::Partial)),
                    Some(false) => {}
                    None => {
                        // Too short to tell: read more below.
                        if !read_more(io, buf, deadline()).await {
                            return Ok(None);
                        }
                        continue;
                    }
                }
            }
            match head::parse(buf, MAX_HEAD)? {
                Parsed::Partial => {}
                done => return Ok(Some(done)),
            }
        }
        if !read_more(io, buf, deadline()).await {
            return Ok(None);
        }
    }
}

/// One read into `buf` (grown as a head needs): `false` when the connection is over.
async fn read_more<IO>(io: &mut IO, buf: &mut BytesMut, deadline: Instant) -> bool
where
    IO: AsyncRead + Unpin,
{
    if buf.capacity() - buf.len() < FIRST_READ / 4 {
        // Double, but never past one byte over the cap (enough to see a head is too large).
        let room = (MAX_HEAD + 1).saturating_sub(buf.len()).max(1);
        buf.reserve(buf.capacity().max(FIRST_READ).min(room));
    }
    match tokio::time::timeout_at(deadline, io.read_buf(buf)).await {
        Err(_) => {
            count("timeout");
            false
        }
        Ok(Ok(0)) => {
            if !buf.is_empty() {
                count("incomplete");
            }
            false
        }
        Ok(Ok(_)) => true,
        Ok(Err(_)) => {
            count("io");
            false
        }
    }
}

/// One read that does not wait: `None` when nothing has arrived (the read clears the
/// stream's readiness, so the next wait is for new bytes).
async fn read_now<IO>(io: &mut IO, buf: &mut BytesMut) -> Option<io::Result<usize>>
where
    IO: AsyncRead + Unpin,
{
    std::future::poll_fn(|cx| {
        let read = std::pin::pin!(io.read_buf(&mut *buf));
        match std::future::Future::poll(read, cx) {
            Poll::Ready(r) => Poll::Ready(Some(r)),
            Poll::Pending => Poll::Ready(None),
        }
    })
    .await
}

/// Decodes and hands over the next piece of the body, reading from the client when needed.
async fn pump<IO>(feed: &mut Feed, io: &mut IO, buf: &mut BytesMut) -> Result<(), BodyError>
where
    IO: AsyncRead + Unpin,
{
    std::future::poll_fn(|cx| feed.poll_room(cx)).await?;
    loop {
        match feed.decode(buf)? {
            Step::Data(d) => {
                feed.send(d);
                return Ok(());
            }
            Step::Last(d) => {
                feed.send(d);
                feed.finish();
                return Ok(());
            }
            Step::End => {
                feed.finish();
                return Ok(());
            }
            Step::More => {
                if buf.capacity() - buf.len() < BODY_READ / 4 {
                    buf.reserve(BODY_READ);
                }
                if io.read_buf(buf).await? == 0 {
                    return Err(BodyError::Incomplete);
                }
            }
        }
    }
}

/// Answers a head that cannot be served (400, 431), counted, then closes.
async fn refuse<IO>(io: &mut IO, buf: &mut BytesMut, e: HeadError)
where
    IO: AsyncRead + Readiness,
{
    let (kind, status) = match e {
        HeadError::Malformed(_) => ("malformed", StatusCode::BAD_REQUEST),
        HeadError::TooLarge => ("too_large", StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
        HeadError::NotImplemented(_) => ("malformed", StatusCode::NOT_IMPLEMENTED),
    };
    count(kind);
    tracing::debug!("HTTP/1.1 request refused: {e}");
    answer_and_close(io, buf, status).await;
}

/// A last answer with no body, then the close (the client may still be sending).
async fn answer_and_close<IO>(io: &mut IO, buf: &mut BytesMut, status: StatusCode)
where
    IO: AsyncRead + Readiness,
{
    if io.write_all(&write::refusal(status)).await.is_ok() {
        close(io, buf, true).await;
    }
}

/// Ends the connection after a last answer. When the client may still be sending, the write
/// side is shut first and its input read and dropped for a bounded time, so that closing does
/// not turn into a reset that destroys the answer in flight; otherwise the transport's last
/// words ([`Readiness::poll_finish`]) and the drop that follows are the whole close.
async fn close<IO>(io: &mut IO, buf: &mut BytesMut, unread: bool)
where
    IO: AsyncRead + Readiness,
{
    if !unread && buf.is_empty() {
        let _ = std::future::poll_fn(|cx| io.poll_finish(cx)).await;
        return;
    }
    let _ = io.shutdown().await;
    let mut drained = 0;
    let deadline = Instant::now() + LINGER;
    while drained < LINGER_BYTES {
        buf.clear();
        buf.reserve(FIRST_READ);
        match tokio::time::timeout_at(deadline, io.read_buf(buf)).await {
            Ok(Ok(n)) if n > 0 => drained += n,
            _ => break,
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    fn state_size<'a, A: 'a, B: 'a, C: 'a, D, F>(
        _: fn(&'a A, &'a mut B, &'a mut C, D) -> F,
    ) -> usize {
        std::mem::size_of::<F>()
    }

    /// An exchange's state is moved into a box for every request: the rare paths it reaches
    /// (external plugins, rate limits against a shared store, upstream connects, request
    /// bodies) are boxed where they start, so their state is paid only when they run, and no
    /// large value is an async function's argument (kept twice): 3.9 KiB before, 2.8 after.
    #[test]
    fn a_request_state_stays_small() {
        let size = state_size(exchange::<Socket>);
        eprintln!("HTTP/1.1 exchange state: {size} bytes");
        assert!(size <= 3072, "{size} bytes");
    }
}
