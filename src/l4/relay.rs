//! Bidirectional TCP relay with half-close and an idle timeout (never a lifetime cap).
//!
//! On Linux the bytes move with splice(2) through a pipe, never entering user space; a pipe
//! is only created once a direction carries data, so idle connections cost no buffers.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

/// Bytes moved and why the relay ended.
#[derive(Debug, Default, Clone, Copy)]
pub struct Relayed {
    pub to_upstream: u64,
    pub to_client: u64,
    pub idle_timeout: bool,
}

/// Last activity in milliseconds since the relay started.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

/// Copies both ways until both directions end, either fails, or nothing moves for `idle`.
/// An EOF in one direction is passed on as a half-close (shutdown of the write side).
pub async fn relay(client: TcpStream, upstream: TcpStream, idle: Duration) -> Relayed {
    let act = Activity {
        start: Instant::now(),
        last_ms: AtomicU64::new(0),
    };
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

#[cfg(target_os = "linux")]
mod sys {
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

    /// A kernel pipe used as the splice buffer of one direction.
    pub struct Pipe {
        pub r: OwnedFd,
        pub w: OwnedFd,
    }

    impl Pipe {
        pub fn new() -> io::Result<Pipe> {
            let mut fds = [0 as libc::c_int; 2];
            // SAFETY: pipe2 writes two new descriptors into `fds` on success.
            let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
            if rc < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: both descriptors were just created and are owned by nobody else.
            Ok(unsafe {
                Pipe {
                    r: OwnedFd::from_raw_fd(fds[0]),
                    w: OwnedFd::from_raw_fd(fds[1]),
                }
            })
        }
    }

    /// Moves up to `len` bytes between two descriptors without copying through user space.
    pub fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
        // SAFETY: plain syscall on descriptors the caller keeps open for the call's duration;
        // null offsets mean "current position", as required for sockets and pipes.
        let n = unsafe {
            libc::splice(
                from,
                std::ptr::null_mut(),
                to,
                std::ptr::null_mut(),
                len,
                libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    pub fn shutdown_write(s: &tokio::net::TcpStream) {
        // SAFETY: shutdown on a descriptor owned by `s`, which outlives the call.
        unsafe { libc::shutdown(s.as_raw_fd(), libc::SHUT_WR) };
    }
}

/// Bytes one splice call may move; the pipe is drained before the next read.
#[cfg(target_os = "linux")]
const CHUNK: usize = 64 * 1024;

#[cfg(target_os = "linux")]
async fn pump(src: &TcpStream, dst: &TcpStream, act: &Activity) -> io::Result<u64> {
    use std::os::fd::AsRawFd;
    use tokio::io::Interest;

    let mut pipe: Option<sys::Pipe> = None;
    let mut total = 0u64;
    loop {
        src.readable().await?;
        let p = match &pipe {
            Some(p) => p,
            None => pipe.insert(sys::Pipe::new()?),
        };
        let n = match src.try_io(Interest::READABLE, || {
            sys::splice(src.as_raw_fd(), p.w.as_raw_fd(), CHUNK)
        }) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        act.touch();
        let mut left = n;
        while left > 0 {
            dst.writable().await?;
            match dst.try_io(Interest::WRITABLE, || {
                sys::splice(p.r.as_raw_fd(), dst.as_raw_fd(), left)
            }) {
                Ok(m) => left -= m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        total += n as u64;
    }
    sys::shutdown_write(dst);
    Ok(total)
}

#[cfg(not(target_os = "linux"))]
async fn pump(src: &TcpStream, dst: &TcpStream, act: &Activity) -> io::Result<u64> {
    let mut total = 0u64;
    loop {
        src.readable().await?;
        let mut buf = vec![0u8; 16 * 1024];
        let n = match src.try_read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        act.touch();
        let mut off = 0;
        while off < n {
            dst.writable().await?;
            match dst.try_write(&buf[off..n]) {
                Ok(m) => off += m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        total += n as u64;
    }
    // Portable half-close needs `&mut`; off Linux the peer sees EOF when the relay ends.
    let _ = dst;
    Ok(total)
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
        let payload = vec![7u8; 300_000];
        client.write_all(&payload).await.expect("write");
        client.shutdown().await.expect("half-close");
        let mut got = Vec::new();
        upstream
            .read_to_end(&mut got)
            .await
            .expect("upstream reads to EOF");
        assert_eq!(got.len(), payload.len());
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
            (300_000, 29, false)
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
