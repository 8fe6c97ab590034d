//! The nodes registry (`nodes.*`): named groups of addresses with port lists.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};

use serde_json::Value;

use super::error::{join, Problems};

/// One flattened record: an address of a node on one port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAddr {
    pub node: String,
    pub addr: SocketAddr,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Nodes {
    pub records: Vec<NodeAddr>,
    pub names: Vec<String>,
}

impl Nodes {
    /// Every address of `node` that serves `port`.
    pub fn addresses(&self, node: &str, port: u16) -> Vec<SocketAddr> {
        self.records
            .iter()
            .filter(|r| r.node == node && r.addr.port() == port)
            .map(|r| r.addr)
            .collect()
    }
}

/// Parses and validates a nodes document; `None` when it has errors.
pub fn parse(doc: &Value, pr: &mut Problems) -> Option<Nodes> {
    let mut out = Nodes::default();
    let list = match doc.get("nodes") {
        None | Some(Value::Null) => return Some(out),
        Some(Value::Array(l)) => l,
        Some(_) => {
            pr.error("nodes", "expected a list of nodes");
            return None;
        }
    };
    let name_re = regex::Regex::new("^[a-z0-9-]+$").ok()?;
    let mut seen = HashSet::new();
    for (i, n) in list.iter().enumerate() {
        let at = format!("nodes.{i}");
        let Some(name) = n.get("name").and_then(Value::as_str) else {
            pr.error(&at, "missing string `name`");
            continue;
        };
        if !name_re.is_match(name) {
            pr.error(
                &join(&at, "name"),
                format!("`{name}` must match ^[a-z0-9-]+$"),
            );
        }
        if !seen.insert(name.to_string()) {
            pr.error(
                &join(&at, "name"),
                format!("node `{name}` is defined twice"),
            );
        }
        let ips = n
            .get("ips")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if ips.is_empty() {
            pr.error(&join(&at, "ips"), "a node needs at least one address");
        }
        for (j, ip) in ips.iter().enumerate() {
            let iat = format!("{at}.ips.{j}");
            let addr = ip
                .get("address")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let parsed = addr.parse::<IpAddr>();
            if parsed.is_err() {
                pr.error(
                    &join(&iat, "address"),
                    format!("`{addr}` is not an IP address"),
                );
            }
            match ip.get("type").and_then(Value::as_str) {
                Some("ipv4") | Some("ipv6") => {}
                other => pr.error(
                    &join(&iat, "type"),
                    format!("type must be ipv4 or ipv6, got {other:?}"),
                ),
            }
            let ports: Vec<Option<u16>> = ip
                .get("ports")
                .and_then(Value::as_array)
                .map(|ps| {
                    ps.iter()
                        .map(|p| {
                            p.as_u64()
                                .filter(|p| (1..=65535).contains(p))
                                .map(|p| p as u16)
                        })
                        .collect()
                })
                .unwrap_or_default();
            if ports.is_empty() {
                pr.error(&join(&iat, "ports"), "at least one port is required");
            }
            for (k, p) in ports.iter().enumerate() {
                match (p, &parsed) {
                    (Some(p), Ok(ip)) => out.records.push(NodeAddr {
                        node: name.to_string(),
                        addr: SocketAddr::new(*ip, *p),
                    }),
                    (None, _) => pr.error(&format!("{iat}.ports.{k}"), "port must be 1-65535"),
                    _ => {}
                }
            }
        }
        out.names.push(name.to_string());
    }
    (!pr.has_errors()).then_some(out)
}
