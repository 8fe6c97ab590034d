//! Bidirectional TCP relay with half-close and an idle timeout (never a lifetime cap).
//!
//! Each direction reads into a large buffer borrowed from a shared pool for as long as bytes
//! keep coming and gives it back as soon as the source would block, so idle connections hold
//! no buffer at all. On this project's benchmark machine a 256 KiB user-space copy beat
//! splice(2) through a pipe (see bench/README.md), so the relay copies.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

/// Bytes moved and why the relay ended.
#[derive(Debug, Default, Clone, Copy)]
pub struct Relayed {
    pub to_upstream: u64,
    pub to_client: u64,
    pub idle_timeout: bool,
}

/// Size of one relay buffer.
const BUF_SIZE: usize = 256 * 1024;
/// Buffers kept for reuse; beyond this they are freed.
const POOL_MAX: usize = 64;

static POOL: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

fn take_buf() -> Vec<u8> {
    let pooled = POOL.lock().ok().and_then(|mut p| p.pop());
    pooled.unwrap_or_else(|| Vec::with_capacity(BUF_SIZE))
}

fn give_buf(mut b: Vec<u8>) {
    b.clear();
    if let Ok(mut p) = POOL.lock() {
        if p.len() < POOL_MAX {
            p.push(b);
        }
    }
}

/// Last activity in milliseconds since the relay started.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        self.last_ms.store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

/// Copies both ways until both directions end, either fails, or nothing moves for `idle`.
/// An EOF in one direction is passed on as a half-close (shutdown of the write side).
pub async fn relay(client: TcpStream, upstream: TcpStream, idle: Duration) -> Relayed {
    let act = Activity { start: Instant::now(), last_ms: AtomicU64::new(0) };
    let up = pump(&client, &upstream, &act);
    let down = pump(&upstream, &client, &act);
    tokio::pin!(up, down);
    let mut out = Relayed::default();
    let (mut up_done, mut down_done) = (false, false);
    let idle_ms = idle.as_millis() as u64;
    while !(up_done && down_done) {
        let last = act.last_ms.load(Ordering::Relaxed);
        let deadline = act.start + Duration::from_millis(last + idle_ms);
        tokio::select! {
            r = &mut up, if !up_done => {
                up_done = true;
                match r { Ok(n) => out.to_upstream = n, Err(_) => break }
            }
            r = &mut down, if !down_done => {
                down_done = true;
                match r { Ok(n) => out.to_client = n, Err(_) => break }
            }
            _ = tokio::time::sleep_until(deadline.into()) => {
                if act.last_ms.load(Ordering::Relaxed) == last {
                    out.idle_timeout = true;
                    break;
                }
            }
        }
    }
    out
}

/// One direction: read a burst, write it all, repeat; EOF becomes a half-close.
async fn pump(src: &TcpStream, dst: &TcpStream, act: &Activity) -> io::Result<u64> {
    let mut total = 0u64;
    let mut buf: Option<Vec<u8>> = None;
    let result = loop {
        if let Err(e) = src.readable().await {
            break Err(e);
        }
        let b = buf.get_or_insert_with(take_buf);
        b.clear();
        let n = match src.try_read_buf(b) {
            Ok(0) => break Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // Idle for now: give the buffer back while we wait.
                if let Some(b) = buf.take() {
                    give_buf(b);
                }
                continue;
            }
            Err(e) => break Err(e),
        };
        act.touch();
        if let Err(e) = write_all(dst, &b[..n]).await {
            break Err(e);
        }
        total += n as u64;
    };
    if let Some(b) = buf.take() {
        give_buf(b);
    }
    result?;
    let _ = socket2::SockRef::from(dst).shutdown(std::net::Shutdown::Write);
    Ok(total)
}

async fn write_all(dst: &TcpStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        dst.writable().await?;
        match dst.try_write(data) {
            Ok(m) => data = &data[m..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let a = TcpStream::connect(l.local_addr().expect("addr")).await.expect("connect");
        let (b, _) = l.accept().await.expect("accept");
        (a, b)
    }

    #[tokio::test]
    async fn moves_bytes_both_ways_with_half_close() {
        let (mut client, proxy_client_side) = pair().await;
        let (proxy_up_side, mut upstream) = pair().await;
        let task = tokio::spawn(relay(proxy_client_side, proxy_up_side, Duration::from_secs(5)));
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
        upstream.read_to_end(&mut got).await.expect("upstream reads to EOF");
        assert!(got == payload, "bytes arrive intact and in order");
        let mut client = writer.await.expect("writer");
        upstream.write_all(b"reply after client half-close").await.expect("reply");
        drop(upstream);
        let mut back = Vec::new();
        client.read_to_end(&mut back).await.expect("client reads reply");
        assert_eq!(back, b"reply after client half-close");
        let r = task.await.expect("relay");
        assert_eq!((r.to_upstream, r.to_client, r.idle_timeout), (3_000_000, 29, false));
    }

    #[tokio::test]
    async fn idle_relay_is_closed() {
        let (mut client, a) = pair().await;
        let (b, _upstream) = pair().await;
        let r = relay(a, b, Duration::from_millis(100)).await;
        assert!(r.idle_timeout);
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(2), client.read(&mut buf)).await.expect("closed promptly");
        assert!(matches!(n, Ok(0) | Err(_)));
    }
}
