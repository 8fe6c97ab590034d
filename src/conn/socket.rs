//! A client's TCP socket that joins the reactor only when it has to wait.
//!
//! Most short connections never wait on their socket: the request is there when the
//! connection is accepted, the answer fits in the send buffer, and the close follows.
//! tokio's `TcpStream` registers every accepted socket with epoll (`epoll_ctl` ADD) and
//! deregisters it at the end (DEL): two system calls per connection spent on a wait that
//! never comes. HAProxy reads a new socket before it asks epoll about it; so does
//! [`Socket`]: it reads and writes the accepted socket directly and registers it the first
//! time a read or write would block, or a caller waits for it to become readable. From then
//! on it is tokio's stream.

use std::io::{self, IoSlice, Read, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// An accepted TCP connection's socket (see the module doc).
#[derive(Debug)]
pub struct Socket {
    state: State,
}

#[derive(Debug)]
enum State {
    /// Not registered: reads and writes go straight to the (non-blocking) socket.
    Fresh(std::net::TcpStream),
    /// Registered with the reactor of the runtime it joined on.
    Joined(TcpStream),
    /// Registering failed, which closed the socket.
    Lost,
}

fn would_block(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

impl Socket {
    /// A socket not yet registered; it must be in non-blocking mode (`SOCK_NONBLOCK` at
    /// accept).
    pub fn fresh(stream: std::net::TcpStream) -> Self {
        Self {
            state: State::Fresh(stream),
        }
    }

    /// Whether the socket is registered with a reactor yet.
    #[cfg(test)]
    fn is_joined(&self) -> bool {
        matches!(self.state, State::Joined(_))
    }

    /// Registers the socket with the current runtime's reactor, once.
    fn join(&mut self) -> io::Result<&mut TcpStream> {
        if matches!(self.state, State::Fresh(_)) {
            self.state = match std::mem::replace(&mut self.state, State::Lost) {
                State::Fresh(s) => State::Joined(TcpStream::from_std(s)?),
                other => other,
            };
        }
        match &mut self.state {
            State::Joined(s) => Ok(s),
            _ => Err(lost()),
        }
    }

    /// tokio's stream, registered now if it was not: what a relay polls directly.
    pub fn into_tokio(mut self) -> io::Result<TcpStream> {
        self.join()?;
        match self.state {
            State::Joined(s) => Ok(s),
            _ => Err(lost()),
        }
    }

    /// Sets `TCP_NODELAY` (Linux hands the listener's setting to accepted sockets).
    #[cfg(not(target_os = "linux"))]
    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        match &self.state {
            State::Fresh(s) => s.set_nodelay(on),
            State::Joined(s) => s.set_nodelay(on),
            State::Lost => Err(lost()),
        }
    }

    /// Ready when the socket is readable (or closed); registers it first.
    pub fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let State::Joined(s) = &self.state {
            return s.poll_read_ready(cx);
        }
        match self.join() {
            Ok(s) => s.poll_read_ready(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    /// Reads what has arrived without consuming it, waiting for the first byte.
    pub async fn peek(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let State::Fresh(s) = &self.state {
            match s.peek(buf) {
                Err(e) if would_block(&e) => {}
                r => return r,
            }
        }
        self.join()?.peek(buf).await
    }

    /// Reads what has arrived, without waiting: `WouldBlock` when nothing has.
    pub fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.state {
            State::Fresh(s) => s.read(buf),
            State::Joined(s) => s.try_read(buf),
            State::Lost => Err(lost()),
        }
    }

    /// Appends up to `room` bytes of what has arrived to `buf`, without waiting.
    pub fn try_read_into(&mut self, buf: &mut BytesMut, room: usize) -> io::Result<usize> {
        use bytes::BufMut;
        match &mut self.state {
            State::Fresh(s) => read_scratch(s, room, |bytes| buf.extend_from_slice(bytes)),
            State::Joined(s) => s.try_read_buf(&mut (&mut *buf).limit(room)),
            State::Lost => Err(lost()),
        }
    }
}

/// Room for a fresh socket's reads when the caller's buffer is not initialised, which safe
/// code may not read into: the bytes go through this (initialised once per thread) and are
/// copied over, at the cost of what arrived rather than of zeroing the caller's whole buffer
/// (4 KiB for a request head) on every new connection.
const SCRATCH: usize = 16 * 1024;

thread_local! {
    /// Taken for a read and put back after it; made on a thread's first fresh read.
    static SCRATCH_BUF: std::cell::Cell<Option<Box<[u8]>>> = const { std::cell::Cell::new(None) };
}

/// One read of `s` into `buf`, straight when `buf`'s room is initialised.
fn read_into(s: &mut std::net::TcpStream, buf: &mut ReadBuf<'_>) -> io::Result<()> {
    let room = buf.remaining();
    if buf.initialized().len() - buf.filled().len() >= room {
        let n = s.read(buf.initialize_unfilled())?;
        buf.advance(n);
        return Ok(());
    }
    read_scratch(s, room, |bytes| buf.put_slice(bytes)).map(drop)
}

/// One read of at most `room` bytes of `s` through the thread's scratch buffer, handed to
/// `put`.
fn read_scratch(
    s: &mut std::net::TcpStream,
    room: usize,
    put: impl FnOnce(&[u8]),
) -> io::Result<usize> {
    let mut space = SCRATCH_BUF
        .take()
        .unwrap_or_else(|| vec![0; SCRATCH].into_boxed_slice());
    let read = s.read(&mut space[..room.min(SCRATCH)]);
    if let Ok(n) = read {
        put(&space[..n]);
    }
    SCRATCH_BUF.set(Some(space));
    read
}

fn lost() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "the socket could not join the reactor",
    )
}

impl Socket {
    /// One read or write: on a fresh socket straight, unless it would block; then, and on a
    /// registered socket, through tokio's stream, which registers the waker.
    fn poll_io<A, R>(
        &mut self,
        cx: &mut Context<'_>,
        mut arg: A,
        fresh: impl FnOnce(&mut std::net::TcpStream, &mut A) -> io::Result<R>,
        joined: impl FnOnce(Pin<&mut TcpStream>, &mut Context<'_>, &mut A) -> Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        match &mut self.state {
            State::Joined(s) => return joined(Pin::new(s), cx, &mut arg),
            State::Fresh(s) => match fresh(s, &mut arg) {
                Err(e) if would_block(&e) => {}
                r => return Poll::Ready(r),
            },
            State::Lost => {}
        }
        match self.join() {
            Ok(s) => joined(Pin::new(s), cx, &mut arg),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.get_mut().poll_io(
            cx,
            buf,
            |s, buf| read_into(s, buf),
            |s, cx, buf| s.poll_read(cx, buf),
        )
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_io(
            cx,
            buf,
            |s, buf| s.write(buf),
            |s, cx, buf| s.poll_write(cx, buf),
        )
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_io(
            cx,
            bufs,
            |s, bufs| s.write_vectored(bufs),
            |s, cx, bufs| s.poll_write_vectored(cx, bufs),
        )
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().state {
            State::Joined(s) => Pin::new(s).poll_flush(cx),
            _ => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().state {
            State::Fresh(s) => Poll::Ready(s.shutdown(std::net::Shutdown::Write)),
            State::Joined(s) => Pin::new(s).poll_shutdown(cx),
            State::Lost => Poll::Ready(Err(lost())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A connected pair: the accepted side as a fresh socket, and the client.
    async fn pair() -> (Socket, TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let client = TcpStream::connect(l.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (s, _) = l.accept().expect("accept");
        s.set_nonblocking(true).expect("non-blocking");
        (Socket::fresh(s), client)
    }

    /// A request already there is read and answered without registering the socket.
    #[tokio::test]
    async fn what_is_there_is_read_and_answered_without_joining() {
        let (mut s, mut client) = pair().await;
        client.write_all(b"ping").await.expect("write");
        let mut got = [0u8; 4];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while s.peek(&mut got).await.expect("peek") < 4 {
            assert!(
                std::time::Instant::now() < deadline,
                "the bytes never arrived"
            );
            tokio::task::yield_now().await;
        }
        s.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"ping");
        s.write_all(b"pong").await.expect("write");
        assert!(!s.is_joined(), "nothing waited, so nothing registered");
        s.shutdown().await.expect("shutdown");
        let mut back = Vec::new();
        client.read_to_end(&mut back).await.expect("read");
        assert_eq!(back, b"pong");
    }

    /// Reads into buffers that are not initialised (a `BytesMut`'s spare room) go through
    /// the thread's scratch buffer and arrive whole and in order, also past its size.
    #[tokio::test]
    async fn reads_into_uninitialised_room_arrive_whole() {
        let (mut s, mut client) = pair().await;
        let sent: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        // All there before the first read (loopback buffers hold it), so the reads are the
        // fresh socket's own.
        client.write_all(&sent).await.expect("write");
        let mut got = BytesMut::with_capacity(64 * 1024);
        let mut first = 0;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while got.len() < sent.len() {
            assert!(
                std::time::Instant::now() < deadline,
                "stalled at {}",
                got.len()
            );
            let n = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_buf(&mut got))
                .await
                .expect("never woken")
                .expect("read");
            assert!(n > 0, "closed early");
            if first == 0 {
                first = n;
            }
        }
        assert!(first <= SCRATCH, "one read of {first} bytes");
        assert!(!s.is_joined(), "every read found bytes");
        assert_eq!(&got[..], &sent[..]);
        let mut more = BytesMut::from(&b"kept"[..]);
        let nothing = s.try_read_into(&mut more, 10);
        assert!(
            matches!(&nothing, Err(e) if e.kind() == io::ErrorKind::WouldBlock),
            "{nothing:?}"
        );
        client.write_all(b"tail").await.expect("write");
        assert_eq!(s.try_read_into(&mut more, 10).expect("read"), 4);
        assert_eq!(&more[..], b"kepttail");
    }

    /// A read that finds nothing registers the socket and waits for the bytes, which wake it.
    #[tokio::test]
    async fn a_read_that_would_block_joins_and_is_woken() {
        let (mut s, mut client) = pair().await;
        let reader = tokio::spawn(async move {
            let mut got = [0u8; 5];
            s.read_exact(&mut got).await.map(|_| (got, s.is_joined()))
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        client.write_all(b"later").await.expect("write");
        let (got, joined) = tokio::time::timeout(std::time::Duration::from_secs(5), reader)
            .await
            .expect("the read was never woken")
            .expect("task")
            .expect("read");
        assert_eq!(&got, b"later");
        assert!(joined, "the read had to wait, so it registered");
    }

    /// Waiting for readability registers the socket: a fresh socket has no readiness to
    /// report, and a caller that waits must be woken when bytes come.
    #[tokio::test]
    async fn waiting_for_readable_joins() {
        let (mut s, mut client) = pair().await;
        let waited = tokio::spawn(async move {
            std::future::poll_fn(|cx| s.poll_readable(cx))
                .await
                .map(|_| s)
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waited.is_finished(), "readable before any byte was sent");
        client.write_all(b"x").await.expect("write");
        let mut s = tokio::time::timeout(std::time::Duration::from_secs(5), waited)
            .await
            .expect("never woken")
            .expect("task")
            .expect("readable");
        assert!(s.is_joined());
        let mut b = [0u8; 1];
        assert_eq!(s.try_read(&mut b).expect("read"), 1);
    }

    /// A fresh socket handed to a relay becomes tokio's stream, registered and woken.
    #[tokio::test]
    async fn a_fresh_socket_becomes_tokios() {
        let (s, mut client) = pair().await;
        let mut t = s.into_tokio().expect("tokio");
        client.write_all(b"ok").await.expect("write");
        let mut got = [0u8; 2];
        tokio::time::timeout(std::time::Duration::from_secs(5), t.read_exact(&mut got))
            .await
            .expect("never woken")
            .expect("read");
        assert_eq!(&got, b"ok");
    }
}
