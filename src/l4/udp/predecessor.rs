//! UDP across a hitless upgrade. The new process receives every datagram of a handed-over
//! socket, but the sessions the old process still serves (forwarded QUIC connections among
//! them) live there until idle: their datagrams are relayed to it over a Unix datagram socket,
//! and it answers from its own copy of the listening socket. When the old process is gone the
//! relay fails once and those clients start fresh sessions here.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

use super::super::L4;
use crate::config::{ListenerKey, Proto};

/// The new process's view of the old one.
pub struct Predecessor {
    sock: UnixDatagram,
    clients: DashMap<(u16, SocketAddr), ()>,
    gone: AtomicBool,
}

impl Predecessor {
    /// `sessions`: (`udp:PORT`, client address) of the old process's live sessions.
    pub fn new(sock: OwnedFd, sessions: &[(String, String)]) -> std::io::Result<Self> {
        let sock = UnixDatagram::from(sock);
        sock.set_nonblocking(true)?;
        let clients = DashMap::new();
        for (listener, client) in sessions {
            let port = listener
                .strip_prefix("udp:")
                .and_then(|p| p.parse::<u16>().ok());
            if let (Some(port), Ok(addr)) = (port, client.parse::<SocketAddr>()) {
                clients.insert((port, addr), ());
            }
        }
        Ok(Self {
            sock,
            clients,
            gone: AtomicBool::new(false),
        })
    }

    /// True when `peer`'s datagrams on `key` belong to a session of the old process.
    pub fn owns(&self, key: ListenerKey, peer: SocketAddr) -> bool {
        !self.gone.load(Ordering::Relaxed) && self.clients.contains_key(&(key.port, peer))
    }

    /// Relays one datagram; false when the old process is gone (then nothing is relayed any
    /// more). A full relay queue drops the datagram, as a full socket buffer would.
    pub fn relay(&self, key: ListenerKey, peer: SocketAddr, data: &[u8]) -> bool {
        match self.sock.send(&encode(key.port, peer, data)) {
            Ok(_) => true,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                metrics::counter!("vane_udp_dropped_total", "reason" => "upgrade_relay_full")
                    .increment(1);
                true
            }
            Err(_) => {
                if !self.gone.swap(true, Ordering::Relaxed) {
                    tracing::info!(
                        "the previous process is gone; its {} UDP client(s) start new sessions here",
                        self.clients.len()
                    );
                }
                self.clients.clear();
                false
            }
        }
    }
}

/// `[port u16][family 4|6][ip][client port u16][payload]`.
fn encode(port: u16, peer: SocketAddr, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 21);
    out.extend_from_slice(&port.to_be_bytes());
    match peer {
        SocketAddr::V4(a) => {
            out.push(4);
            out.extend_from_slice(&a.ip().octets());
        }
        SocketAddr::V6(a) => {
            out.push(6);
            out.extend_from_slice(&a.ip().octets());
        }
    }
    out.extend_from_slice(&peer.port().to_be_bytes());
    out.extend_from_slice(data);
    out
}

fn decode(b: &[u8]) -> Option<(u16, SocketAddr, &[u8])> {
    let port = u16::from_be_bytes([*b.first()?, *b.get(1)?]);
    let (ip, rest): (std::net::IpAddr, &[u8]) = match *b.get(2)? {
        4 => {
            let o: [u8; 4] = b.get(3..7)?.try_into().ok()?;
            (o.into(), b.get(7..)?)
        }
        6 => {
            let o: [u8; 16] = b.get(3..19)?.try_into().ok()?;
            (o.into(), b.get(19..)?)
        }
        _ => return None,
    };
    let cport = u16::from_be_bytes([*rest.first()?, *rest.get(1)?]);
    Some((port, SocketAddr::new(ip, cport), rest.get(2..)?))
}

/// The old process after the hand-over: delivers relayed datagrams to its sessions until the
/// new process closes the relay (it exits) or this task is dropped.
pub async fn serve_relayed(rt: Arc<L4>, sock: tokio::net::UnixDatagram) {
    let mut buf = vec![0u8; 65_535 + 21];
    while let Ok(n) = sock.recv(&mut buf).await {
        let Some((port, peer, data)) = decode(&buf[..n]) else {
            continue;
        };
        let key = ListenerKey {
            port,
            proto: Proto::Udp,
        };
        let Some(sessions) = rt.udp.sessions_of(key) else {
            continue;
        };
        if let Some(s) = sessions.get(&peer).map(|s| s.clone()) {
            let _ = super::session::deliver(&rt, &s, data);
        } else if let Some(p) = rt.udp.cids.lookup(key, data).and_then(|c| c.path_at(peer)) {
            let _ = super::session::deliver(&rt, &p, data);
        }
    }
}

/// The live sessions of every UDP listener, as the hand-over lists them.
pub fn live_sessions(rt: &L4) -> Vec<(String, String)> {
    rt.udp.session_list()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_bad_ones_are_refused() {
        for peer in ["10.1.2.3:4433", "[2001:db8::7]:9"] {
            let peer: SocketAddr = peer.parse().expect("addr");
            let f = encode(8443, peer, b"quic bytes");
            assert_eq!(decode(&f), Some((8443, peer, &b"quic bytes"[..])));
            for cut in 0..f.len() - 10 {
                let _ = decode(&f[..cut]);
            }
        }
        assert_eq!(decode(&[0, 1, 9, 0, 0]), None);
    }

    #[test]
    fn relays_only_for_listed_clients_until_the_old_process_goes() {
        let (mine, theirs) = UnixDatagram::pair().expect("pair");
        let p = Predecessor::new(
            OwnedFd::from(mine),
            &[("udp:53".into(), "10.0.0.1:5000".into())],
        )
        .expect("predecessor");
        let key = ListenerKey {
            port: 53,
            proto: Proto::Udp,
        };
        let peer: SocketAddr = "10.0.0.1:5000".parse().expect("addr");
        assert!(p.owns(key, peer));
        assert!(!p.owns(key, "10.0.0.2:5000".parse().expect("addr")));
        assert!(p.relay(key, peer, b"x"));
        let mut buf = [0u8; 64];
        let n = theirs.recv(&mut buf).expect("relayed");
        assert_eq!(decode(&buf[..n]), Some((53, peer, &b"x"[..])));
        drop(theirs);
        assert!(!p.relay(key, peer, b"y"));
        assert!(
            !p.owns(key, peer),
            "nothing is relayed once the old process is gone"
        );
    }
}
