//! The system calls Vane needs that neither the standard library nor rustix offers, each
//! behind a safe function, and the process allocator (`alloc`). All of the workspace's
//! `unsafe` lives here, small and reviewed; the `vane` crate forbids it.

pub mod alloc;
pub mod clock;
pub mod cpu;
pub mod sched;
pub mod watch;

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd};

/// The kernel (or the device) cannot segment a send: EIO or EINVAL on a segmented `sendmsg`
/// (and every error where segmentation offload does not exist).
pub fn refused_offload(e: &io::Error) -> bool {
    !cfg!(target_os = "linux") || matches!(e.raw_os_error(), Some(libc::EIO | libc::EINVAL))
}

/// Sends `data` to `to` in one `sendmsg` that the kernel cuts into UDP datagrams of
/// `segment` bytes (the last may be shorter): a `UDP_SEGMENT` control message, which applies
/// to this message only. Non-blocking sockets report `WouldBlock` as usual.
#[cfg(target_os = "linux")]
pub fn send_segmented(
    socket: BorrowedFd<'_>,
    to: SocketAddr,
    data: &[u8],
    segment: u16,
) -> io::Result<()> {
    /// Missing from some libc targets' constants.
    const UDP_SEGMENT: libc::c_int = 103;
    let addr = socket2::SockAddr::from(to);
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // Room for one control message carrying a u16, aligned for `cmsghdr`.
    let mut control = [0u64; 4];
    let payload = std::mem::size_of::<u16>() as u32;
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(payload) } as usize;
    if space > std::mem::size_of_val(&control) {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: every pointer in `msg` points into locals that outlive the call (`addr`, `iov`,
    // `data`, `control`) and comes with its true length; the kernel only reads them. The
    // control message is written through CMSG_FIRSTHDR and CMSG_DATA inside `control`, which
    // holds `space` bytes (checked above).
    let sent = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_name = addr.as_ptr() as *mut libc::c_void;
        msg.msg_namelen = addr.len();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null() {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        (*cmsg).cmsg_level = libc::SOL_UDP;
        (*cmsg).cmsg_type = UDP_SEGMENT;
        (*cmsg).cmsg_len = libc::CMSG_LEN(payload) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), segment);
        libc::sendmsg(socket.as_raw_fd(), &msg, 0)
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Segmentation offload does not exist here: always refused.
#[cfg(not(target_os = "linux"))]
pub fn send_segmented(_: BorrowedFd<'_>, _: SocketAddr, _: &[u8], _: u16) -> io::Result<()> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn one_send_arrives_as_datagrams_of_the_segment_size() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        rx.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .expect("timeout");
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let data: Vec<u8> = (0..2500u32).map(|i| (i % 251) as u8).collect();
        send_segmented(tx.as_fd(), rx.local_addr().expect("addr"), &data, 1000).expect("send");
        let mut got = Vec::new();
        for want in [1000, 1000, 500] {
            let mut buf = [0u8; 4096];
            let n = rx.recv(&mut buf).expect("a datagram");
            assert_eq!(n, want);
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, data);
    }
}
