//! QUIC on a UDP listener: a session upgraded to `quic` holds its datagrams while the
//! ClientHello is reassembled from its Initial packets, then the `quic` resolver forwards it
//! (registered by connection ID so a client that moves keeps its route) or terminates it at
//! the port's HTTP/3 endpoint (through the [`crate::conn::QuicCarrier`] boot wired in).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::UdpSocket;
use tracing::{debug, warn};

use super::session::{Session, State};
use super::state::{CidTable, Sessions};
use crate::config::ListenerKey;
use crate::conn::{Conn, ServerIds};
use crate::flow::kv::Kv;
use crate::l4::L4;
use crate::l4p::quic::inspect::{Inspector, Limits};
use crate::l4p::quic::packet;
use crate::l4p::route::{route_quic, QuicRouted};

impl CidTable {
    /// The session of `key` a QUIC packet from an unknown address belongs to, by connection
    /// ID (the fixed bit may be greased, so any first byte is tried).
    pub(super) fn lookup(&self, key: ListenerKey, data: &[u8]) -> Option<Arc<Session>> {
        let first = *data.first()?;
        let tables = self.tables.load();
        if tables.by_cid.is_empty() {
            return None;
        }
        if first & 0x80 != 0 {
            let len = *data.get(5)? as usize;
            let dcid = data.get(6..6 + len)?;
            return tables
                .by_cid
                .get(dcid)
                .and_then(|w| w.upgrade())
                .filter(|s| s.listener == key);
        }
        self.lens().find_map(|len| {
            packet::short_dcid(data, len)
                .and_then(|c| tables.by_cid.get(c))
                .and_then(|w| w.upgrade())
                .filter(|s| s.listener == key)
        })
    }

    /// Registers a forwarded session under the client's first destination connection ID. (Not
    /// by client address: the listener's session map finds a client by address already, and a
    /// second entry would keep the ended session's memory, through its weak reference, for the
    /// sticky TTL.)
    pub(super) fn register(&self, dcid: &[u8], sess: &Arc<Session>) {
        let tables = self.tables.load();
        tables.by_cid.insert(dcid.to_vec(), Arc::downgrade(sess));
        remember(sess, dcid);
        self.note_len(dcid.len());
        metrics::gauge!("vane_quic_sessions").set(tables.by_cid.len() as f64);
    }

    /// Registers the source connection IDs of the server's long-header packets: the client
    /// will address the server with them, possibly from a new address.
    pub(super) fn learn_server_cids(&self, sess: &Arc<Session>, mut d: &[u8]) {
        if d.first().is_some_and(|b| b & 0x80 != 0) {
            if let Err(e) = packet::parse_long(d) {
                debug!(
                    "QUIC server reply not parsed: {e} (first bytes {})",
                    hex::encode(&d[..d.len().min(24)])
                );
            }
        }
        while let Ok(h) = packet::parse_long(d) {
            if !h.scid.is_empty() {
                let tables = self.tables.load();
                if tables.by_cid.get(h.scid.as_slice()).is_none() {
                    debug!("QUIC server connection ID {} learned", hex::encode(&h.scid));
                    tables.by_cid.insert(h.scid.clone(), Arc::downgrade(sess));
                    self.note_len(h.scid.len());
                    remember(sess, &h.scid);
                }
            }
            d = &d[h.end.min(d.len())..];
        }
    }
}

impl CidTable {
    /// Keeps a forwarded session's connection IDs alive while it has traffic, so a connection
    /// busy for longer than `QUIC_SESSION_TTL_SECS` can still move (at most once a second).
    pub(super) fn refresh(&self, sess: &Session) {
        let now = sess.last_ms();
        let last = sess
            .cids_refreshed_ms
            .load(std::sync::atomic::Ordering::Relaxed);
        if now.saturating_sub(last) < 1000 {
            return;
        }
        sess.cids_refreshed_ms
            .store(now, std::sync::atomic::Ordering::Relaxed);
        let cids = sess.cids.lock().unwrap_or_else(|e| e.into_inner());
        if cids.is_empty() {
            return;
        }
        let tables = self.tables.load();
        for cid in cids.iter() {
            let _ = tables.by_cid.get(cid.as_slice());
        }
    }

    /// Removes a session's connection IDs when it ends.
    pub(super) fn forget(&self, sess: &Session) {
        let cids = std::mem::take(&mut *sess.cids.lock().unwrap_or_else(|e| e.into_inner()));
        if cids.is_empty() {
            return;
        }
        let tables = self.tables.load();
        for cid in &cids {
            tables.by_cid.remove(cid);
        }
        metrics::gauge!("vane_quic_sessions").set(tables.by_cid.len() as f64);
    }
}

/// Connection IDs one session keeps track of (a server issues a handful; more are not kept).
const MAX_CIDS_PER_SESSION: usize = 16;

fn remember(sess: &Session, cid: &[u8]) {
    let mut cids = sess.cids.lock().unwrap_or_else(|e| e.into_inner());
    if cids.len() < MAX_CIDS_PER_SESSION && !cids.iter().any(|c| c == cid) {
        cids.push(cid.to_vec());
    }
}

/// The connection IDs an HTTP/3 endpoint on one port chooses, learned for the UDP session of
/// the client it sends to.
struct PortIds {
    cids: Arc<CidTable>,
    sessions: Sessions,
}

impl ServerIds for PortIds {
    fn learn(&self, client: SocketAddr, datagram: &[u8]) {
        if let Some(s) = self.sessions.get(&client) {
            self.cids.learn_server_cids(s.value(), datagram);
        }
    }
}

/// Holds the session's datagrams until their ClientHello is complete, then asks the `quic`
/// resolver. Returns its verdict, every datagram held so far (to be forwarded) and the
/// client's first destination connection ID.
pub(super) async fn inspect(
    rt: &L4,
    sess: &Session,
    kv: Kv,
    conn: &Conn,
) -> Option<(QuicRouted, Vec<Vec<u8>>, Vec<u8>)> {
    let limits = Limits {
        max_datagrams: rt.settings.quic_max_pending_packets,
        max_bytes: rt.settings.quic_session_buffer,
    };
    let mut held: Vec<Vec<u8>> = Vec::new();
    let mut inspector: Option<Inspector> = None;
    let deadline = tokio::time::Instant::now() + rt.settings.quic_pending_timeout;
    loop {
        let batch = sess.drain(rt);
        for d in batch {
            let insp = match &mut inspector {
                Some(i) => i,
                None => match Inspector::new(&d, limits) {
                    Ok(i) => inspector.insert(i),
                    Err(e) => {
                        metrics::counter!("vane_l4p_parse_failures_total", "protocol" => "quic", "error" => "not_initial").increment(1);
                        debug!(listener = %conn.key, "QUIC inspection: {e} (first bytes {})", hex::encode(&d[..d.len().min(21)]));
                        return None;
                    }
                },
            };
            let r = insp.push(&d);
            held.push(d);
            match r {
                Ok(Some(found)) => {
                    debug!(listener = %conn.key, "QUIC ClientHello complete after {} datagrams", held.len());
                    held.extend(sess.drain(rt));
                    let dcid = found.dcid.clone();
                    let verdict = route_quic(rt.stage(), kv, found, conn).await?;
                    return Some((verdict, held, dcid));
                }
                Ok(None) => {}
                Err(e) => {
                    metrics::counter!("vane_l4p_parse_failures_total", "protocol" => "quic", "error" => "malformed").increment(1);
                    debug!(listener = %conn.key, "QUIC inspection: {e}");
                    return None;
                }
            }
        }
        if tokio::time::timeout_at(deadline, sess.wake.notified())
            .await
            .is_err()
        {
            metrics::counter!("vane_l4p_parse_failures_total", "protocol" => "quic", "error" => "timeout").increment(1);
            return None;
        }
    }
}

/// Hands a QUIC session to the port's terminating endpoint: the held datagrams first, then
/// every datagram until the session is idle (the endpoint's keep-alives keep it busy).
pub(super) async fn terminate(
    rt: &Arc<L4>,
    listener: &Arc<UdpSocket>,
    conn: &Conn,
    sess: &Arc<Session>,
    kv: Kv,
    held: Vec<Vec<u8>>,
) {
    let Some(sessions) = rt.udp.sessions(&conn.key) else {
        return;
    };
    let ids = Arc::new(PortIds {
        cids: rt.udp.cids.clone(),
        sessions,
    });
    let port = match rt.quic.clone().open(conn.key, listener, ids) {
        Ok(p) => p,
        Err(e) => {
            warn!(listener = %conn.key, "HTTP/3 endpoint unavailable: {e}");
            return;
        }
    };
    port.sessions.insert(conn.peer, kv);
    let mut held = held;
    held.extend(sess.switch(rt, State::Terminate(port.inbox.clone())));
    for d in held {
        let _ = port.inbox.try_send((conn.peer, bytes::Bytes::from(d)));
    }
    sess.wait_idle(rt.settings.udp_session_timeout).await;
    port.sessions.remove(&conn.peer);
}
