//! An HTTP/2 stream as a byte stream, for a tunnel opened with extended CONNECT (RFC 8441,
//! WebSocket over HTTP/2): what the client sends arrives as the request body, and what the
//! tunnel writes goes out as the response body. The connection's flow control applies to
//! both as to any request, so a tunnel holds at most its stream window one way and
//! [`QUEUE`] bytes the other.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use hyper::body::Body as _;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::inbox::Inbox;
use crate::l7::body::Body;

/// Bytes written and not yet taken by the connection, past which writes wait.
const QUEUE: usize = 64 * 1024;

/// Marks a request that came as extended CONNECT on vane's HTTP/2 server: its body and its
/// response's body are the tunnel ([`pair`]), where hyper would give an upgrade.
#[derive(Debug, Clone, Copy)]
pub struct Tunnel;

/// The tunnel's end in vane: reads the client's bytes, writes bytes for it.
pub struct StreamIo {
    from: Body,
    left: Bytes,
    /// What was written, on its way out: the same queue a request body comes in by.
    to: Inbox,
}

/// The tunnel on the request body `from_client`, and the body of the response that carries
/// the tunnel's writes to the client.
pub fn pair(from_client: Body) -> (StreamIo, Body) {
    let to = Inbox::default();
    let body = to.body(None);
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
        if self.to.abandoned() {
            // The stream is gone (reset, or the connection ended).
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let room = self.to.room(QUEUE, cx.waker());
        if room == 0 {
            return Poll::Pending;
        }
        let n = buf.len().min(room);
        self.to.push(Bytes::copy_from_slice(&buf[..n]));
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.to.end(None);
        Poll::Ready(Ok(()))
    }
}

impl Drop for StreamIo {
    fn drop(&mut self) {
        self.to.end(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
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
