//! Connection limits: a global count and a per-source-IP count (`MAX_CONNECTIONS`,
//! `MAX_CONNECTIONS_PER_IP`). A slot is held by a guard for the life of a connection or UDP
//! session.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

pub struct ConnLimits {
    max: usize,
    max_per_ip: usize,
    total: AtomicUsize,
    /// Looked up twice per connection: foldhash's seeded `quality` hash, not SipHash (whose
    /// two passes cost about 500 instructions of every new connection).
    per_ip: DashMap<IpAddr, usize, foldhash::quality::RandomState>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    Global,
    PerIp,
}

impl Rejected {
    pub fn reason(self) -> &'static str {
        match self {
            Rejected::Global => "max_connections",
            Rejected::PerIp => "max_connections_per_ip",
        }
    }
}

impl ConnLimits {
    pub fn new(max: usize, max_per_ip: usize) -> Self {
        Self {
            max,
            max_per_ip,
            total: AtomicUsize::new(0),
            per_ip: DashMap::default(),
        }
    }

    /// Takes a slot for `ip`, or says which limit refused it (counted in metrics).
    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Rejected> {
        let r = self.try_acquire(ip);
        if let Err(why) = r {
            metrics::counter!("vane_connections_rejected_total", "reason" => why.reason())
                .increment(1);
        }
        r.map(|_| Slot {
            limits: Arc::clone(self),
            ip,
        })
    }

    fn try_acquire(&self, ip: IpAddr) -> Result<(), Rejected> {
        self.total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .map_err(|_| Rejected::Global)?;
        let mut e = self.per_ip.entry(ip).or_insert(0);
        if *e >= self.max_per_ip {
            drop(e);
            self.release_total();
            self.per_ip.remove_if(&ip, |_, n| *n == 0);
            return Err(Rejected::PerIp);
        }
        *e += 1;
        Ok(())
    }

    fn release_total(&self) {
        self.total.fetch_sub(1, Ordering::AcqRel);
    }

    fn release(&self, ip: IpAddr) {
        // One lookup: the count goes down, and the entry with it when it was the last.
        self.per_ip.remove_if_mut(&ip, |_, n| {
            *n = n.saturating_sub(1);
            *n == 0
        });
        self.release_total();
    }

    pub fn active(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }
}

/// A held connection slot; released on drop.
pub struct Slot {
    limits: Arc<ConnLimits>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.limits.release(self.ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_and_per_ip_limits() {
        let l = Arc::new(ConnLimits::new(3, 2));
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        let s1 = l.acquire(a).expect("1");
        let _s2 = l.acquire(a).expect("2");
        assert_eq!(l.acquire(a).err(), Some(Rejected::PerIp));
        let _s3 = l.acquire(b).expect("3");
        assert_eq!(l.acquire(b).err(), Some(Rejected::Global));
        drop(s1);
        assert!(l.acquire(a).is_ok(), "slot released");
        assert_eq!(l.active(), 2, "the temporary slot was dropped again");
    }

    /// A source's entry lives exactly as long as one of its slots does, so many sources
    /// coming and going leave nothing behind.
    #[test]
    fn a_source_is_forgotten_with_its_last_slot() {
        let l = Arc::new(ConnLimits::new(10_000, 3));
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let (s1, s2) = (l.acquire(a).expect("1"), l.acquire(a).expect("2"));
        drop(s1);
        assert_eq!(l.per_ip.get(&a).map(|n| *n), Some(1));
        drop(s2);
        assert!(l.per_ip.get(&a).is_none(), "the last slot took the entry");
        let slots: Vec<_> = (0..1000u32)
            .map(|i| l.acquire(IpAddr::from(i.to_be_bytes())).expect("slot"))
            .collect();
        assert_eq!(l.per_ip.len(), 1000);
        drop(slots);
        assert_eq!((l.per_ip.len(), l.active()), (0, 0));
    }
}
