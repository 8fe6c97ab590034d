//! What the UDP layer owns across listener restarts: each port's socket and sessions, the
//! global budget of bytes held by sessions that are still deciding, and the QUIC connection-ID
//! table.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use dashmap::DashMap;
use tokio::net::UdpSocket;
use vane_actors::quic::{QuicLimits, QuicTables, QuicTablesHandle};

use super::quic::paths::QuicConn;
use super::session::Session;
use crate::config::ListenerKey;
use crate::settings::Settings;

/// What the QUIC table points at: the forwarded connection (it ends with its last path).
pub type QuicRoute = std::sync::Weak<QuicConn>;

/// A UDP listener's sessions by client address.
pub type Sessions = Arc<DashMap<SocketAddr, Arc<Session>>>;

pub struct UdpState {
    /// Sockets and sessions by listener; they survive listener actor restarts.
    endpoints: DashMap<ListenerKey, (Arc<UdpSocket>, Sessions)>,
    /// Bytes of datagrams held by sessions that are still deciding (all listeners).
    pending: AtomicUsize,
    pending_limit: usize,
    /// The most bytes ever held at once (a high-water mark, not a sample).
    pending_peak: AtomicUsize,
    pending_metric: OnceLock<metrics::Gauge>,
    /// Forwarded QUIC connections by connection ID (swept by the `quic` actor).
    pub cids: Arc<CidTable>,
}

impl UdpState {
    pub fn new(settings: &Settings) -> Self {
        let limits = QuicLimits {
            cid_ttl: settings.quic_session_ttl,
            max_entries: settings.quic_max_entries,
        };
        Self {
            endpoints: DashMap::new(),
            pending: AtomicUsize::new(0),
            pending_limit: settings.quic_global_pending,
            pending_peak: AtomicUsize::new(0),
            pending_metric: OnceLock::new(),
            cids: Arc::new(CidTable::new(limits)),
        }
    }

    /// The socket and sessions of `key`, bound on first use.
    pub(super) fn endpoint(
        &self,
        key: ListenerKey,
        bind: impl FnOnce() -> std::io::Result<UdpSocket>,
    ) -> std::io::Result<(Arc<UdpSocket>, Sessions)> {
        if let Some(e) = self.endpoints.get(&key) {
            return Ok(e.value().clone());
        }
        let sock = Arc::new(bind()?);
        let e = (sock, Sessions::default());
        self.endpoints.insert(key, e.clone());
        Ok(e)
    }

    /// The session table of `key`'s listener, if it is bound.
    pub fn sessions_of(&self, key: ListenerKey) -> Option<Sessions> {
        self.endpoints.get(&key).map(|e| e.value().1.clone())
    }

    /// Every bound UDP socket by listener (for a hand-over to the next process).
    pub fn sockets(&self) -> Vec<(ListenerKey, Arc<UdpSocket>)> {
        self.endpoints
            .iter()
            .map(|e| (*e.key(), e.value().0.clone()))
            .collect()
    }

    /// (`udp:PORT`, client address) of every live session.
    pub fn session_list(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for e in &self.endpoints {
            for s in e.value().1.iter() {
                out.push((e.key().to_string(), s.key().to_string()));
            }
        }
        out
    }

    /// Drops the sockets and sessions of listeners `keep` no longer wants.
    pub fn retain(&self, keep: &dyn Fn(&ListenerKey) -> bool) {
        self.endpoints.retain(|k, _| keep(k));
    }

    /// Charges `n` bytes to the global pending budget (`QUIC_GLOBAL_PENDING_BYTES_LIMIT`).
    pub(super) fn reserve_pending(&self, n: usize) -> bool {
        let limit = self.pending_limit;
        let r = self
            .pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                (p + n <= limit).then_some(p + n)
            });
        if let Ok(before) = r {
            let peak = self.pending_peak.fetch_max(before + n, Ordering::AcqRel);
            if before + n > peak {
                metrics::gauge!("vane_quic_pending_peak_bytes").set((before + n) as f64);
            }
        }
        self.pending_gauge()
            .set(self.pending.load(Ordering::Relaxed) as f64);
        r.is_ok()
    }

    pub(super) fn release_pending(&self, n: usize) {
        self.pending.fetch_sub(
            n.min(self.pending.load(Ordering::Acquire)),
            Ordering::AcqRel,
        );
        self.pending_gauge()
            .set(self.pending.load(Ordering::Relaxed) as f64);
    }

    /// `vane_quic_pending_bytes`, looked up once (it is set for every held datagram).
    fn pending_gauge(&self) -> &metrics::Gauge {
        self.pending_metric
            .get_or_init(|| metrics::gauge!("vane_quic_pending_bytes"))
    }
}

/// The QUIC connection-ID table and the ID lengths in use.
pub struct CidTable {
    pub tables: QuicTablesHandle<QuicRoute>,
    /// Bit n set: connection IDs of length n are in the table (short headers do not say how
    /// long their DCID is).
    lens: AtomicU32,
}

impl CidTable {
    pub fn new(limits: QuicLimits) -> Self {
        Self {
            tables: Arc::new(QuicTables::new(limits)),
            lens: AtomicU32::new(0),
        }
    }

    pub(super) fn note_len(&self, len: usize) {
        if (1..=20).contains(&len) {
            self.lens.fetch_or(1 << len, Ordering::Relaxed);
        }
    }

    pub(super) fn lens(&self) -> impl Iterator<Item = usize> {
        let bits = self.lens.load(Ordering::Relaxed);
        (1..=20).filter(move |l| bits & (1 << l) != 0)
    }
}
