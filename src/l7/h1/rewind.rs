//! A stream that first replays bytes already read from it: how a connection whose first
//! bytes the fast path read is handed to hyper (HTTP/2 prior knowledge, upgrades).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub struct Rewind<T> {
    pre: Bytes,
    inner: T,
}

impl<T> Rewind<T> {
    pub fn new(pre: Bytes, inner: T) -> Self {
        Self { pre, inner }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pre.has_remaining() {
            let n = self.pre.len().min(buf.remaining());
            buf.put_slice(&self.pre[..n]);
            self.pre.advance(n);
            if !self.pre.has_remaining() {
                // An emptied slice still holds the read buffer it came from (4 KiB or more)
                // for the connection's life: let it go.
                self.pre = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use tokio::io::AsyncReadExt;

    /// Marks its drop: the buffer the replayed bytes came from.
    struct Owner(Vec<u8>, Arc<AtomicBool>);

    impl AsRef<[u8]> for Owner {
        fn as_ref(&self) -> &[u8] {
            &self.0
        }
    }

    impl Drop for Owner {
        fn drop(&mut self) {
            self.1.store(true, Ordering::SeqCst);
        }
    }

    /// The replayed bytes come first, then the stream's; once they are read, the buffer
    /// they came from is let go rather than held for the connection's life.
    #[tokio::test]
    async fn replayed_bytes_come_first_and_their_buffer_is_let_go() {
        let dropped = Arc::new(AtomicBool::new(false));
        let pre = Bytes::from_owner(Owner(b"PRI * HTTP/2.0".to_vec(), dropped.clone()));
        let mut r = Rewind::new(pre, &b" rest"[..]);
        let mut first = [0u8; 14];
        r.read_exact(&mut first).await.expect("replayed");
        assert_eq!(&first, b"PRI * HTTP/2.0");
        assert!(dropped.load(Ordering::SeqCst), "buffer still held");
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).await.expect("rest");
        assert_eq!(rest, b" rest");
    }
}
