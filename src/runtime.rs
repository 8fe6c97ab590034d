//! Shared state of a running gateway: what every connection reads (snapshots, registries,
//! counters) without going through an actor's mailbox.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vane_actors::memory::MemoryBudget;
use vane_actors::quic::{QuicTables, QuicTablesHandle};
use vane_actors::ActorTable;

use crate::config::store::ConfigStore;
use crate::l4::limits::ConnLimits;
use crate::plugins::external::Caller;
use crate::plugins::ratelimit::RateLimiter;
use crate::settings::Settings;
use crate::upstream::balance::Counters;
use crate::upstream::dns::Dns;
use crate::upstream::health::HealthRegistry;

/// What the QUIC tables point at: the UDP session that forwards the connection.
pub type QuicRoute = std::sync::Weak<crate::l4::udp::Session>;

pub struct Runtime {
    pub settings: &'static Settings,
    pub config: Arc<ConfigStore>,
    pub health: HealthRegistry,
    pub counters: Counters,
    pub limits: Arc<ConnLimits>,
    pub dns: Dns,
    pub rate_sec: RateLimiter,
    pub rate_min: RateLimiter,
    pub plugins: Caller,
    pub actors: ActorTable,
    pub memory: Arc<MemoryBudget>,
    pub quic: QuicTablesHandle<QuicRoute>,
    pub started: Instant,
    /// Certificates of `certs/`, published by `registries/certs`.
    pub certs: Arc<arc_swap::ArcSwap<crate::certs::CertStore>>,
    /// Serialises certificate reloads.
    certs_reload: std::sync::Mutex<()>,
    /// The TLS server configuration of L7 termination (built on first use; it reads the
    /// current certificates at every handshake).
    pub l7_tls: std::sync::OnceLock<Arc<rustls::ServerConfig>>,
    /// Connectors for WebSocket upgrades (HTTP/1.1 only by ALPN): verifying, `skip_verify`.
    pub ws_connectors: [std::sync::OnceLock<crate::l7::client::Connector>; 2],
    /// UDP listeners' sockets and sessions, surviving listener actor restarts.
    pub udp_endpoints: dashmap::DashMap<
        crate::config::ListenerKey,
        (Arc<tokio::net::UdpSocket>, crate::l4::udp::Sessions),
    >,
    /// HTTP/3 endpoints by UDP listener (QUIC terminated on that port).
    pub h3_ports: dashmap::DashMap<crate::config::ListenerKey, crate::l7::h3::H3Port>,
    /// Set once at shutdown: HTTP connections close after their current requests.
    pub draining: tokio::sync::watch::Sender<bool>,
    /// The threads that accept and serve TCP connections.
    pub shards: crate::l4::shards::Shards,
    /// Bytes of datagrams held by UDP sessions that are still deciding (all listeners).
    pending: AtomicUsize,
    pending_metric: std::sync::OnceLock<metrics::Gauge>,
    /// Bit n set: connection IDs of length n are in the QUIC table (short headers do not
    /// say how long their DCID is).
    cid_lens: AtomicU32,
}

impl Runtime {
    /// Charges `n` bytes to the global pending budget (`QUIC_GLOBAL_PENDING_BYTES_LIMIT`).
    pub fn reserve_pending(&self, n: usize) -> bool {
        let limit = self.settings.quic_global_pending;
        let ok = self
            .pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                (p + n <= limit).then_some(p + n)
            })
            .is_ok();
        self.pending_gauge()
            .set(self.pending.load(Ordering::Relaxed) as f64);
        ok
    }

    pub fn release_pending(&self, n: usize) {
        self.pending.fetch_sub(
            n.min(self.pending.load(Ordering::Acquire)),
            Ordering::AcqRel,
        );
        self.pending_gauge()
            .set(self.pending.load(Ordering::Relaxed) as f64);
    }

    /// Reloads `certs/` (a failing pair keeps its last good version) and publishes the store.
    /// Reloads run one at a time: the certs registry (after a watcher event) and the
    /// management API may both reload, and an older reading of the directory must never be
    /// published after a newer one.
    pub fn reload_certs(&self) {
        let _one_at_a_time = self.certs_reload.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.certs.load_full();
        let (store, problems) = crate::certs::load(self.config.dir(), Some(&current));
        for p in &problems {
            tracing::warn!("{p}");
        }
        metrics::gauge!("vane_certificates").set(store.by_id.len() as f64);
        self.certs.store(Arc::new(store));
    }

    /// `vane_quic_pending_bytes`, looked up once (it is set for every held datagram).
    fn pending_gauge(&self) -> &metrics::Gauge {
        self.pending_metric
            .get_or_init(|| metrics::gauge!("vane_quic_pending_bytes"))
    }

    pub fn note_cid_len(&self, len: usize) {
        if (1..=20).contains(&len) {
            self.cid_lens.fetch_or(1 << len, Ordering::Relaxed);
        }
    }

    pub fn quic_cid_lens(&self) -> Vec<usize> {
        let bits = self.cid_lens.load(Ordering::Relaxed);
        (1..=20).filter(|l| bits & (1 << l) != 0).collect()
    }
}

impl Runtime {
    pub fn new(settings: &'static Settings, config: Arc<ConfigStore>) -> Arc<Self> {
        let limits = vane_actors::quic::QuicLimits {
            cid_ttl: settings.quic_session_ttl,
            sticky_ttl: settings.quic_sticky_ttl,
            max_entries: settings.quic_max_entries,
        };
        Arc::new(Self {
            settings,
            plugins: Caller::new(config.dir(), settings.plugin_quiet, settings.flow_timeout),
            config,
            health: HealthRegistry::default(),
            counters: Counters::default(),
            limits: Arc::new(ConnLimits::new(
                settings.max_connections,
                settings.max_connections_per_ip,
            )),
            dns: Dns::new(&settings.nameservers),
            rate_sec: RateLimiter::new(
                Duration::from_secs(1),
                settings.max_limiter_memory,
                settings.ratelimit_key_max_len,
            ),
            rate_min: RateLimiter::new(
                Duration::from_secs(60),
                settings.max_limiter_memory,
                settings.ratelimit_key_max_len,
            ),
            actors: ActorTable::new(),
            memory: MemoryBudget::new(settings.l7_fixed_limit),
            quic: Arc::new(arc_swap::ArcSwap::from_pointee(QuicTables::new(limits))),
            started: Instant::now(),
            certs: Arc::new(arc_swap::ArcSwap::from_pointee(
                crate::certs::CertStore::default(),
            )),
            l7_tls: std::sync::OnceLock::new(),
            certs_reload: std::sync::Mutex::new(()),
            ws_connectors: [std::sync::OnceLock::new(), std::sync::OnceLock::new()],
            udp_endpoints: dashmap::DashMap::new(),
            shards: start_shards(settings.data_plane_threads),
            draining: tokio::sync::watch::Sender::new(false),
            h3_ports: dashmap::DashMap::new(),
            pending: AtomicUsize::new(0),
            pending_metric: std::sync::OnceLock::new(),
            cid_lens: AtomicU32::new(0),
        })
    }
}

fn start_shards(n: usize) -> crate::l4::shards::Shards {
    use crate::l4::shards::Shards;
    Shards::start(n).unwrap_or_else(|e| {
        tracing::error!(
            "cannot start {n} data-plane threads ({e}); serving TCP on the shared runtime"
        );
        Shards::none()
    })
}
