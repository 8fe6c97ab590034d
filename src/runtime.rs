//! Shared state of a running gateway: what every connection reads (snapshots, registries,
//! counters) without going through an actor's mailbox.

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

/// Where a QUIC packet goes (filled in by the L4+ layer).
#[derive(Debug, Clone)]
pub enum QuicRoute {
    Forward(std::net::SocketAddr),
}

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
        })
    }
}
