//! From what a flow or rule names (ip, node, domain) to candidate socket addresses, and the
//! healthy choice among them.

use std::net::SocketAddr;

use super::balance::{self, Strategy};
use crate::config::legacy::TargetSpec;
use crate::runtime::Runtime;

/// Every address a target spec stands for right now.
pub async fn addresses(rt: &Runtime, spec: &TargetSpec) -> Vec<SocketAddr> {
    match spec {
        TargetSpec::Ip(a) => vec![*a],
        TargetSpec::Node { node, port } => {
            let nodes = rt.config.load().nodes.clone();
            let found = nodes.doc.addresses(node, *port);
            if found.is_empty() {
                tracing::warn!("node `{node}` has no address on port {port}");
            }
            found
        }
        TargetSpec::Domain { domain, port } => rt
            .dns
            .lookup(domain)
            .await
            .into_iter()
            .map(|ip| SocketAddr::new(ip, *port))
            .collect(),
    }
}

/// Resolves specs and keeps the healthy addresses. Health comes from TCP probes, so it only
/// filters TCP targets (`tcp`); a UDP service would fail every TCP probe.
pub async fn healthy(rt: &Runtime, specs: &[TargetSpec], tcp: bool) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for s in specs {
        for a in addresses(rt, s).await {
            if (!tcp || rt.health.is_healthy(&a)) && !out.contains(&a) {
                out.push(a);
            }
        }
    }
    out
}

/// Chooses an address: healthy targets, else healthy fallbacks, else none (the caller closes).
pub async fn choose(
    rt: &Runtime,
    rule: &str,
    strategy: Strategy,
    targets: &[TargetSpec],
    fallbacks: &[TargetSpec],
    key: Option<&str>,
    tcp: bool,
) -> Option<SocketAddr> {
    let mut pool = healthy(rt, targets, tcp).await;
    if pool.is_empty() {
        pool = healthy(rt, fallbacks, tcp).await;
    }
    if pool.is_empty() {
        tracing::warn!("No available targets for `{rule}`.");
        return None;
    }
    balance::pick(strategy, &pool, rule, &rt.counters, &rt.health, key)
}
