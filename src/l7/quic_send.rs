//! Sends of our HTTP/3 endpoints from the UDP listener's socket, in batches: quinn hands over
//! up to ten datagrams of one size for one peer, and one `sendmsg` carrying a `UDP_SEGMENT`
//! control message (generic segmentation offload) sends them all; the kernel cuts them apart.
//! The option rides on each message, not on the socket, so the listener's other traffic on the
//! shared socket is untouched. One datagram per system call held HTTP/3 downloads to a
//! fraction of HTTP/2 over TLS. Where the kernel refuses the option, each datagram goes alone
//! from then on. The system call itself is in `vane-sys`, which holds the workspace's unsafe
//! code.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};

use quinn::udp::Transmit;
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Datagrams quinn may batch into one transmit (its own ceiling is ten).
pub const MAX_SEGMENTS: usize = 10;

/// The batching state of one endpoint's socket.
#[derive(Debug)]
pub struct Batcher {
    gso: AtomicBool,
}

impl Default for Batcher {
    fn default() -> Self {
        Self {
            gso: AtomicBool::new(cfg!(target_os = "linux")),
        }
    }
}

impl Batcher {
    /// How many datagrams one transmit may carry.
    pub fn max_segments(&self) -> usize {
        if self.gso.load(Ordering::Relaxed) {
            MAX_SEGMENTS
        } else {
            1
        }
    }

    /// Sends `t` (one datagram, or several of `segment_size` bytes) without blocking;
    /// `WouldBlock` leaves the socket's readiness cleared for the next wait.
    pub fn try_send(&self, socket: &UdpSocket, t: &Transmit<'_>) -> io::Result<()> {
        let segment = t.segment_size.filter(|&s| s > 0 && s < t.contents.len());
        let Some(segment) = segment else {
            return socket.try_send_to(t.contents, t.destination).map(|_| ());
        };
        if self.gso.load(Ordering::Relaxed) {
            let Ok(size) = u16::try_from(segment) else {
                return one_by_one(socket, t.contents, segment, t.destination);
            };
            let sent = socket.try_io(Interest::WRITABLE, || {
                vane_sys::send_segmented(socket.as_fd(), t.destination, t.contents, size)
            });
            match sent {
                Err(e) if vane_sys::refused_offload(&e) => {
                    tracing::debug!(
                        "UDP segmentation offload refused ({e}); sending datagrams one by one"
                    );
                    self.gso.store(false, Ordering::Relaxed);
                }
                other => return other,
            }
        }
        one_by_one(socket, t.contents, segment, t.destination)
    }
}

/// Each datagram of `contents` (cut every `segment` bytes) in its own send.
fn one_by_one(
    socket: &UdpSocket,
    contents: &[u8],
    segment: usize,
    to: SocketAddr,
) -> io::Result<()> {
    for datagram in contents.chunks(segment) {
        socket.try_send_to(datagram, to)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ten datagrams of 1,200 bytes (the last shorter) in one transmit arrive as ten
    /// datagrams with their bytes in order, batched or not.
    #[tokio::test]
    async fn a_segmented_transmit_arrives_as_its_datagrams() {
        let rx = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let tx = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let to = rx.local_addr().expect("addr");
        let contents: Vec<u8> = (0..11_000u32).map(|i| (i % 251) as u8).collect();
        for batcher in [
            Batcher::default(),
            Batcher {
                gso: AtomicBool::new(false),
            },
        ] {
            let t = Transmit {
                destination: to,
                ecn: None,
                contents: &contents,
                segment_size: Some(1200),
                src_ip: None,
            };
            tx.writable().await.expect("writable");
            batcher.try_send(&tx, &t).expect("send");
            let mut got = Vec::new();
            for i in 0..10 {
                let mut buf = [0u8; 2048];
                let n = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv(&mut buf))
                    .await
                    .expect("a datagram in time")
                    .expect("recv");
                assert_eq!(n, if i < 9 { 1200 } else { 200 }, "datagram {i}");
                got.extend_from_slice(&buf[..n]);
            }
            assert_eq!(got, contents);
        }
    }

    /// A batch the kernel refuses to segment (more segments than it allows in one send) still
    /// goes out, one datagram at a time, and batching stays off from then on.
    #[tokio::test]
    async fn a_refused_batch_falls_back_to_single_datagrams() {
        let rx = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let tx = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let contents: Vec<u8> = (0..2000u32).map(|i| (i % 251) as u8).collect();
        let t = Transmit {
            destination: rx.local_addr().expect("addr"),
            ecn: None,
            contents: &contents,
            segment_size: Some(10),
            src_ip: None,
        };
        let batcher = Batcher::default();
        tx.writable().await.expect("writable");
        batcher.try_send(&tx, &t).expect("send");
        assert_eq!(batcher.max_segments(), 1, "batching turned off");
        let mut got = Vec::new();
        for _ in 0..200 {
            let mut buf = [0u8; 64];
            let n = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv(&mut buf))
                .await
                .expect("a datagram in time")
                .expect("recv");
            assert_eq!(n, 10);
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, contents);
    }
}
