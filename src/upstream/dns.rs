//! Name resolution with Vane's resolver: `NAMESERVER1`/`NAMESERVER2` over UDP (IPv4 or IPv6
//! literals, or `system` for the name servers of `/etc/resolv.conf`); IP literals, `localhost`
//! and the entries of `/etc/hosts` resolve locally. Answers are cached for their TTL.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::Resolver;

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
