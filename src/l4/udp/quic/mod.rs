//! QUIC on a UDP listener: a session upgraded to `quic` holds its datagrams while the
//! ClientHello is reassembled from its Initial packets, then the `quic` resolver forwards it
//! (registered by connection ID so a client that moves keeps its route) or terminates it at
//! the port's HTTP/3 endpoint (through the [`crate::conn::QuicCarrier`] boot wired in; quinn
//! follows clients that move there itself).
//!
//! - [`table`]: the connection-ID table (lookup, registration, server IDs learned);
//! - [`paths`]: a forwarded connection and its paths (candidate, proven, amplification).

pub mod paths;
mod table;

use std::sync::Arc;

use tokio::net::UdpSocket;
use tracing::{debug, warn};

use super::session::{Session, State};
use crate::conn::Conn;
use crate::flow::kv::Kv;
use crate::l4::L4;
use crate::l4p::quic::inspect::{Inspector, Limits};
use crate::l4p::quic::lb;
use crate::l4p::route::{route_quic, route_quic_by_id, QuicRouted};

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
    // What inspection holds stays charged to the global pending budget until it ends, so
    // half-finished handshakes cannot hold more than `QUIC_GLOBAL_PENDING_BYTES_LIMIT`.
    let mut charge = Charge { rt, bytes: 0 };
    let mut inspector: Option<Inspector> = None;
    let deadline = tokio::time::Instant::now() + rt.settings.quic_pending_timeout;
    loop {
        let (batch, bytes) = sess.take_queued();
        charge.bytes += bytes;
        let mut batch = batch.into_iter();
        while let Some(d) = batch.next() {
            let insp = match &mut inspector {
                Some(i) => i,
                None => match Inspector::new(&d, limits) {
                    Ok(i) => inspector.insert(i),
                    Err(e) => {
                        if let Some((dcid, sid)) = by_server_id(rt, &d) {
                            held.push(d);
                            held.extend(batch.by_ref());
                            let (rest, bytes) = sess.take_queued();
                            charge.bytes += bytes;
                            held.extend(rest);
                            let to = route_quic_by_id(rt.stage(), kv, &dcid, &sid, conn).await?;
                            return Some((QuicRouted::Forward(to), held, dcid));
                        }
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
                    // Datagrams after the last Initial, in this batch and queued since.
                    held.extend(batch.by_ref());
                    let (rest, bytes) = sess.take_queued();
                    charge.bytes += bytes;
                    held.extend(rest);
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

/// The (connection ID, server ID) of a short-header packet whose QUIC-LB connection ID names
/// a server, when this instance reads server IDs (`QUIC_LB_SERVER_ID_LEN`).
fn by_server_id(rt: &L4, d: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let s = rt.settings;
    if s.quic_lb_sid_len == 0 {
        return None;
    }
    let dcid = lb::short_header_dcid(d)?;
    let sid = lb::server_id(dcid, s.quic_lb_config_id, s.quic_lb_sid_len)?;
    Some((dcid.to_vec(), sid.to_vec()))
}

/// Bytes held by an inspection, given back to the pending budget when it ends.
struct Charge<'a> {
    rt: &'a L4,
    bytes: usize,
}

impl Drop for Charge<'_> {
    fn drop(&mut self) {
        self.rt.udp.release_pending(self.bytes);
    }
}

/// Hands a QUIC session to the port's terminating endpoint: the held datagrams first, then
/// every datagram until the session is idle (the endpoint's keep-alives keep it busy).
/// A client that moves reaches the endpoint by the connection IDs it issued
/// ([`crate::conn::QuicCarrier::moved`]), with its real address, so quinn validates the path.
pub(super) async fn terminate(
    rt: &Arc<L4>,
    listener: &Arc<UdpSocket>,
    conn: &Conn,
    sess: &Arc<Session>,
    kv: Kv,
    held: Vec<Vec<u8>>,
) {
    let port = match rt.quic.clone().open(conn.key, listener) {
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
