//! What the status page shows, gathered from the running gateway in one JSON document: the
//! actor tree, the flows of every listener, resolver and application as trees (with how often
//! each plugin ran), upstream health, traffic and error counts, the memory budget, the last
//! reloads and the certificates.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::config::ListenerDoc;
use crate::flow::step::Step;
use crate::l4::L4;

/// Upstream targets listed at most.
const MAX_TARGETS: usize = 200;

/// A flow step and what follows each of its branches.
fn tree(s: &Step) -> Value {
    let branches: Vec<Value> = s
        .output
        .iter()
        .map(|(b, next)| json!({"branch": b, "next": tree(next)}))
        .collect();
    json!({"plugin": s.name, "branches": branches})
}

/// One sample of the exposition: family, labels, value.
struct Sample<'a> {
    name: &'a str,
    labels: &'a str,
    value: f64,
}

fn samples(text: &str) -> Vec<Sample<'_>> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let value = value.parse().ok()?;
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            Some(Sample {
                name,
                labels,
                value,
            })
        })
        .collect()
}

/// The value of `key` in a label set (`a="x",b="y"`).
fn label<'a>(labels: &'a str, key: &str) -> Option<&'a str> {
    labels.split("\",").find_map(|kv| {
        let (k, v) = kv.split_once("=\"")?;
        (k.trim_start_matches(',') == key).then(|| v.trim_end_matches('"'))
    })
}

pub fn data(rt: &L4) -> Value {
    let snap = rt.config.load();
    let text = crate::ops::metrics::installed().map(|h| h.render());
    let all = text.as_deref().map(samples).unwrap_or_default();
    let sum = |name: &str, keep: &dyn Fn(&str) -> bool| -> f64 {
        all.iter()
            .filter(|s| s.name == name && keep(s.labels))
            .map(|s| s.value)
            .sum()
    };
    let any = |_: &str| true;
    let failed = |l: &str| label(l, "status").is_some_and(|s| s.starts_with('5') || s == "aborted");
    let mut plugin_runs: BTreeMap<&str, f64> = BTreeMap::new();
    for s in all
        .iter()
        .filter(|s| s.name == "vane_plugin_duration_seconds_count")
    {
        if let Some(p) = label(s.labels, "plugin") {
            *plugin_runs.entry(p).or_default() += s.value;
        }
    }
    let mut by_listener: BTreeMap<&str, f64> = BTreeMap::new();
    for s in all.iter().filter(|s| s.name == "vane_connections_active") {
        if let Some(l) = label(s.labels, "listener") {
            *by_listener.entry(l).or_default() += s.value;
        }
    }
    let mut flows = Vec::new();
    for (key, entry) in &snap.listeners {
        let t = match &entry.doc.mode {
            ListenerDoc::Flow(f) => tree(&f.root),
            ListenerDoc::Legacy(_) => json!({"plugin": "legacy rules", "branches": []}),
        };
        flows.push(
            json!({"kind": "listener", "name": key.to_string(), "file": entry.file, "tree": t}),
        );
    }
    for (kind, map) in [
        ("resolver", &snap.resolvers),
        ("application", &snap.applications),
    ] {
        for (name, entry) in map {
            flows.push(json!({"kind": kind, "name": name, "file": entry.file, "tree": tree(&entry.doc.root)}));
        }
    }
    let actors: Vec<Value> = rt
        .actors
        .snapshot()
        .into_iter()
        .map(|a| json!({"name": a.name, "parent": a.parent, "status": a.status.as_str(), "restarts": a.restarts}))
        .collect();
    let certs: Vec<Value> = rt
        .certs
        .load()
        .by_id
        .values()
        .map(|c| {
            let not_after = c
                .not_after
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs());
            json!({"id": c.id, "not_after_unix": not_after})
        })
        .collect();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": rt.started.elapsed().as_secs(),
        "generation": snap.generation,
        "metrics": text.is_some(),
        "actors": actors,
        "flows": flows,
        "plugin_runs": plugin_runs,
        "upstreams": rt.upstreams.health.report(MAX_TARGETS),
        "traffic": {
            "connections": rt.limits.active(),
            "by_listener": by_listener,
            "requests": sum("vane_requests_total", &any),
            "failed_requests": sum("vane_requests_total", &failed),
            "rejected_connections": sum("vane_connections_rejected_total", &any),
            "connection_errors": sum("vane_http_connection_errors_total", &any),
        },
        "memory": {
            "buffered_bytes": rt.memory.used(),
            "limit_bytes": rt.memory.limit(),
            "rss_bytes": crate::ops::metrics::status_bytes("VmRSS:"),
        },
        "reloads": rt.config.history(),
        "certs": certs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_samples_and_labels_are_read() {
        let text = "# HELP x y\nvane_requests_total{app=\"a\",status=\"502\"} 3\nvane_nodes 2\n";
        let s = samples(text);
        assert_eq!(s.len(), 2);
        assert_eq!(label(s[0].labels, "status"), Some("502"));
        assert_eq!(label(s[0].labels, "app"), Some("a"));
        assert_eq!((s[1].name, s[1].value), ("vane_nodes", 2.0));
    }
}
