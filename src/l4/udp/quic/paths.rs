//! A forwarded QUIC connection and its paths.
//!
//! Connection IDs travel in clear, so a datagram carrying one proves nothing about who sent
//! it. A known connection seen from a new client address therefore does not move the
//! connection: it opens a *candidate path*, a UDP session of its own with its own
//! upstream-facing socket. The upstream endpoint sees a migration and validates the new path
//! itself (RFC 9000 section 9), and replies on each path go back to the address that path
//! came from, so a copied datagram never takes the real client's replies away. Until a
//! candidate is proven it gets at most three times the bytes it sent (section 8.1); it is
//! proven once it has made a round trip (sent again after a reply reached it) while every
//! proven path of the connection has been quiet for [`PROVE_QUIET`] (the client left them,
//! as a rebinding NAT or a migrating client does). Paths per connection are bounded, and each
//! path is a session under the listener's session and per-IP limits.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::super::session::Session;
use super::super::state::CidTable;
use crate::config::ListenerKey;

/// Paths (client addresses) one forwarded connection may have at once, the first included.
pub const MAX_PATHS: usize = 4;
/// How long a connection's proven paths must have been quiet before a candidate is proven.
pub const PROVE_QUIET: Duration = Duration::from_millis(250);
/// A candidate path gets at most this many times the bytes it sent until it is proven.
const AMPLIFICATION: u64 = 3;
/// Connection IDs one connection keeps track of (a server issues a handful; more are not
/// kept).
const MAX_CIDS: usize = 16;

/// One forwarded QUIC connection: its upstream, its connection IDs (registered in the CID
/// table while it lives, removed when its last path ends) and its live paths.
pub struct QuicConn {
    pub listener: ListenerKey,
    pub target: SocketAddr,
    table: Arc<CidTable>,
    born: Instant,
    cids: Mutex<Vec<Vec<u8>>>,
    /// When the CID entries were last refreshed (ms since `born`).
    refreshed_ms: AtomicU64,
    /// The last datagram from the client on a proven path (ms since `born`).
    proven_rx_ms: AtomicU64,
    /// The sessions that are this connection's paths, by client address.
    paths: Mutex<Vec<(SocketAddr, Weak<Session>)>>,
}

impl QuicConn {
    pub fn new(listener: ListenerKey, target: SocketAddr, table: Arc<CidTable>) -> Arc<Self> {
        metrics::gauge!("vane_quic_sessions").increment(1.0);
        Arc::new(Self {
            listener,
            target,
            table,
            born: Instant::now(),
            cids: Mutex::new(Vec::new()),
            refreshed_ms: AtomicU64::new(0),
            proven_rx_ms: AtomicU64::new(0),
            paths: Mutex::new(Vec::new()),
        })
    }

    fn now_ms(&self) -> u64 {
        self.born.elapsed().as_millis() as u64
    }

    /// Notes a connection ID as this connection's; false when it is not kept (already known,
    /// or the connection has as many as it may keep).
    pub(super) fn remember(&self, cid: &[u8]) -> bool {
        let mut cids = self.cids.lock().unwrap_or_else(|e| e.into_inner());
        if cids.len() >= MAX_CIDS || cids.iter().any(|c| c == cid) {
            return false;
        }
        cids.push(cid.to_vec());
        true
    }

    /// Whether `cid` is one of this connection's.
    pub fn owns(&self, cid: &[u8]) -> bool {
        let cids = self.cids.lock().unwrap_or_else(|e| e.into_inner());
        cids.iter().any(|c| c == cid)
    }

    /// Keeps the connection IDs alive while the connection has traffic (at most once a
    /// second), so a connection busy for longer than `QUIC_SESSION_TTL_SECS` can still move.
    pub fn refresh(&self) {
        self.refresh_at(self.now_ms());
    }

    fn refresh_at(&self, now: u64) {
        if now.saturating_sub(self.refreshed_ms.load(Ordering::Relaxed)) < 1000 {
            return;
        }
        self.refreshed_ms.store(now, Ordering::Relaxed);
        let cids = self.cids.lock().unwrap_or_else(|e| e.into_inner());
        for cid in cids.iter() {
            let _ = self.table.tables.by_cid.get(cid.as_slice());
        }
    }

    fn paths(&self) -> std::sync::MutexGuard<'_, Vec<(SocketAddr, Weak<Session>)>> {
        self.paths.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the connection has as many paths as it may have.
    pub fn paths_full(&self) -> bool {
        self.paths().len() >= MAX_PATHS
    }

    /// Makes `sess` a path of this connection (a candidate unless it is the first); false
    /// when the connection has [`MAX_PATHS`] already.
    pub fn attach(self: &Arc<Self>, sess: &Arc<Session>, candidate: bool) -> bool {
        let mut paths = self.paths();
        if paths.len() >= MAX_PATHS {
            return false;
        }
        let link = QuicLink {
            conn: self.clone(),
            budget: candidate.then(Budget::default),
        };
        if sess.quic.set(link).is_err() {
            return false;
        }
        paths.push((sess.client, Arc::downgrade(sess)));
        true
    }

    /// This connection's path from `addr`, while it lives.
    pub fn path_at(&self, addr: SocketAddr) -> Option<Arc<Session>> {
        let paths = self.paths();
        paths
            .iter()
            .find(|(a, _)| *a == addr)
            .and_then(|(_, w)| w.upgrade())
    }
}

impl Drop for QuicConn {
    /// The last path ended: the connection's IDs leave the table (only entries still pointing
    /// here; a repeated ID never took another connection's entry).
    fn drop(&mut self) {
        metrics::gauge!("vane_quic_sessions").decrement(1.0);
        let me: *const QuicConn = self;
        let cids = std::mem::take(self.cids.get_mut().unwrap_or_else(|e| e.into_inner()));
        for cid in &cids {
            self.table
                .tables
                .by_cid
                .remove_if(cid.as_slice(), |w| std::ptr::eq(w.as_ptr(), me));
        }
        self.table.tables.publish();
    }
}

/// Bytes through a candidate path, for the amplification limit.
#[derive(Default)]
struct Budget {
    from_client: AtomicU64,
    to_client: AtomicU64,
    proven: AtomicBool,
}

/// A UDP session's part in a forwarded QUIC connection.
pub struct QuicLink {
    pub conn: Arc<QuicConn>,
    /// Present on a candidate path (absent on the path the connection began on, proven by
    /// its handshake).
    budget: Option<Budget>,
}

impl QuicLink {
    /// A datagram of `n` bytes from the client on this path.
    pub fn client_sent(&self, n: usize) {
        let conn = &self.conn;
        let now = conn.now_ms();
        conn.refresh_at(now);
        match &self.budget {
            None => conn.proven_rx_ms.store(now, Ordering::Relaxed),
            Some(b) if b.proven.load(Ordering::Relaxed) => {
                conn.proven_rx_ms.store(now, Ordering::Relaxed)
            }
            Some(b) => {
                b.from_client.fetch_add(n as u64, Ordering::Relaxed);
                let round_trip = b.to_client.load(Ordering::Relaxed) > 0;
                let quiet = now.saturating_sub(conn.proven_rx_ms.load(Ordering::Relaxed))
                    >= PROVE_QUIET.as_millis() as u64;
                if round_trip && quiet && !b.proven.swap(true, Ordering::Relaxed) {
                    conn.proven_rx_ms.store(now, Ordering::Relaxed);
                    metrics::counter!("vane_quic_paths_proven_total").increment(1);
                }
            }
        }
    }

    /// Whether a reply of `n` bytes may go to the client on this path (and counts it).
    pub fn may_reply(&self, n: usize) -> bool {
        self.conn.refresh();
        let Some(b) = &self.budget else {
            return true;
        };
        if b.proven.load(Ordering::Relaxed) {
            return true;
        }
        let limit = AMPLIFICATION * b.from_client.load(Ordering::Relaxed);
        let ok = b
            .to_client
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |sent| {
                (sent + n as u64 <= limit).then_some(sent + n as u64)
            })
            .is_ok();
        if !ok {
            metrics::counter!("vane_udp_dropped_total", "reason" => "amplification").increment(1);
        }
        ok
    }
}

impl Drop for QuicLink {
    /// Its session is being dropped: the connection forgets the path.
    fn drop(&mut self) {
        self.conn.paths().retain(|(_, w)| w.strong_count() > 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ListenerKey;

    fn key() -> ListenerKey {
        ListenerKey {
            port: 1,
            proto: crate::config::Proto::Udp,
        }
    }

    fn conn() -> Arc<QuicConn> {
        QuicConn::new(
            key(),
            "127.0.0.1:9".parse().expect("addr"),
            Arc::new(CidTable::new(Default::default())),
        )
    }

    fn session(port: u16) -> Arc<Session> {
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        Arc::new(Session::new(key(), addr, Vec::new()))
    }

    fn link(s: &Session) -> &QuicLink {
        s.quic.get().expect("attached")
    }

    #[test]
    fn an_unproven_path_gets_at_most_three_times_what_it_sent() {
        let c = conn();
        let (first, cand) = (session(1000), session(1001));
        assert!(c.attach(&first, false) && c.attach(&cand, true));
        let cand = link(&cand);
        cand.client_sent(100);
        assert!(cand.may_reply(200));
        assert!(cand.may_reply(100));
        assert!(!cand.may_reply(1), "301 bytes for 100 received");
        cand.client_sent(10);
        assert!(cand.may_reply(30));
        assert!(!cand.may_reply(1));
        assert!(
            link(&first).may_reply(1_000_000),
            "the first path has no limit"
        );
    }

    #[test]
    fn a_candidate_is_proven_by_a_round_trip_while_the_old_path_is_quiet() {
        let c = conn();
        let (first, cand) = (session(1000), session(1001));
        assert!(c.attach(&first, false) && c.attach(&cand, true));
        let (first, cand) = (link(&first), link(&cand));
        first.client_sent(50);
        cand.client_sent(100);
        assert!(cand.may_reply(300));
        // A round trip, but the first path spoke just now: still a candidate.
        cand.client_sent(10);
        assert!(!cand.may_reply(1_000));
        std::thread::sleep(PROVE_QUIET + Duration::from_millis(20));
        // A reply went out before this datagram, and the first path has been quiet.
        cand.client_sent(10);
        assert!(cand.may_reply(100_000), "proven: no limit any more");
    }

    #[test]
    fn paths_per_connection_are_bounded_found_by_address_and_given_back() {
        let c = conn();
        let sessions: Vec<_> = (0..MAX_PATHS as u16).map(|i| session(2000 + i)).collect();
        for s in &sessions {
            assert!(c.attach(s, true));
        }
        assert!(c.paths_full());
        let extra = session(3000);
        assert!(!c.attach(&extra, true), "over the bound");
        let at = c.path_at(([127, 0, 0, 1], 2001).into()).expect("path");
        assert!(Arc::ptr_eq(&at, &sessions[1]));
        drop(at);
        drop(sessions);
        assert!(!c.paths_full(), "ended paths are forgotten");
        assert!(c.path_at(([127, 0, 0, 1], 2001).into()).is_none());
        assert!(c.attach(&session(3001), true));
    }
}
