//! Where listening sockets come from: bound here (with `SO_REUSEPORT` when `REUSE_PORT` is
//! set, so several processes can serve one port), or handed over by the process this one
//! replaces (a hitless upgrade), in which case the port is never closed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::Mutex;

use crate::config::{ListenerKey, Proto};

/// Sockets inherited from the previous process by name (`tcp:PORT`, `udp:PORT`,
/// `management`, `metrics`), taken once each by whoever binds that name.
#[derive(Default, Debug)]
pub struct Inherited(Mutex<HashMap<String, OwnedFd>>);

impl Inherited {
    pub fn new(fds: HashMap<String, OwnedFd>) -> Self {
        Self(Mutex::new(fds))
    }

    fn take(&self, name: &str) -> Option<OwnedFd> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name)
    }

    /// The listening TCP socket named `name`, if it was handed over.
    pub fn take_tcp(&self, name: &str) -> std::io::Result<Option<tokio::net::TcpListener>> {
        let Some(fd) = self.take(name) else {
            return Ok(None);
        };
        let l = std::net::TcpListener::from(fd);
        l.set_nonblocking(true)?;
        tokio::net::TcpListener::from_std(l).map(Some)
    }

    /// True while the socket named `name` waits to be claimed.
    pub fn holds(&self, name: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(name)
    }

    /// Closes the sockets nothing claimed (ports the new config no longer has); their count.
    pub fn close_unclaimed(&self) -> usize {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.len();
        m.clear();
        n
    }
}

/// The listening TCP socket of `key`: inherited, or bound to `addr`.
pub fn tcp(
    inherited: &Inherited,
    key: ListenerKey,
    addr: SocketAddr,
    reuse_port: bool,
) -> std::io::Result<tokio::net::TcpListener> {
    if let Some(l) = inherited.take_tcp(&key.to_string())? {
        return Ok(l);
    }
    let sock = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    sock.set_reuseaddr(true)?;
    if reuse_port {
        sock.set_reuseport(true)?;
    }
    // Linux hands TCP_NODELAY down to accepted sockets: one setsockopt per listener instead
    // of one per connection.
    sock.set_nodelay(true)?;
    sock.bind(addr)?;
    sock.listen(4096)
}

/// Whether the connections `listener` accepts acknowledge their first data at once (Linux's
/// quick-ack mode for new connections, the default) or with the answer, as later data is.
/// Linux hands a listening socket's setting (made after `listen`, which clears it) to the
/// sockets it accepts. Held, a new connection whose request is answered straight away (HTTP
/// served by vane) sends one packet less each way: a connection per request paid for a bare
/// ACK every time. HAProxy's HTTP listeners hold it too. Best effort.
pub fn hold_first_ack(listener: &impl std::os::fd::AsFd, hold: bool) {
    #[cfg(target_os = "linux")]
    let _ = socket2::SockRef::from(listener).set_tcp_quickack(!hold);
    #[cfg(not(target_os = "linux"))]
    let _ = (listener, hold);
}

/// The UDP socket of `key`: inherited, or bound to `addr`.
pub fn udp(
    inherited: &Inherited,
    key: ListenerKey,
    addr: SocketAddr,
    reuse_port: bool,
) -> std::io::Result<tokio::net::UdpSocket> {
    debug_assert_eq!(key.proto, Proto::Udp);
    let std_sock = match inherited.take(&key.to_string()) {
        Some(fd) => std::net::UdpSocket::from(fd),
        None => {
            let domain = socket2::Domain::for_address(addr);
            let s =
                socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
            if reuse_port {
                s.set_reuse_port(true)?;
            }
            s.bind(&addr.into())?;
            s.into()
        }
    };
    std_sock.set_nonblocking(true)?;
    tokio::net::UdpSocket::from_std(std_sock)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(port: u16, proto: Proto) -> ListenerKey {
        ListenerKey { port, proto }
    }

    /// The session relies on this instead of a setsockopt per connection.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn accepted_sockets_inherit_no_delay() {
        let none = Inherited::default();
        let l = tcp(
            &none,
            key(1, Proto::Tcp),
            "127.0.0.1:0".parse().expect("addr"),
            false,
        )
        .expect("bind");
        let addr = l.local_addr().expect("addr");
        let client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (accepted, _) = l.accept().await.expect("accept");
        assert!(accepted.nodelay().expect("getsockopt"));
        drop(client);
    }

    #[tokio::test]
    async fn an_inherited_socket_is_used_once_instead_of_binding() {
        let std_l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = std_l.local_addr().expect("addr");
        let std_u = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let uaddr = std_u.local_addr().expect("addr");
        let k = key(addr.port(), Proto::Tcp);
        let u = key(uaddr.port(), Proto::Udp);
        let inherited = Inherited::new(HashMap::from([
            (k.to_string(), OwnedFd::from(std_l)),
            (u.to_string(), OwnedFd::from(std_u)),
        ]));
        // Binding the same address again would fail with EADDRINUSE: it is not bound again.
        let l = tcp(&inherited, k, addr, false).expect("inherited");
        assert_eq!(l.local_addr().expect("addr"), addr);
        let client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        assert!(l.accept().await.is_ok());
        drop(client);
        let s = udp(&inherited, u, uaddr, false).expect("inherited");
        assert_eq!(s.local_addr().expect("addr"), uaddr);
        assert!(!inherited.holds(&k.to_string()) && !inherited.holds(&u.to_string()));
        assert!(tcp(&inherited, k, addr, false).is_err(), "taken once");
    }

    #[tokio::test]
    async fn reuse_port_lets_two_sockets_share_a_port() {
        let none = Inherited::default();
        let a = tcp(
            &none,
            key(1, Proto::Tcp),
            "127.0.0.1:0".parse().expect("addr"),
            true,
        )
        .expect("bind");
        let addr = a.local_addr().expect("addr");
        assert!(tcp(&none, key(1, Proto::Tcp), addr, true).is_ok());
        assert!(tcp(&none, key(1, Proto::Tcp), addr, false).is_err());
        let u = udp(
            &none,
            key(1, Proto::Udp),
            "127.0.0.1:0".parse().expect("addr"),
            true,
        )
        .expect("bind");
        let uaddr = u.local_addr().expect("addr");
        assert!(udp(&none, key(1, Proto::Udp), uaddr, true).is_ok());
        assert!(udp(&none, key(1, Proto::Udp), uaddr, false).is_err());
    }
}
