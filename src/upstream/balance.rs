//! Balancing strategies: which healthy address serves the next connection.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use dashmap::DashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Uniform random.
    Random,
    /// Vane's `serial`: a counter per rule indexes the current pool (round robin).
    Serial,
    /// Lowest measured connect latency.
    Fastest,
    /// Round robin (same as `serial`; the conventional name).
    RoundRobin,
    /// Fewest active relays.
    LeastConn,
    /// Rendezvous hashing of a templated key: a key keeps its address while the pool allows.
    Hash,
}

impl Strategy {
    pub fn parse(s: &str) -> Option<Strategy> {
        Some(match s.to_ascii_lowercase().as_str() {
            "random" => Strategy::Random,
            "serial" => Strategy::Serial,
            "fastest" => Strategy::Fastest,
            "round_robin" | "roundrobin" => Strategy::RoundRobin,
            "least_conn" | "leastconn" => Strategy::LeastConn,
            "hash" | "consistent_hash" => Strategy::Hash,
            _ => return None,
        })
    }
}

/// Per-rule round-robin counters.
#[derive(Default)]
pub struct Counters(DashMap<String, AtomicUsize>);

impl Counters {
    pub fn next(&self, rule: &str) -> usize {
        if let Some(c) = self.0.get(rule) {
            return c.fetch_add(1, Ordering::Relaxed);
        }
        self.0
            .entry(rule.to_string())
            .or_default()
            .fetch_add(1, Ordering::Relaxed)
    }
}

/// Facts a strategy may use about a candidate.
pub trait Stats {
    fn latency_us(&self, addr: &SocketAddr) -> Option<u64>;
    fn active(&self, addr: &SocketAddr) -> usize;
}

/// Picks one address from a non-empty pool.
pub fn pick(
    strategy: Strategy,
    pool: &[SocketAddr],
    rule: &str,
    counters: &Counters,
    stats: &dyn Stats,
    key: Option<&str>,
) -> Option<SocketAddr> {
    if pool.is_empty() {
        return None;
    }
    let i = match strategy {
        Strategy::Random => rand::random_range(0..pool.len()),
        Strategy::Serial | Strategy::RoundRobin => counters.next(rule) % pool.len(),
        Strategy::Fastest => (0..pool.len())
            .min_by_key(|i| stats.latency_us(&pool[*i]).unwrap_or(u64::MAX))
            .unwrap_or(0),
        Strategy::LeastConn => (0..pool.len())
            .min_by_key(|i| stats.active(&pool[*i]))
            .unwrap_or(0),
        Strategy::Hash => {
            let key = key.unwrap_or_default();
            (0..pool.len())
                .max_by_key(|i| {
                    let mut h = DefaultHasher::new();
                    key.hash(&mut h);
                    pool[*i].hash(&mut h);
                    h.finish()
                })
                .unwrap_or(0)
        }
    };
    pool.get(i).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct S(HashMap<SocketAddr, (u64, usize)>);
    impl Stats for S {
        fn latency_us(&self, a: &SocketAddr) -> Option<u64> {
            self.0.get(a).map(|x| x.0)
        }
        fn active(&self, a: &SocketAddr) -> usize {
            self.0.get(a).map_or(0, |x| x.1)
        }
    }

    fn pool() -> Vec<SocketAddr> {
        (1..=3)
            .map(|i| SocketAddr::from(([127, 0, 0, i], 80)))
            .collect()
    }

    #[test]
    fn serial_is_exactly_even() {
        let c = Counters::default();
        let s = S(HashMap::new());
        let mut n: HashMap<SocketAddr, usize> = HashMap::new();
        for _ in 0..30 {
            *n.entry(pick(Strategy::Serial, &pool(), "r", &c, &s, None).expect("pick"))
                .or_default() += 1;
        }
        assert!(n.values().all(|v| *v == 10), "{n:?}");
    }

    #[test]
    fn fastest_least_conn_and_hash() {
        let p = pool();
        let s = S(HashMap::from([
            (p[0], (900, 5)),
            (p[1], (100, 7)),
            (p[2], (500, 1)),
        ]));
        let c = Counters::default();
        assert_eq!(pick(Strategy::Fastest, &p, "r", &c, &s, None), Some(p[1]));
        assert_eq!(pick(Strategy::LeastConn, &p, "r", &c, &s, None), Some(p[2]));
        let a = pick(Strategy::Hash, &p, "r", &c, &s, Some("10.0.0.7"));
        assert_eq!(
            a,
            pick(Strategy::Hash, &p, "r", &c, &s, Some("10.0.0.7")),
            "stable"
        );
        // Removing another address does not move the key.
        let others: Vec<SocketAddr> = p.iter().copied().filter(|x| Some(*x) != a).collect();
        let smaller = vec![a.expect("some"), others[0]];
        assert_eq!(
            pick(Strategy::Hash, &smaller, "r", &c, &s, Some("10.0.0.7")),
            a
        );
    }
}
