//! UDP listeners: datagrams are grouped into sessions by client address. The listener flow
//! runs once per session (or per datagram with `per_datagram: true`); the session's upstream
//! socket and reply path live exactly as long as the session (one idle timeout for both
//! directions, so late replies are never lost).
//!
//! - [`state`]: sockets, sessions, pending budget and QUIC tables, kept across restarts;
//! - this file: the receive loop (known client, moved QUIC client, new session);
//! - [`session`]: a session's state machine, its flow and its reply path;
//! - [`quic`]: QUIC inspection, forwarding by connection ID, hand-off to HTTP/3.

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
    rt.udp.endpoint(key, addr).await
}

/// Receives until aborted. Sessions end by themselves after `UDP_SESSION_TIMEOUT_SECS` idle.
pub async fn recv_loop(rt: Arc<L4>, key: ListenerKey, socket: Arc<UdpSocket>, sessions: Sessions) {
    let label = key.to_string();
    let total = metrics::counter!("vane_connections_total", "listener" => label.clone(), "protocol" => "udp");
    let active = metrics::gauge!("vane_connections_active", "listener" => label.clone(), "protocol" => "udp");
    let mut buf = vec![0u8; 65_535];
    // Known once: a getsockname per new session showed in the new-session rate.
    let local = socket.local_addr().ok();
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                // ICMP errors surface here on some systems; they must not stop the listener.
                debug!(listener = %label, "recv failed: {e}");
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
        };
        let data = &buf[..n];
        if let Some(s) = sessions.get(&peer).map(|s| s.clone()) {
            session::deliver(&rt, &s, data);
            continue;
        }
        if let Some(s) = rt.udp.cids.lookup(key, data) {
            // A known QUIC connection from a new address: the client migrated.
            debug!(listener = %label, "QUIC client moved to {peer}");
            s.moved_to(peer);
            sessions.insert(peer, s.clone());
            metrics::counter!("vane_quic_migrations_total").increment(1);
            session::deliver(&rt, &s, data);
            continue;
        }
        if let Some(inbox) = rt.quic.moved(key, data) {
            // A terminated HTTP/3 connection from a new address: quinn follows it.
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
        if sessions.len() >= rt.settings.udp_max_sessions {
            metrics::counter!("vane_connections_rejected_total", "reason" => "udp_session_table_full").increment(1);
            continue;
        }
        let Ok(slot) = rt.limits.acquire(peer.ip()) else {
            continue;
        };
        let Some(entry) = rt.config.load().listeners.get(&key).cloned() else {
            continue;
        };
        if !rt.udp.reserve_pending(n) {
            metrics::counter!("vane_udp_dropped_total", "reason" => "pending_full").increment(1);
            continue;
        }
        total.increment(1);
        active.increment(1.0);
        let active = active.clone();
        let sess = Arc::new(Session::new(key, peer, data.to_vec()));
        sessions.insert(peer, sess.clone());
        let local = local.unwrap_or(peer);
        let conn = Conn { key, peer, local };
        let (rt2, socket2, sessions2, label2) =
            (rt.clone(), socket.clone(), sessions.clone(), label.clone());
        tokio::spawn(async move {
            let span = crate::spans::connection_span(&label2, conn.peer);
            let run = session::run(rt2.clone(), entry, socket2, conn, sess.clone());
            let r = CatchUnwind::new(tracing::Instrument::instrument(run, span)).await;
            let _ = sess.drain(&rt2);
            rt2.udp.cids.forget(&sess);
            for a in sess.addrs.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                sessions2.remove_if(a, |_, v| Arc::ptr_eq(v, &sess));
            }
            drop(slot);
            active.decrement(1.0);
            if let Err(msg) = r {
                metrics::counter!("vane_session_panics_total", "listener" => label2.clone())
                    .increment(1);
                error!(listener = %label2, "UDP session panicked and was closed: {msg}");
            }
        });
    }
}
