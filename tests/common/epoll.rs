//! Which of a process's sockets its epoll instances watch, read from /proc.

use std::collections::BTreeSet;
use std::net::SocketAddr;

/// `addr` as /proc/net/tcp writes an IPv4 address: the address's 32-bit value in host
/// order, then the port, both in upper-case hex.
fn proc_net_addr(addr: SocketAddr) -> Option<String> {
    match addr {
        SocketAddr::V4(a) => Some(format!(
            "{:08X}:{:04X}",
            u32::from_ne_bytes(a.ip().octets()),
            a.port()
        )),
        SocketAddr::V6(_) => None,
    }
}

/// The descriptor of `pid` holding the TCP connection from `local` to `remote` (IPv4).
pub fn socket_fd(pid: u32, local: SocketAddr, remote: SocketAddr) -> Option<u32> {
    let (l, r) = (proc_net_addr(local)?, proc_net_addr(remote)?);
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).ok()?;
    let inode = table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.get(1) == Some(&l.as_str()) && f.get(2) == Some(&r.as_str()))
            .then(|| f.get(9).map(|s| s.to_string()))
            .flatten()
    })?;
    let want = format!("socket:[{inode}]");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .flatten()
        .find_map(|e| {
            let target = std::fs::read_link(e.path()).ok()?;
            (target.to_str() == Some(want.as_str()))
                .then(|| e.file_name().to_str()?.parse().ok())
                .flatten()
        })
}

/// Every descriptor some epoll instance of `pid` watches (the `tfd:` lines of each epoll
/// descriptor's fdinfo).
pub fn watched_fds(pid: u32) -> BTreeSet<u32> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return BTreeSet::new();
    };
    dir.flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .flat_map(|info| {
            info.lines()
                .filter_map(|l| {
                    l.strip_prefix("tfd:")?
                        .split_whitespace()
                        .next()?
                        .parse()
                        .ok()
                })
                .collect::<Vec<u32>>()
        })
        .collect()
}
