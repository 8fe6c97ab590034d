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

/// Health and load of every upstream address we know.
#[derive(Default)]
pub struct HealthRegistry {
    targets: DashMap<SocketAddr, Arc<TargetState>>,
}

impl HealthRegistry {
    fn state(&self, addr: SocketAddr) -> Arc<TargetState> {
        if let Some(s) = self.targets.get(&addr) {
            return s.clone();
        }
        self.targets.entry(addr).or_default().clone()
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
        metrics::gauge!("vane_upstream_healthy", "target" => addr.to_string()).set(0.0);
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
        metrics::gauge!("vane_upstream_healthy", "target" => addr.to_string())
            .set(if latency.is_some() { 1.0 } else { 0.0 });
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

    /// Counts an active relay to `addr` for `least_conn` while the guard lives.
    pub fn track(&self, addr: SocketAddr) -> ActiveGuard {
        let s = self.state(addr);
        s.active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(s)
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
}
