//! The shared handles of a running gateway: what every connection reads (settings, the config
//! snapshot, registries, the flow environment, upstreams) without going through an actor's
//! mailbox. Layers keep their own state next to it (`l4::L4`, `l7::L7`); boot builds all of
//! them and nothing else does.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use vane_actors::config::ConfigInbox;
use vane_actors::memory::MemoryBudget;
use vane_actors::ActorTable;

use crate::config::store::ConfigStore;
use crate::flow;
use crate::settings::Settings;
use crate::ticks::{Ticks, Wait};
use crate::upstream::dns::Dns;
use crate::upstream::Upstreams;

pub struct Runtime {
    pub settings: &'static Settings,
    pub config: Arc<ConfigStore>,
    /// What flow runs need: template limit, rate limiters, plugin caller, deadline.
    pub flow: flow::Env,
    /// Name resolution, health, balancing and connecting to upstreams.
    pub upstreams: Upstreams,
    pub actors: ActorTable,
    pub memory: Arc<MemoryBudget>,
    pub started: Instant,
    /// Certificates of `certs/`, published by `registries/certs`.
    pub certs: Arc<arc_swap::ArcSwap<crate::certs::CertStore>>,
    /// Built-in ACME: challenge answers and renewal state (`registries/acme` writes them).
    pub acme: Arc<crate::acme::Acme>,
    /// Serialises certificate reloads.
    certs_reload: std::sync::Mutex<()>,
    /// Set once at shutdown: HTTP connections close after their current requests.
    pub draining: Drain,
    /// The clock of the WebSocket idle watchdog (`l7::idle`); the HTTP one's is the drain
    /// signal's ([`Runtime::http_idle_ticks`]).
    pub ws_idle_ticks: &'static Ticks,
    /// The clock of a TLS handshake's deadline (`HTTP_HEADER_READ_TIMEOUT_SECS`).
    pub handshake_ticks: &'static Ticks,
    /// The clocks of the waits for a new connection's first bytes (`TCP_PEEK_TIMEOUT_MS`:
    /// a peek, a PROXY header, a plaintext request's start) and for a TLS ClientHello
    /// (`TLS_HANDSHAKE_PEEK_TIMEOUT_MS`). A tokio timer per waiting connection would wake
    /// the data-plane thread's driver whenever no earlier timer was pending.
    pub peek_wait: Wait,
    pub hello_wait: Wait,
    /// The running `config` actor: the one writer of the config (`POST /reload` and the
    /// editing routes ask it).
    pub config_inbox: ConfigInbox,
}

impl Runtime {
    pub fn new(settings: &'static Settings, config: Arc<ConfigStore>) -> Arc<Self> {
        Arc::new(Self {
            settings,
            flow: flow::Env::new(settings, config.dir()),
            upstreams: {
                let mut u = Upstreams::new(
                    config.clone(),
                    Dns::new(&settings.nameservers),
                    settings.connect_timeout,
                    settings.upstream_max_tracked,
                );
                u.health.udp_ttl = settings.health_udp_ttl;
                u
            },
            config,
            actors: ActorTable::new(),
            memory: MemoryBudget::new(settings.l7_fixed_limit),
            started: Instant::now(),
            certs: Arc::new(arc_swap::ArcSwap::from_pointee(
                crate::certs::CertStore::default(),
            )),
            acme: Arc::default(),
            certs_reload: std::sync::Mutex::new(()),
            draining: Drain::new(Ticks::for_wait(settings.http_idle_timeout, 4)),
            ws_idle_ticks: Ticks::for_wait(settings.websocket_idle_timeout, 4),
            handshake_ticks: Ticks::for_wait(settings.http_header_timeout, 4),
            peek_wait: Wait::new(settings.tcp_peek_timeout, 4),
            hello_wait: Wait::new(settings.tls_peek_timeout, 4),
            config_inbox: ConfigInbox::default(),
        })
    }

    /// The clock of the HTTP idle watchdog (`l7::idle`), which the drain signal ticks.
    pub fn http_idle_ticks(&self) -> &'static Ticks {
        self.draining.ticks
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
        publish_expiry(&current, &store);
        self.certs.store(Arc::new(store));
    }
}

/// `vane_certificate_expiry_timestamp_seconds{certificate}` for each pair of `now`; a pair that
/// went away reads NaN (the series cannot be withdrawn, and an old date would raise an
/// expiry alert for a certificate that is no longer served).
fn publish_expiry(before: &crate::certs::CertStore, now: &crate::certs::CertStore) {
    let gauge = |id: &str| metrics::gauge!("vane_certificate_expiry_timestamp_seconds", "certificate" => id.to_string());
    for id in before
        .by_id
        .keys()
        .filter(|id| !now.by_id.contains_key(*id))
    {
        gauge(id).set(f64::NAN);
    }
    for (id, c) in &now.by_id {
        let at = c
            .not_after
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(f64::NAN, |d| d.as_secs_f64());
        gauge(id).set(at);
    }
}

/// The shutdown signal HTTP connections look at: a flag, and a tick of the HTTP idle clock
/// to make them look at once. A connection's idle watchdog waits for that clock anyway, so
/// waiting for the signal costs a connection nothing more (hyper's path waits on it too, and
/// wakes for nothing once per tick).
#[derive(Debug)]
pub struct Drain {
    on: AtomicBool,
    ticks: &'static Ticks,
}

impl Drain {
    pub fn new(ticks: &'static Ticks) -> Self {
        Self {
            on: AtomicBool::new(false),
            ticks,
        }
    }

    /// Starts draining and wakes every waiter.
    pub fn start(&self) {
        self.on.store(true, Ordering::SeqCst);
        self.ticks.tick();
    }

    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::SeqCst)
    }

    /// Resolves once draining has started (at once when it has).
    pub async fn wait(&self) {
        let mut waiter = self.ticks.waiter();
        // The flag is read after each poll of the waiter, the first of which puts it in its
        // list: a `start` before that is seen in the flag, one after it wakes the waiter.
        std::future::poll_fn(|cx| {
            let _ = waiter.poll_ticks(cx);
            if self.is_on() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Waiters on several threads (so in several lists) wake when draining starts, and a
    /// wait begun after it ends at once.
    #[test]
    fn drain_wakes_every_thread_s_waiters_and_later_ones_at_once() {
        let drain = Arc::new(Drain::new(Ticks::every(Duration::from_secs(3599))));
        let waits = drain.clone();
        let woken = crate::ticks::testing::woken_on_three_threads(
            move || {
                let drain = waits.clone();
                async move { drain.wait().await }
            },
            || {
                assert!(!drain.is_on());
                drain.start();
            },
        );
        assert!(
            woken,
            "a waiter ended before the start or was not woken by it"
        );
        let later = crate::ticks::testing::runtime().block_on(async {
            tokio::time::timeout(Duration::from_millis(50), drain.wait()).await
        });
        assert!(later.is_ok(), "a wait after the start did not end at once");
    }
}
