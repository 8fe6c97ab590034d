//! UDP listeners: datagrams are grouped into sessions by client address. The listener flow
//! runs once per session (or per datagram with `per_datagram: true`); the session's upstream
//! socket and reply path live exactly as long as the session (one idle timeout for both
//! directions, so late replies are never lost).
//!
//! - [`state`]: sockets, sessions, pending budget and QUIC tables, kept across restarts;
//! - this file: the receive loop (known client, moved QUIC client, new session);
//! - [`session`]: a session's state machine, its flow and its reply path;
//! - [`quic`]: QUIC inspection, forwarding by connection ID, hand-off to HTTP/3.

pub mod predecessor;
mod quic;
mod session;
mod state;

pub use session::Session;
pub use state::{CidTable, QuicRoute, Sessions, UdpState};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tracing::{debug, error};
use vane_actors::catch::CatchUnwind;

use crate::config::ListenerKey;
use crate::conn::Conn;
use crate::l4::L4;

/// The socket and sessions of a UDP listener. They are kept in the layer's state across
/// restarts of the listener actor, so a restart neither loses datagrams queued in the socket
/// nor forgets the sessions (and QUIC connections) in flight; only removing the listener
/// drops them.
pub async fn endpoint(
    rt: &L4,
    key: ListenerKey,
    addr: SocketAddr,
) -> std::io::Result<(Arc<UdpSocket>, Sessions)> {
    rt.udp.endpoint(key, || {
        super::sockets::udp(&rt.inherited, key, addr, rt.settings.reuse_port)
    })
}

/// Receives until aborted. Sessions end by themselves after `UDP_SESSION_TIMEOUT_SECS` idle.
pub async fn recv_loop(rt: Arc<L4>, key: ListenerKey, socket: Arc<UdpSocket>, sessions: Sessions) {
    let label = key.to_string();
    let port = Port {
        total: metrics::counter!("vane_connections_total", "listener" => label.clone(), "protocol" => "udp"),
        active: metrics::gauge!("vane_connections_active", "listener" => label.clone(), "protocol" => "udp"),
        // Known once: a getsockname per new session showed in the new-session rate.
        local: socket.local_addr().ok(),
        label,
        key,
        socket,
        sessions,
    };
    let mut buf = vec![0u8; 65_535];
    loop {
        let (n, peer) = match port.socket.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                // ICMP errors surface here on some systems; they must not stop the listener.
                debug!(listener = %port.label, "recv failed: {e}");
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
        };
        let data = &buf[..n];
        if let Some(p) = rt.predecessor.get() {
            if p.owns(key, peer) && p.relay(key, peer, data) {
                continue;
            }
        }
        let mut shared = false;
        if let Some(s) = port.sessions.get(&peer).map(|s| s.clone()) {
            if s.shared.load(std::sync::atomic::Ordering::Relaxed) {
                // Several QUIC connections from this address: the older ones by their IDs.
                if let Some(p) = rt.udp.cids.lookup(key, data).and_then(|c| c.path_at(peer)) {
                    let _ = session::deliver(&rt, &p, data);
                    continue;
                }
            }
            if !s.starts_new_quic(data) {
                if session::deliver(&rt, &s, data) {
                    continue;
                }
                // Its target refused: this datagram opens a session that decides afresh.
                port.sessions.remove_if(&peer, |_, v| Arc::ptr_eq(v, &s));
            } else {
                // The address opens another QUIC connection: it is decided afresh below and
                // takes the address over; the old one stays reachable by its IDs until idle.
                metrics::counter!("vane_quic_reused_addresses_total").increment(1);
                shared = true;
            }
        } else if let Some(conn) = rt.udp.cids.lookup(key, data) {
            // A known forwarded QUIC connection from a new address: a candidate path.
            if let Some(p) = conn.path_at(peer) {
                // Its path from here lost the address to a newer connection, then it ended.
                let _ = session::deliver(&rt, &p, data);
                continue;
            }
            if conn.paths_full() {
                metrics::counter!("vane_quic_paths_rejected_total", "reason" => "per_connection")
                    .increment(1);
                continue;
            }
            debug!(listener = %port.label, "QUIC connection seen from {peer}: candidate path");
            if let Some(a) = port.admit(&rt, peer, data) {
                if conn.attach(&a.sess, true) {
                    metrics::counter!("vane_quic_migrations_total").increment(1);
                    if let Some(q) = a.sess.quic.get() {
                        q.client_sent(n);
                    }
                }
                port.spawn(&rt, a, Work::Path);
            }
            continue;
        } else if let Some(inbox) = rt.quic.moved(key, data) {
            // A terminated HTTP/3 connection from a new address: quinn validates and follows.
            metrics::counter!("vane_h3_rerouted_datagrams_total").increment(1);
            if inbox
                .try_send((peer, bytes::Bytes::copy_from_slice(data)))
                .is_err()
            {
                metrics::counter!("vane_udp_dropped_total", "reason" => "h3_queue_full")
                    .increment(1);
            }
            continue;
        }
        let Some(entry) = rt.config.load().listeners.get(&key).cloned() else {
            continue;
        };
        if let Some(a) = port.admit(&rt, peer, data) {
            a.sess
                .shared
                .store(shared, std::sync::atomic::Ordering::Relaxed);
            port.spawn(&rt, a, Work::Flow(entry));
        }
    }
}

/// What a new session runs.
enum Work {
    /// The listener flow decides.
    Flow(Arc<crate::config::Entry<crate::config::Listener>>),
    /// A candidate path of a forwarded QUIC connection (the session's link is set).
    Path,
}

/// One UDP listener's receive side.
struct Port {
    key: ListenerKey,
    label: String,
    socket: Arc<UdpSocket>,
    sessions: Sessions,
    local: Option<SocketAddr>,
    total: metrics::Counter,
    active: metrics::Gauge,
}

impl Port {
    /// A new session for `peer` whose first datagram is `data`, if the session table, the
    /// connection limits and the pending budget admit it. Every path of a QUIC connection
    /// passes here too.
    fn admit(&self, rt: &L4, peer: SocketAddr, data: &[u8]) -> Option<Admitted> {
        if self.sessions.len() >= rt.settings.udp_max_sessions {
            metrics::counter!("vane_connections_rejected_total", "reason" => "udp_session_table_full").increment(1);
            return None;
        }
        let slot = rt.limits.acquire(peer.ip()).ok()?;
        if !rt.udp.reserve_pending(data.len()) {
            metrics::counter!("vane_udp_dropped_total", "reason" => "pending_full").increment(1);
            return None;
        }
        let sess = Arc::new(Session::new(self.key, peer, data.to_vec()));
        self.sessions.insert(peer, sess.clone());
        Some(Admitted { sess, slot })
    }

    /// Runs an admitted session in a task of its own, and cleans up after it (also after a
    /// panic, which closes only this session).
    fn spawn(&self, rt: &Arc<L4>, a: Admitted, work: Work) {
        self.total.increment(1);
        self.active.increment(1.0);
        let Admitted { sess, slot } = a;
        let peer = sess.client;
        let conn = Conn {
            key: self.key,
            peer,
            local: self.local.unwrap_or(peer),
        };
        let (rt, socket, sessions, label, active) = (
            rt.clone(),
            self.socket.clone(),
            self.sessions.clone(),
            self.label.clone(),
            self.active.clone(),
        );
        tokio::spawn(async move {
            let span = crate::spans::connection_span(&label, conn.peer);
            let run = async {
                match work {
                    Work::Flow(entry) => {
                        session::run(rt.clone(), entry, socket, conn, sess.clone()).await
                    }
                    Work::Path => session::run_path(rt.clone(), socket, sess.clone()).await,
                }
            };
            let r = CatchUnwind::new(tracing::Instrument::instrument(run, span)).await;
            let _ = sess.drain(&rt);
            sessions.remove_if(&peer, |_, v| Arc::ptr_eq(v, &sess));
            drop(slot);
            active.decrement(1.0);
            if let Err(msg) = r {
                metrics::counter!("vane_session_panics_total", "listener" => label.clone())
                    .increment(1);
                error!(listener = %label, "UDP session panicked and was closed: {msg}");
            }
        });
    }
}

/// A session admitted with its connection slot.
struct Admitted {
    sess: Arc<Session>,
    slot: crate::l4::limits::Slot,
}
