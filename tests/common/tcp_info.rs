//! What the kernel says about a test's own TCP socket.

use std::net::TcpStream;

/// Segments a socket has received: `tcpi_segs_in` of Linux's `struct tcp_info` (Linux 4.2
/// on), which grows only at its end, so the field stays at byte 140.
pub fn segments_in(s: &TcpStream) -> u32 {
    use std::os::fd::AsRawFd;
    let mut info = [0u8; 256];
    let mut len = info.len() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `info` and stores the count in `len`.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
    assert!(
        len >= 144,
        "struct tcp_info of {len} bytes has no tcpi_segs_in"
    );
    u32::from_ne_bytes(info[140..144].try_into().expect("4 bytes"))
}
