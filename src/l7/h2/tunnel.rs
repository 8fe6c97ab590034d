//! An HTTP/2 stream as a byte stream, for a tunnel opened with extended CONNECT (RFC 8441,
//! WebSocket over HTTP/2): what the client sends arrives as the request body, and what the
//! tunnel writes goes out as the response body. The connection's flow control applies to
//! both as to any request, so a tunnel holds at most its stream window one way and
//! [`QUEUE`] bytes the other.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Frame};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::l7::body::{Body, BoxError};

/// Bytes written and not yet taken by the connection, past which writes wait.
const QUEUE: usize = 64 * 1024;

/// Marks a request that came as extended CONNECT on vane's HTTP/2 server: its body and its
/// response's body are the tunnel ([`pair`]), where hyper would give an upgrade.
#[derive(Debug, Clone, Copy)]
pub struct Tunnel;

#[derive(Default)]
struct Pipe {
    chunks: VecDeque<Bytes>,
    queued: usize,
    closed: bool,
    reader: Option<Waker>,
    writer: Option<Waker>,
}

#[derive(Default)]
struct Shared(Mutex<Pipe>);

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pipe> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn close(&self) {
        let mut p = self.lock();
        p.closed = true;
        if let Some(w) = p.reader.take() {
            w.wake();
        }
    }
}

/// The tunnel's end in vane: reads the client's bytes, writes bytes for it.
pub struct StreamIo {
    from: Body,
    left: Bytes,
    to: Arc<Shared>,
}

/// The tunnel on the request body `from_client`, and the body of the response that carries
/// the tunnel's writes to the client.
pub fn pair(from_client: Body) -> (StreamIo, Body) {
    let to = Arc::new(Shared::default());
    let body = PipeBody(to.clone()).boxed();
    (
        StreamIo {
            from: from_client,
            left: Bytes::new(),
            to,
        },
        body,
    )
}

impl AsyncRead for StreamIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        while self.left.is_empty() {
            match std::task::ready!(Pin::new(&mut self.from).poll_frame(cx)) {
                Some(Ok(f)) => {
                    if let Ok(d) = f.into_data() {
                        self.left = d;
                    }
                }
                Some(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
                None => return Poll::Ready(Ok(())),
            }
        }
        let n = self.left.len().min(buf.remaining());
        buf.put_slice(&self.left[..n]);
        self.left.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for StreamIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if Arc::strong_count(&self.to) == 1 {
            // The stream is gone (reset, or the connection ended).
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let mut p = self.to.lock();
        if p.closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if p.queued >= QUEUE {
            p.writer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = buf.len().min(QUEUE - p.queued);
        p.chunks.push_back(Bytes::copy_from_slice(&buf[..n]));
        p.queued += n;
        if let Some(w) = p.reader.take() {
            w.wake();
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.to.close();
        Poll::Ready(Ok(()))
    }
}

impl Drop for StreamIo {
    fn drop(&mut self) {
        self.to.close();
    }
}

/// The response body: what the tunnel wrote, ended when it shuts down or goes.
struct PipeBody(Arc<Shared>);

impl hyper::body::Body for PipeBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut p = self.0.lock();
        if let Some(d) = p.chunks.pop_front() {
            p.queued -= d.len();
            if let Some(w) = p.writer.take() {
                w.wake();
            }
            return Poll::Ready(Some(Ok(Frame::data(d))));
        }
        if p.closed {
            return Poll::Ready(None);
        }
        p.reader = Some(cx.waker().clone());
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        let p = self.0.lock();
        p.closed && p.chunks.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn bytes_go_both_ways_and_a_shutdown_ends_the_response() {
        let from_client = crate::l7::body::full("hello");
        let (mut io, mut to_client) = pair(from_client);
        let mut got = Vec::new();
        io.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hello");
        io.write_all(b"world").await.unwrap();
        io.shutdown().await.unwrap();
        let out = to_client.frame().await.unwrap().unwrap();
        assert_eq!(out.into_data().unwrap(), "world");
        assert!(to_client.frame().await.is_none());
    }

    #[tokio::test]
    async fn writes_wait_for_the_connection_and_fail_when_it_is_gone() {
        let (mut io, to_client) = pair(crate::l7::body::empty());
        let big = vec![1u8; QUEUE];
        io.write_all(&big).await.unwrap();
        // The queue is full: the next write waits.
        let blocked =
            tokio::time::timeout(std::time::Duration::from_millis(50), io.write_all(b"x")).await;
        assert!(blocked.is_err(), "wrote past the queue");
        drop(to_client);
        assert!(io.write_all(b"x").await.is_err());
    }
}
