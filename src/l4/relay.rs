//! Bidirectional TCP relay with half-close and an idle timeout (never a lifetime cap).
//!
//! Each direction reads into a large buffer borrowed from a shared pool for as long as bytes
//! keep coming and gives it back as soon as the source would block, so idle connections hold
//! no buffer at all. On this project's benchmark machine a 256 KiB user-space copy beat
//! splice(2) through a pipe (see bench/README.md), so the relay copies.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::TcpStream;

/// Bytes moved and why the relay ended.
#[derive(Debug, Default, Clone, Copy)]
pub struct Relayed {
    pub to_upstream: u64,
    pub to_client: u64,
    pub idle_timeout: bool,
}

fn take_buf() -> Vec<u8> {
    super::buffers::RELAY.take()
}

fn give_buf(b: Vec<u8>) {
    super::buffers::RELAY.give(b)
}

/// One direction of a relay: a burst in flight (if any) and what has been moved.
#[derive(Default)]
struct Dir {
    buf: Option<Vec<u8>>,
    /// `buf[pos..end]` is read but not yet written.
    pos: usize,
    end: usize,
    eof: bool,
    done: bool,
    total: u64,
}

impl Dir {
    fn release(&mut self) {
        if let Some(b) = self.buf.take() {
            give_buf(b);
        }
    }
}

/// Moves bytes from `src` to `dst` until it would block; `Ready(Ok)` once EOF has been passed
/// on. Readiness is polled directly on the sockets (no per-await futures), so a relay costs a
/// few hundred bytes, not kilobytes. `last` says the other direction has ended: then the
/// EOF needs no half-close, as both sockets are about to be closed.
fn poll_dir(
    cx: &mut Context<'_>,
    src: &mut TcpStream,
    dst: &TcpStream,
    d: &mut Dir,
    last: bool,
    moved: &mut bool,
) -> Poll<io::Result<()>> {
    loop {
        if let Some(b) = &d.buf {
            while d.pos < d.end {
                ready!(dst.poll_write_ready(cx))?;
                match dst.try_write(&b[d.pos..d.end]) {
                    Ok(n) => d.pos += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
        }
        if d.eof {
            d.release();
            if !last {
                let _ = socket2::SockRef::from(dst).shutdown(std::net::Shutdown::Write);
            }
            d.done = true;
            return Poll::Ready(Ok(()));
        }
        let b = d.buf.get_or_insert_with(take_buf);
        let mut rb = ReadBuf::new(b);
        // `AsyncRead::poll_read` (unlike `try_read`) drops the readiness after a short read,
        // which saves the extra read that would only say EAGAIN.
        match Pin::new(&mut *src).poll_read(cx, &mut rb) {
            Poll::Pending => {
                // Nothing to do until the peer sends: hold no buffer meanwhile.
                d.release();
                return Poll::Pending;
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Ready(Ok(())) => {}
        }
        let n = rb.filled().len();
        d.pos = 0;
        d.end = n;
        if n == 0 {
            d.eof = true;
        } else {
            d.total += n as u64;
            *moved = true;
        }
    }
}

pin_project_lite::pin_project! {
    /// The relay of one connection pair; resolves when both directions ended, one failed, or
    /// nothing moved for the idle timeout.
    struct Relay {
        client: TcpStream,
        upstream: TcpStream,
        up: Dir,
        down: Dir,
        idle: Duration,
        last: Instant,
        #[pin]
        timer: tokio::time::Sleep,
    }

    impl PinnedDrop for Relay {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            this.up.release();
            this.down.release();
        }
    }
}

impl Future for Relay {
    type Output = Relayed;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Relayed> {
        let mut this = self.project();
        let mut moved = false;
        let mut failed = false;
        if !this.up.done {
            let last = this.down.done;
            failed |= matches!(
                poll_dir(cx, this.client, this.upstream, this.up, last, &mut moved),
                Poll::Ready(Err(_))
            );
        }
        if !this.down.done && !failed {
            let last = this.up.done;
            failed |= matches!(
                poll_dir(cx, this.upstream, this.client, this.down, last, &mut moved),
                Poll::Ready(Err(_))
            );
        }
        let out = |idle_timeout| Relayed {
            to_upstream: this.up.total,
            to_client: this.down.total,
            idle_timeout,
        };
        if failed || (this.up.done && this.down.done) {
            return Poll::Ready(out(false));
        }
        if moved {
            *this.last = Instant::now();
        }
        // The timer is only re-armed when it fires, not on every burst.
        while this.timer.as_mut().poll(cx).is_ready() {
            let deadline = *this.last + *this.idle;
            if Instant::now() >= deadline {
                return Poll::Ready(out(true));
            }
            this.timer.as_mut().reset(deadline.into());
        }
        Poll::Pending
    }
}

/// Copies both ways until both directions end, either fails, or nothing moves for `idle`.
/// An EOF in one direction is passed on as a half-close (shutdown of the write side).
pub async fn relay(client: TcpStream, upstream: TcpStream, idle: Duration) -> Relayed {
    let now = Instant::now();
    Relay {
        client,
        upstream,
        up: Dir::default(),
        down: Dir::default(),
        idle,
        last: now,
        timer: tokio::time::sleep_until((now + idle).into()),
    }
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let a = TcpStream::connect(l.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (b, _) = l.accept().await.expect("accept");
        (a, b)
    }

    #[tokio::test]
    async fn moves_bytes_both_ways_with_half_close() {
        let (mut client, proxy_client_side) = pair().await;
        let (proxy_up_side, mut upstream) = pair().await;
        let task = tokio::spawn(relay(
            proxy_client_side,
            proxy_up_side,
            Duration::from_secs(5),
        ));
        let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let writer = {
            let payload = payload.clone();
            tokio::spawn(async move {
                client.write_all(&payload).await.expect("write");
                client.shutdown().await.expect("half-close");
                client
            })
        };
        let mut got = Vec::new();
        upstream
            .read_to_end(&mut got)
            .await
            .expect("upstream reads to EOF");
        assert!(got == payload, "bytes arrive intact and in order");
        let mut client = writer.await.expect("writer");
        upstream
            .write_all(b"reply after client half-close")
            .await
            .expect("reply");
        drop(upstream);
        let mut back = Vec::new();
        client
            .read_to_end(&mut back)
            .await
            .expect("client reads reply");
        assert_eq!(back, b"reply after client half-close");
        let r = task.await.expect("relay");
        assert_eq!(
            (r.to_upstream, r.to_client, r.idle_timeout),
            (3_000_000, 29, false)
        );
    }

    #[tokio::test]
    async fn idle_relay_is_closed() {
        let (mut client, a) = pair().await;
        let (b, _upstream) = pair().await;
        let r = relay(a, b, Duration::from_millis(100)).await;
        assert!(r.idle_timeout);
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(2), client.read(&mut buf))
            .await
            .expect("closed promptly");
        assert!(matches!(n, Ok(0) | Err(_)));
    }
}
#[cfg(test)]
mod footprint {
    use super::*;

    /// Idle relays are the bulk of a busy proxy's memory; keep their state small.
    #[tokio::test]
    async fn relay_state_stays_small() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let a = TcpStream::connect(l.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (b, _) = l.accept().await.expect("accept");
        let size = std::mem::size_of_val(&relay(a, b, Duration::from_secs(1)));
        assert!(size <= 512, "relay future is {size} bytes");
    }
}
