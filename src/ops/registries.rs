//! The `registries/*` services: each rebuilds its view from the current snapshot when it
//! starts and whenever the `config` actor says its inputs changed.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::Value;
use vane_actors::service::{AbortOnDrop, Guard, Service, StartFuture};

use crate::config::legacy::TargetSpec;
use crate::config::{ListenerDoc, Proto, Snapshot};
use crate::flow::catalogue::Builtin;
use crate::flow::step::{Input, PluginRef, Step};
use crate::runtime::Runtime;
use crate::upstream::health;

/// `registries/nodes`: publishes the node count and validates references.
pub struct NodesRegistry(pub Arc<Runtime>);

impl Service for NodesRegistry {
    fn start(&self) -> StartFuture {
        let snap = self.0.config.load();
        let n = snap.nodes.doc.names.len();
        metrics::gauge!("vane_nodes").set(n as f64);
        tracing::debug!(
            "nodes registry: {n} node(s), {} address(es)",
            snap.nodes.doc.records.len()
        );
        Box::pin(async { Ok(Guard::new(())) })
    }
}

/// `registries/plugins`: the external plugins of `plugins.json`, whose connectivity it checks
/// right away and every `EXTERNAL_PLUGIN_CHECK_INTERVAL_MINS` (0.9.2's background check), for
/// `healthy` in `GET /plugins`.
pub struct PluginsRegistry(pub Arc<Runtime>);

impl Service for PluginsRegistry {
    fn start(&self) -> StartFuture {
        let rt = self.0.clone();
        let n = rt.config.load().plugins.doc.len();
        metrics::gauge!("vane_external_plugins").set(n as f64);
        Box::pin(async move {
            let task = tokio::spawn(async move {
                let mut tick = tokio::time::interval(rt.settings.plugin_check_interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let snap = rt.config.load();
                    let caller = &rt.flow.plugins;
                    caller
                        .healthy
                        .retain(|name, _| snap.plugins.doc.contains_key(name));
                    for p in snap.plugins.doc.values() {
                        let _ = caller.check(p).await;
                    }
                }
            });
            Ok(Guard::new(AbortOnDrop(task)))
        })
    }
}

/// `registries/certs`: the certificate store of `certs/` (a pair that fails keeps its last good
/// version; problems are logged against their files). Every `DEFAULT_CERT_CHECK_INTERVAL_SECS`
/// it also renews the `default` pair when that has less than 7 days left, as start-up does.
pub struct CertsRegistry(pub Arc<Runtime>);

impl Service for CertsRegistry {
    fn start(&self) -> StartFuture {
        let rt = self.0.clone();
        Box::pin(async move {
            let first = rt.clone();
            tokio::task::spawn_blocking(move || first.reload_certs())
                .await
                .map_err(|e| e.to_string())?;
            let task = tokio::spawn(async move {
                let mut tick = tokio::time::interval(rt.settings.default_cert_check);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                tick.tick().await; // the first is now: start-up has just checked
                loop {
                    tick.tick().await;
                    let rt = rt.clone();
                    let _ = tokio::task::spawn_blocking(move || renew_default(&rt)).await;
                }
            });
            Ok(Guard::new(AbortOnDrop(task)))
        })
    }
}

/// Makes a new `default` pair when the one on disk expires within 7 days (or is missing or
/// broken), and serves it at once.
fn renew_default(rt: &Runtime) {
    let dir = rt.config.dir();
    match crate::certs::ensure_default(dir) {
        Ok(true) => {
            tracing::info!(
                "generated a new self-signed default certificate in {} (the last one was missing, unreadable or expiring within 7 days)",
                dir.join("certs").display()
            );
            rt.reload_certs();
        }
        Ok(false) => {}
        Err(e) => tracing::warn!("cannot renew the default certificate: {e}"),
    }
}

/// `registries/health`: probes every TCP target that flows, legacy rules or nodes name.
pub struct HealthChecker(pub Arc<Runtime>);

impl Service for HealthChecker {
    fn start(&self) -> StartFuture {
        let rt = self.0.clone();
        Box::pin(async move {
            let rt2 = rt.clone();
            let sweep = tokio::spawn(async move {
                let mut tick = tokio::time::interval(rt2.settings.health_udp_cleanup);
                loop {
                    tick.tick().await;
                    rt2.upstreams.health.sweep_udp();
                }
            });
            let task = tokio::spawn(async move {
                let mut tick = tokio::time::interval(rt.settings.health_interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    round(&rt).await;
                }
            });
            Ok(Guard::new((AbortOnDrop(task), AbortOnDrop(sweep))))
        })
    }
}

/// One probe round over every target the config names (and those marked down).
pub async fn round(rt: &Arc<Runtime>) {
    let snap = rt.config.load();
    let mut wanted: HashSet<SocketAddr> = HashSet::new();
    for spec in target_specs(&snap) {
        wanted.extend(rt.upstreams.addresses(&spec).await);
    }
    wanted.extend(snap.nodes.doc.records.iter().map(|r| r.addr));
    rt.upstreams.health.retain(&wanted);
    let mut all = wanted.clone();
    all.extend(rt.upstreams.health.down());
    let mut set = tokio::task::JoinSet::new();
    for addr in all {
        let timeout = rt.settings.health_timeout;
        set.spawn(async move { (addr, health::probe(addr, timeout).await) });
    }
    while let Some(Ok((addr, r))) = set.join_next().await {
        rt.upstreams.health.record_probe(addr, r);
    }
}

/// Literal targets of every TCP listener (flows and legacy rules).
fn target_specs(snap: &Snapshot) -> Vec<TargetSpec> {
    let mut out = Vec::new();
    for (key, entry) in &snap.listeners {
        if key.proto != Proto::Tcp {
            continue;
        }
        match &entry.doc.mode {
            ListenerDoc::Legacy(rules) => out.extend(rules.targets().cloned()),
            ListenerDoc::Flow(f) => walk(&f.root, &mut out),
        }
    }
    for entry in snap.resolvers.values() {
        walk(&entry.doc.root, &mut out);
    }
    out
}

fn walk(step: &Step, out: &mut Vec<TargetSpec>) {
    if let PluginRef::Builtin(spec) = &step.plugin {
        let lit = |k: &str| match step.input(k) {
            Some(Input::Lit(v)) => Some(v.clone()),
            _ => None,
        };
        let port = lit("target.port")
            .and_then(|v| v.as_u64())
            .and_then(|p| u16::try_from(p).ok());
        let text = |k: &str| {
            lit(k).and_then(|v| {
                if let Value::String(s) = v {
                    Some(s)
                } else {
                    None
                }
            })
        };
        match (spec.kind, port) {
            (Builtin::Proxy, Some(port)) => {
                if let Some(ip) = text("target.ip").and_then(|s| s.parse().ok()) {
                    out.push(TargetSpec::Ip(SocketAddr::new(ip, port)));
                }
            }
            (Builtin::ProxyNode, Some(port)) => {
                if let Some(node) = text("target.node") {
                    out.push(TargetSpec::Node { node, port });
                }
            }
            (Builtin::ProxyDomain, Some(port)) => {
                if let Some(domain) = text("target.domain") {
                    out.push(TargetSpec::Domain { domain, port });
                }
            }
            _ => {}
        }
    }
    for (_, s) in &step.output {
        walk(s, out);
    }
}
