//! Upstream health: a registry the data plane reads per connection, fed by active TCP probes
//! (the `registries/health` actor's loop) and by passive marks when a connect fails.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use tracing::{info, warn};

use super::balance::Stats;

#[derive(Default)]
struct TargetState {
    healthy: AtomicBool,
    /// Probed or marked at least once; unknown targets count as healthy.
    known: AtomicBool,
    latency_us: AtomicU64,
    active: AtomicUsize,
}

/// One target as operators see it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TargetReport {
    pub addr: SocketAddr,
    /// `None`: never probed nor marked yet.
    pub healthy: Option<bool>,
    /// The last successful probe's connect time.
    pub latency_us: u64,
    /// Relays open to it now.
    pub active: usize,
}

/// Health and load of every upstream address we know, up to `max` addresses: a flow can
/// name targets from client input, and each failed connect to one is remembered (and probed
/// until it recovers). Past the bound a new address gets state that is not kept: it is
/// neither marked nor probed, and counts as healthy.
pub struct HealthRegistry {
    targets: DashMap<SocketAddr, Arc<TargetState>>,
    max: usize,
    /// UDP targets a send or an ICMP error marked unavailable, and when (passive only: UDP has
    /// no connect to probe). A mark lasts `udp_ttl`.
    udp_down: DashMap<SocketAddr, std::time::Instant>,
    pub udp_ttl: Duration,
}

impl Default for HealthRegistry {
    fn default() -> Self {
        Self::new(10_000)
    }
}

impl HealthRegistry {
    pub fn new(max: usize) -> Self {
        Self {
            targets: DashMap::new(),
            max,
            udp_down: DashMap::new(),
            udp_ttl: Duration::from_secs(10),
        }
    }

    /// Passive mark of a UDP target after a send error or an ICMP error on its socket; it is
    /// avoided for `HEALTH_UDP_UNHEALTHY_TTL_SECS`.
    pub fn mark_udp_down(&self, addr: SocketAddr, why: &dyn std::fmt::Display) {
        if self.udp_down.len() >= self.max && !self.udp_down.contains_key(&addr) {
            metrics::counter!("vane_upstream_untracked_total").increment(1);
            return;
        }
        if self
            .udp_down
            .insert(addr, std::time::Instant::now())
            .is_none()
        {
            warn!("✗ Marked UDP target {addr} as unavailable: {why}");
        }
    }

    /// False while a UDP mark of `addr` is younger than its TTL.
    pub fn is_udp_healthy(&self, addr: &SocketAddr) -> bool {
        self.udp_down.is_empty()
            || self
                .udp_down
                .get(addr)
                .is_none_or(|t| t.elapsed() >= self.udp_ttl)
    }

    /// Drops expired UDP marks (every `HEALTH_UDP_CLEANUP_INTERVAL_SECS`).
    pub fn sweep_udp(&self) {
        let ttl = self.udp_ttl;
        self.udp_down.retain(|addr, t| {
            let keep = t.elapsed() < ttl;
            if !keep {
                info!("UDP target {addr} is tried again (its mark expired)");
            }
            keep
        });
    }

    fn state(&self, addr: SocketAddr) -> Arc<TargetState> {
        if let Some(s) = self.targets.get(&addr) {
            return s.clone();
        }
        if self.targets.len() >= self.max {
            metrics::counter!("vane_upstream_untracked_total").increment(1);
            return Arc::default();
        }
        self.targets.entry(addr).or_default().clone()
    }

    /// Addresses with state (configured targets, busy ones, ones marked down).
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// Unknown targets are optimistic: a new target is usable before its first probe.
    pub fn is_healthy(&self, addr: &SocketAddr) -> bool {
        self.targets
            .get(addr)
            .is_none_or(|s| !s.known.load(Ordering::Relaxed) || s.healthy.load(Ordering::Relaxed))
    }

    /// Passive mark after a failed connect.
    pub fn mark_down(&self, addr: SocketAddr, why: &str) {
        let s = self.state(addr);
        let was_known = s.known.swap(true, Ordering::Relaxed);
        if s.healthy.swap(false, Ordering::Relaxed) || !was_known {
            warn!("✗ Proactively marked TCP target {addr} as unavailable: {why}");
        }
        healthy_gauge(addr, false);
    }

    /// Records a probe result; logs recovery.
    pub fn record_probe(&self, addr: SocketAddr, latency: Option<Duration>) {
        let s = self.state(addr);
        let was_known = s.known.swap(true, Ordering::Relaxed);
        match latency {
            Some(l) => {
                s.latency_us.store(l.as_micros() as u64, Ordering::Relaxed);
                let was = s.healthy.swap(true, Ordering::Relaxed);
                if was_known && !was {
                    info!("✓ TCP target {addr} has recovered and is back online (latency: {l:?})");
                }
            }
            None => {
                if s.healthy.swap(false, Ordering::Relaxed) || !was_known {
                    warn!("✗ TCP target {addr} failed its health check");
                }
            }
        }
        healthy_gauge(addr, latency.is_some());
    }

    /// Forgets targets no longer named anywhere (0.9.2 kept them forever), except busy ones.
    pub fn retain(&self, wanted: &HashSet<SocketAddr>) {
        self.targets.retain(|a, s| {
            wanted.contains(a)
                || s.active.load(Ordering::Relaxed) > 0
                || (s.known.load(Ordering::Relaxed) && !s.healthy.load(Ordering::Relaxed))
        });
    }

    /// Addresses currently marked down (probed until they recover, even if unnamed).
    pub fn down(&self) -> Vec<SocketAddr> {
        self.targets
            .iter()
            .filter(|e| e.known.load(Ordering::Relaxed) && !e.healthy.load(Ordering::Relaxed))
            .map(|e| *e.key())
            .collect()
    }

    /// Up to `max` targets with their state, the unhealthy first (for the status page).
    pub fn report(&self, max: usize) -> Vec<TargetReport> {
        let mut all: Vec<TargetReport> = self
            .targets
            .iter()
            .map(|e| TargetReport {
                addr: *e.key(),
                healthy: e
                    .known
                    .load(Ordering::Relaxed)
                    .then(|| e.healthy.load(Ordering::Relaxed)),
                latency_us: e.latency_us.load(Ordering::Relaxed),
                active: e.active.load(Ordering::Relaxed),
            })
            .collect();
        all.sort_by_key(|t| (t.healthy != Some(false), t.addr));
        all.truncate(max);
        all
    }

    /// Counts an active relay to `addr` for `least_conn` while the guard lives.
    pub fn track(&self, addr: SocketAddr) -> ActiveGuard {
        let s = self.state(addr);
        s.active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(s)
    }
}

/// `vane_upstream_healthy{target}`, for targets within the label cap (a gauge collapsed into
/// `other` would mean nothing).
fn healthy_gauge(addr: SocketAddr, up: bool) {
    let label = addr.to_string();
    if crate::labels::UPSTREAM_TARGET.admit(&label) != crate::labels::OTHER {
        metrics::gauge!("vane_upstream_healthy", "target" => label).set(if up { 1.0 } else { 0.0 });
    }
}

pub struct ActiveGuard(Arc<TargetState>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Stats for HealthRegistry {
    fn latency_us(&self, addr: &SocketAddr) -> Option<u64> {
        self.targets
            .get(addr)
            .filter(|s| s.known.load(Ordering::Relaxed))
            .map(|s| s.latency_us.load(Ordering::Relaxed))
    }
    fn active(&self, addr: &SocketAddr) -> usize {
        self.targets
            .get(addr)
            .map_or(0, |s| s.active.load(Ordering::Relaxed))
    }
}

/// One TCP connect probe; `Some(latency)` on success.
pub async fn probe(addr: SocketAddr, timeout: Duration) -> Option<Duration> {
    let start = Instant::now();
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => Some(start.elapsed()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_is_healthy_marks_and_recovery() {
        let r = HealthRegistry::default();
        let a: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        assert!(r.is_healthy(&a));
        r.mark_down(a, "refused");
        assert!(!r.is_healthy(&a));
        assert_eq!(r.down(), vec![a]);
        r.record_probe(a, Some(Duration::from_micros(150)));
        assert!(r.is_healthy(&a));
        assert_eq!(r.latency_us(&a), Some(150));
        let g = r.track(a);
        assert_eq!(r.active(&a), 1);
        r.retain(&HashSet::new());
        assert_eq!(r.active(&a), 1, "busy targets are kept");
        drop(g);
        r.retain(&HashSet::new());
        assert_eq!(r.active(&a), 0);
        assert!(r.latency_us(&a).is_none(), "forgotten");
    }

    #[test]
    fn a_hundred_thousand_failing_addresses_stay_within_the_bound() {
        let r = HealthRegistry::new(1000);
        for i in 0..100_000u32 {
            let [a, b, c, d] = (0x0a00_0000 + i).to_be_bytes();
            r.mark_down(SocketAddr::from(([a, b, c, d], 80)), "refused");
        }
        assert_eq!(r.len(), 1000);
        assert_eq!(r.down().len(), 1000, "only the tracked ones are probed");
        let past: SocketAddr = "10.1.134.159:80".parse().expect("addr");
        assert!(r.is_healthy(&past), "an untracked address is not marked");
    }
}
