//! Name resolution with Vane's resolver: `NAMESERVER1`/`NAMESERVER2` over UDP (IPv4 or IPv6
//! literals, or `system` for the name servers of `/etc/resolv.conf`); IP literals, `localhost`
//! and the entries of `/etc/hosts` resolve locally. Answers are cached for their TTL.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::Resolver;

/// Where `NAMESERVERn=system` reads the host's name servers.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";

/// The `nameserver` entries of a resolv.conf text, on port 53 (comments, other options and
/// addresses that do not parse are skipped; a scoped IPv6 address keeps no scope).
pub fn resolv_conf_servers(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let line = line.split(['#', ';']).next().unwrap_or("");
            let mut words = line.split_whitespace();
            if words.next() != Some("nameserver") {
                return None;
            }
            let addr = words.next()?;
            let addr = addr.split('%').next().unwrap_or(addr);
            addr.parse::<IpAddr>()
                .ok()
                .map(|ip| SocketAddr::new(ip, 53))
        })
        .collect()
}

pub struct Dns {
    resolver: Option<Resolver<TokioRuntimeProvider>>,
}

impl Dns {
    pub fn new(servers: &[SocketAddr]) -> Self {
        let ns = servers
            .iter()
            .map(|s| {
                let mut c = NameServerConfig::udp(s.ip());
                for conn in &mut c.connections {
                    conn.port = s.port();
                }
                c
            })
            .collect();
        let cfg = ResolverConfig::from_name_servers(ns);
        let resolver = Resolver::builder_with_config(cfg, TokioRuntimeProvider::default())
            .build()
            .map_err(|e| tracing::error!("DNS resolver unavailable: {e}"))
            .ok();
        Self { resolver }
    }

    /// Every address of `name` (A and AAAA); empty on failure.
    pub async fn lookup(&self, name: &str) -> Vec<IpAddr> {
        if let Ok(ip) = name.parse::<IpAddr>() {
            return vec![ip];
        }
        if name.eq_ignore_ascii_case("localhost") {
            return vec![
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
            ];
        }
        let Some(r) = &self.resolver else {
            return Vec::new();
        };
        let fqdn = if name.ends_with('.') {
            name.to_string()
        } else {
            format!("{name}.")
        };
        match r.lookup_ip(fqdn.as_str()).await {
            Ok(l) => l.iter().collect(),
            Err(e) => {
                tracing::debug!("DNS lookup of {name} failed: {e}");
                Vec::new()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_yields_its_name_servers_in_order() {
        let text = "# generated\nsearch example.com\nnameserver 10.0.0.2\n\
                    nameserver fe80::1%eth0 # link-local\n;nameserver 9.9.9.9\n\
                    nameserver not-an-ip\noptions ndots:2\n  nameserver   2001:db8::53\n";
        let got = resolv_conf_servers(text);
        let want: Vec<SocketAddr> = ["10.0.0.2:53", "[fe80::1]:53", "[2001:db8::53]:53"]
            .iter()
            .map(|s| s.parse().expect("addr"))
            .collect();
        assert_eq!(got, want);
        assert!(resolv_conf_servers("").is_empty());
    }
}
