//! Connecting to an upstream: pick an address, connect with a timeout, record health.

use std::io;
use std::net::SocketAddr;

use tokio::net::TcpStream;

use crate::config::legacy::TargetSpec;
use crate::flow::exec::Upstream;
use crate::runtime::Runtime;
use crate::upstream::resolve;

/// Where a TCP connection goes and whether it is introduced with a PROXY header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub addr: SocketAddr,
    pub header: Option<crate::l4p::proxy_protocol::Version>,
}

/// The target of a proxy decision.
pub async fn target(rt: &Runtime, to: &crate::flow::exec::ProxyTo, rule: &str) -> Option<Target> {
    let addr = address(rt, &to.upstream, rule, true).await?;
    Some(Target {
        addr,
        header: to.header,
    })
}

/// The address a flow's proxy terminator designates, chosen among healthy candidates (TCP
/// health only applies to TCP targets: `tcp`).
pub async fn address(rt: &Runtime, up: &Upstream, rule: &str, tcp: bool) -> Option<SocketAddr> {
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
    let all = resolve::addresses(rt, &spec).await;
    if all.is_empty() {
        tracing::warn!("{rule}: no address for {spec:?}");
        return None;
    }
    let healthy: Vec<SocketAddr> = all
        .iter()
        .copied()
        .filter(|a| !tcp || rt.health.is_healthy(a))
        .collect();
    // With every candidate marked down, still try one: the mark may be stale.
    let pool = if healthy.is_empty() { all } else { healthy };
    crate::upstream::balance::pick(
        strategy,
        &pool,
        rule,
        &rt.counters,
        &rt.health,
        key.as_deref(),
    )
}

/// `vane_upstream_requests_total{target,outcome}` handles, cached so that a connection does not
/// format labels and search the registry.
fn outcome_counter(addr: SocketAddr, ok: bool) -> metrics::Counter {
    static CACHE: std::sync::OnceLock<dashmap::DashMap<(SocketAddr, bool), metrics::Counter>> =
        std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(dashmap::DashMap::new);
    if let Some(c) = cache.get(&(addr, ok)) {
        return c.clone();
    }
    let outcome = if ok { "connected" } else { "connect_failed" };
    cache.entry((addr, ok)).or_insert_with(|| metrics::counter!("vane_upstream_requests_total", "target" => addr.to_string(), "outcome" => outcome)).clone()
}

/// Connects with the configured timeout and no-delay; a failure marks the target down.
pub async fn tcp(rt: &Runtime, addr: SocketAddr) -> io::Result<TcpStream> {
    let r = match tokio::time::timeout(rt.settings.connect_timeout, TcpStream::connect(addr)).await
    {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
    };
    match r {
        Ok(s) => {
            let _ = s.set_nodelay(true);
            outcome_counter(addr, true).increment(1);
            Ok(s)
        }
        Err(e) => {
            rt.health.mark_down(addr, &e.to_string());
            outcome_counter(addr, false).increment(1);
            Err(e)
        }
    }
}
