//! The hand-over protocol between an old and a new vane process on one Unix stream socket:
//! batches of `[u32 length][JSON header]` with up to [`MAX_FDS`] sockets attached as
//! `SCM_RIGHTS`, each header naming its sockets in order; then the new process writes
//! `ready\n` once it serves. Sans policy: what to send is the caller's.

use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use serde::{Deserialize, Serialize};

/// Sockets per message (the kernel's SCM_MAX_FD is 253).
pub const MAX_FDS: usize = 200;
/// The largest header accepted (a session list of a busy UDP port fits easily).
const MAX_HEADER: usize = 64 << 20;

/// One batch: the names of its sockets, in the order they are attached.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Batch {
    pub names: Vec<String>,
    /// Live UDP sessions of the old process (`udp:PORT`, client address): their datagrams are
    /// relayed back to it.
    #[serde(default)]
    pub sessions: Vec<(String, String)>,
    /// More batches follow.
    pub more: bool,
}

/// Sends one batch with its sockets.
pub fn send(s: &UnixStream, batch: &Batch, fds: &[BorrowedFd<'_>]) -> std::io::Result<()> {
    let json = serde_json::to_vec(batch).map_err(std::io::Error::other)?;
    let len = u32::try_from(json.len())
        .map_err(|_| std::io::Error::other("hand-over header too large"))?
        .to_be_bytes();
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(std::io::Error::other("too many sockets in one batch"));
    }
    let iov = [IoSlice::new(&len), IoSlice::new(&json)];
    let total = len.len() + json.len();
    let sent = sendmsg(s.as_fd(), &iov, &mut control, SendFlags::empty())?;
    // The sockets went with the first byte; the rest of the header, if the kernel took only a
    // part, follows as plain bytes.
    let mut rest = Vec::with_capacity(total);
    rest.extend_from_slice(&len);
    rest.extend_from_slice(&json);
    (&*s).write_all(&rest[sent..])
}

/// Receives one batch and its sockets (named in order).
pub fn recv(s: &UnixStream) -> std::io::Result<(Batch, Vec<(String, OwnedFd)>)> {
    let mut first = vec![0u8; 64 * 1024];
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = recvmsg(
        s.as_fd(),
        &mut [IoSliceMut::new(&mut first)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fds: Vec<OwnedFd> = Vec::new();
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = msg {
            fds.extend(received);
        }
    }
    let n = got.bytes;
    if n < 4 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the old process closed the hand-over",
        ));
    }
    let len = u32::from_be_bytes([first[0], first[1], first[2], first[3]]) as usize;
    if len > MAX_HEADER {
        return Err(std::io::Error::other("hand-over header too large"));
    }
    let mut json = first[4..n].to_vec();
    if json.len() > len {
        return Err(std::io::Error::other("hand-over batches out of step"));
    }
    let mut more = vec![0u8; len - json.len()];
    (&*s).read_exact(&mut more)?;
    json.extend_from_slice(&more);
    let batch: Batch = serde_json::from_slice(&json).map_err(std::io::Error::other)?;
    if batch.names.len() != fds.len() {
        return Err(std::io::Error::other(format!(
            "{} names for {} sockets",
            batch.names.len(),
            fds.len()
        )));
    }
    let named = batch.names.iter().cloned().zip(fds).collect();
    Ok((batch, named))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_cross_with_their_names() {
        let (a, b) = UnixStream::pair().expect("pair");
        let l1 = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let l2 = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let (p1, p2) = (
            l1.local_addr().expect("addr"),
            l2.local_addr().expect("addr"),
        );
        let batch = Batch {
            names: vec!["tcp:1".into(), "udp:2".into()],
            sessions: (0..5000)
                .map(|i| {
                    (
                        "udp:2".to_string(),
                        format!("10.0.{}.{}:5353", i / 250, i % 250),
                    )
                })
                .collect(),
            more: false,
        };
        let sender = std::thread::spawn(move || {
            send(&a, &batch, &[l1.as_fd(), l2.as_fd()]).expect("send");
        });
        let (got, fds) = recv(&b).expect("recv");
        sender.join().expect("sender");
        assert_eq!(got.sessions.len(), 5000);
        assert_eq!(fds.len(), 2);
        let mut it = fds.into_iter();
        let (n1, f1) = it.next().expect("first");
        let (n2, f2) = it.next().expect("second");
        assert_eq!(n1, "tcp:1");
        assert_eq!(std::net::TcpListener::from(f1).local_addr().ok(), Some(p1));
        assert_eq!(n2, "udp:2");
        assert_eq!(std::net::UdpSocket::from(f2).local_addr().ok(), Some(p2));
    }

    #[test]
    fn a_closed_peer_is_an_error_not_a_hang() {
        let (a, b) = UnixStream::pair().expect("pair");
        drop(a);
        assert!(recv(&b).is_err());
    }
}
