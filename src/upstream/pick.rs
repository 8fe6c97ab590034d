//! From what a flow or rule names (ip, node, domain) to one healthy address, and the
//! connection to it.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use super::balance::{self, Counters, Strategy};
use super::dns::Dns;
use super::health::HealthRegistry;
use crate::config::legacy::TargetSpec;
use crate::config::store::ConfigStore;
use crate::flow::exec::{ProxyTo, Upstream};
use crate::l4p::proxy_protocol::Version;
use crate::ticks::{Late, Wait};

/// Where a TCP connection goes and whether it is introduced with a PROXY header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub addr: SocketAddr,
    pub header: Option<Version>,
}

/// Name resolution, health, balancing state and the connect timeout, shared by every layer.
pub struct Upstreams {
    config: Arc<ConfigStore>,
    pub dns: Dns,
    pub health: HealthRegistry,
    pub counters: Counters,
    /// The connect timeout, on a shared clock: a connect that has to wait (nearly every one)
    /// would otherwise put a tokio timer in the wheel and, on a data-plane thread with no
    /// other timer pending, wake its driver with an eventfd write.
    connect_wait: Wait,
}

impl Upstreams {
    /// `max_tracked`: addresses the health registry keeps state for (`UPSTREAM_MAX_TRACKED`).
    pub fn new(
        config: Arc<ConfigStore>,
        dns: Dns,
        connect_timeout: Duration,
        max_tracked: usize,
    ) -> Self {
        Self {
            config,
            dns,
            health: HealthRegistry::new(max_tracked),
            counters: Counters::default(),
            connect_wait: Wait::new(connect_timeout, 4),
        }
    }

    /// Every address a target spec stands for right now.
    pub async fn addresses(&self, spec: &TargetSpec) -> Vec<SocketAddr> {
        match spec {
            TargetSpec::Ip(a) => vec![*a],
            TargetSpec::Node { node, port } => {
                let found = self.config.load().nodes.doc.addresses(node, *port);
                if found.is_empty() {
                    tracing::warn!("node `{node}` has no address on port {port}");
                }
                found
            }
            TargetSpec::Domain { domain, port } => self
                .dns
                .lookup(domain)
                .await
                .into_iter()
                .map(|ip| SocketAddr::new(ip, *port))
                .collect(),
        }
    }

    /// Resolves specs and keeps the healthy addresses. Health comes from TCP probes, so it
    /// only filters TCP targets (`tcp`); a UDP service would fail every TCP probe.
    async fn healthy(&self, specs: &[TargetSpec], tcp: bool) -> Vec<SocketAddr> {
        let mut out = Vec::new();
        for s in specs {
            for a in self.addresses(s).await {
                let healthy = if tcp {
                    self.health.is_healthy(&a)
                } else {
                    self.health.is_udp_healthy(&a)
                };
                if healthy && !out.contains(&a) {
                    out.push(a);
                }
            }
        }
        out
    }

    /// The one rule for a healthy choice: healthy targets, else healthy fallbacks, else none
    /// (the caller closes; a target with no health entry yet counts as healthy).
    pub async fn choose(
        &self,
        rule: &str,
        strategy: Strategy,
        targets: &[TargetSpec],
        fallbacks: &[TargetSpec],
        key: Option<&str>,
        tcp: bool,
    ) -> Option<SocketAddr> {
        let mut pool = self.healthy(targets, tcp).await;
        if pool.is_empty() {
            pool = self.healthy(fallbacks, tcp).await;
        }
        if pool.is_empty() {
            tracing::warn!("No available targets for `{rule}`.");
            return None;
        }
        balance::pick(strategy, &pool, rule, &self.counters, &self.health, key)
    }

    /// The address a flow's proxy terminator designates (`tcp`: TCP health, else UDP marks).
    pub async fn address(&self, up: &Upstream, rule: &str, tcp: bool) -> Option<SocketAddr> {
        let (spec, strategy, key) = match up {
            Upstream::Ip(a) => return Some(*a),
            Upstream::Node {
                node,
                port,
                strategy,
                key,
            } => (
                TargetSpec::Node {
                    node: node.clone(),
                    port: *port,
                },
                *strategy,
                key,
            ),
            Upstream::Domain {
                domain,
                port,
                strategy,
                key,
            } => (
                TargetSpec::Domain {
                    domain: domain.clone(),
                    port: *port,
                },
                *strategy,
                key,
            ),
        };
        self.choose(
            rule,
            strategy,
            std::slice::from_ref(&spec),
            &[],
            key.as_deref(),
            tcp,
        )
        .await
    }

    /// The TCP target of a proxy decision.
    pub async fn target(&self, to: &ProxyTo, rule: &str) -> Option<Target> {
        let addr = self.address(&to.upstream, rule, true).await?;
        Some(Target {
            addr,
            header: to.header,
        })
    }

    /// Connects with the configured timeout and no-delay; a failure marks the target down.
    pub async fn connect(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        let started = std::time::Instant::now();
        let connecting = TcpStream::connect(addr);
        let r = match self.connect_wait.within(connecting).await {
            Ok(r) => r,
            Err(Late) => Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
        };
        match r {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                connect_histogram().record(started.elapsed().as_secs_f64());
                outcome_counter(addr, true).increment(1);
                Ok(s)
            }
            Err(e) => {
                self.health.mark_down(addr, &e.to_string());
                outcome_counter(addr, false).increment(1);
                Err(e)
            }
        }
    }
}

/// `vane_upstream_connect_duration_seconds`, looked up once (the recorder is installed before
/// the first connection).
fn connect_histogram() -> &'static metrics::Histogram {
    static H: std::sync::OnceLock<metrics::Histogram> = std::sync::OnceLock::new();
    H.get_or_init(|| metrics::histogram!("vane_upstream_connect_duration_seconds"))
}

/// `vane_upstream_requests_total{target,outcome}` handles, cached so that a connection does not
/// format labels and search the registry. Only targets within the label cap are cached (the
/// rest share the `other` series), so the cache is as bounded as the metric.
type OutcomeCache = dashmap::DashMap<(SocketAddr, bool), metrics::Counter>;
static OUTCOMES: std::sync::OnceLock<OutcomeCache> = std::sync::OnceLock::new();

fn outcome_counter(addr: SocketAddr, ok: bool) -> metrics::Counter {
    let cache = OUTCOMES.get_or_init(dashmap::DashMap::new);
    if let Some(c) = cache.get(&(addr, ok)) {
        return c.clone();
    }
    let outcome = if ok { "connected" } else { "connect_failed" };
    let label = addr.to_string();
    let target = crate::labels::UPSTREAM_TARGET.admit(&label);
    if target == crate::labels::OTHER {
        return metrics::counter!("vane_upstream_requests_total", "target" => crate::labels::OTHER, "outcome" => outcome);
    }
    cache
        .entry((addr, ok))
        .or_insert_with(|| metrics::counter!("vane_upstream_requests_total", "target" => label, "outcome" => outcome))
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outcome_cache_is_as_bounded_as_the_label() {
        for i in 0..100_000u32 {
            let [a, b, c, d] = (0x0a00_0000 + i).to_be_bytes();
            outcome_counter(SocketAddr::from(([a, b, c, d], 443)), false).increment(1);
        }
        let cached = OUTCOMES.get().map_or(0, |c| c.len());
        let cap = crate::settings::get().metric_label_values;
        assert!(cached <= cap, "{cached} cached counters for a cap of {cap}");
        assert!(crate::labels::UPSTREAM_TARGET.len() <= cap);
    }
}
