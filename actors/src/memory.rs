//! The `memory` actor and the L7 buffer budget it steers.
//!
//! Every second the actor reads available memory and recomputes the global ceiling for
//! buffered L7 bytes: `available * min(ratio, 95) / 100 + used`, or a fixed limit when adaptive
//! mode is off or memory cannot be read. The data plane reserves bytes through
//! [`MemoryBudget::try_reserve`] and gets a [`BufferGuard`] that gives them back on drop.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::control::{self, Control};
use crate::status::ActorTable;
use crate::supervisor::ChildSpec;

/// Settings of the budget (env `L7_ADAPTIVE_MEMORY_LIMIT`, `L7_ADAPTIVE_MEMORY_RATIO`,
/// `L7_GLOBAL_BUFFER_LIMIT`).
#[derive(Debug, Clone, Copy)]
pub struct MemorySettings {
    pub adaptive: bool,
    /// Percent of available memory; values above 95 are treated as 95.
    pub ratio: u64,
    pub fixed_limit: u64,
}

impl Default for MemorySettings {
    fn default() -> Self {
        Self {
            adaptive: true,
            ratio: 85,
            fixed_limit: 512 * 1024 * 1024,
        }
    }
}

/// The ceiling for buffered L7 bytes given a reading of available memory.
pub fn compute_limit(s: &MemorySettings, available: Option<u64>, used: u64) -> u64 {
    match (s.adaptive, available) {
        (true, Some(avail)) => {
            let ratio = s.ratio.min(95);
            (avail as u128 * ratio as u128 / 100) as u64 + used
        }
        _ => s.fixed_limit,
    }
}

/// Available memory in bytes from `/proc/meminfo` text: `MemAvailable`, else `MemFree`.
pub fn parse_meminfo(text: &str) -> Option<u64> {
    let field = |name: &str| {
        text.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix(':')?;
            let kb: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
            Some(kb * 1024)
        })
    };
    field("MemAvailable").or_else(|| field("MemFree"))
}

/// Reads available memory on this platform.
pub fn read_available() -> Option<u64> {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| parse_meminfo(&t))
}

/// Global accounting of buffered L7 bytes.
#[derive(Debug)]
pub struct MemoryBudget {
    used: AtomicU64,
    limit: AtomicU64,
}

impl MemoryBudget {
    pub fn new(initial_limit: u64) -> Arc<Self> {
        Arc::new(Self {
            used: AtomicU64::new(0),
            limit: AtomicU64::new(initial_limit),
        })
    }

    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    pub fn limit(&self) -> u64 {
        self.limit.load(Ordering::Relaxed)
    }

    pub fn set_limit(&self, limit: u64) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    /// Reserves `n` bytes atomically; `None` when that would pass the limit.
    pub fn try_reserve(self: &Arc<Self>, n: u64) -> Option<BufferGuard> {
        self.add(n).then(|| BufferGuard {
            budget: self.clone(),
            bytes: n,
        })
    }

    fn add(&self, n: u64) -> bool {
        let limit = self.limit();
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                u.checked_add(n).filter(|t| *t <= limit)
            })
            .is_ok()
    }
}

/// Bytes charged to the [`MemoryBudget`]; released when dropped.
#[derive(Debug)]
pub struct BufferGuard {
    budget: Arc<MemoryBudget>,
    bytes: u64,
}

impl BufferGuard {
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Charges `n` more bytes to this guard; false (nothing charged) when over the limit.
    pub fn grow(&mut self, n: u64) -> bool {
        let ok = self.budget.add(n);
        if ok {
            self.bytes += n;
        }
        ok
    }
}

impl Drop for BufferGuard {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// Source of available-memory readings (injectable for tests).
pub type Reader = Arc<dyn Fn() -> Option<u64> + Send + Sync>;

#[derive(Clone)]
pub struct MemoryArgs {
    pub name: String,
    pub parent: String,
    pub table: ActorTable,
    pub settings: MemorySettings,
    pub budget: Arc<MemoryBudget>,
    pub reader: Reader,
    pub tick: Duration,
}

pub enum MemoryMsg {
    Control(Control),
    Tick,
}

impl From<Control> for MemoryMsg {
    fn from(c: Control) -> Self {
        MemoryMsg::Control(c)
    }
}

pub struct MemoryState {
    args: MemoryArgs,
    _ticker: ractor::concurrency::JoinHandle<()>,
}

pub struct MemoryActor;

impl MemoryActor {
    pub fn child_spec(args: MemoryArgs) -> ChildSpec {
        ChildSpec::linked(args.name.clone(), || MemoryActor, args)
    }
}

fn tick(args: &MemoryArgs) {
    let used = args.budget.used();
    let limit = compute_limit(&args.settings, (args.reader)(), used);
    args.budget.set_limit(limit);
    metrics::gauge!("vane_l7_memory_limit_bytes").set(limit as f64);
    metrics::gauge!("vane_l7_buffered_bytes").set(used as f64);
}

impl Actor for MemoryActor {
    type Msg = MemoryMsg;
    type State = MemoryState;
    type Arguments = MemoryArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: MemoryArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        args.table.set_running(
            &args.name,
            &args.parent,
            control::handle_for(myself.clone()),
        );
        tick(&args);
        let ticker = myself.send_interval(args.tick, || MemoryMsg::Tick);
        Ok(MemoryState {
            args,
            _ticker: ticker,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.args.table.set_stopped(&state.args.name);
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            MemoryMsg::Tick => tick(&state.args),
            MemoryMsg::Control(Control::Refresh) => tick(&state.args),
            MemoryMsg::Control(c) => control::apply_fault(&state.args.name, c).await,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMINFO: &str =
        "MemTotal:       16000000 kB\nMemFree:          100000 kB\nMemAvailable:    8000000 kB\n";

    #[test]
    fn meminfo_prefers_available_over_free() {
        assert_eq!(parse_meminfo(MEMINFO), Some(8_000_000 * 1024));
        assert_eq!(
            parse_meminfo("MemFree:  2048 kB\n"),
            Some(2048 * 1024),
            "falls back to MemFree"
        );
        assert_eq!(parse_meminfo("garbage"), None);
    }

    #[test]
    fn limit_formula_caps_ratio_and_adds_used() {
        let mut s = MemorySettings {
            adaptive: true,
            ratio: 85,
            fixed_limit: 7,
        };
        assert_eq!(compute_limit(&s, Some(1000), 50), 850 + 50);
        s.ratio = 120;
        assert_eq!(compute_limit(&s, Some(1000), 0), 950, "ratio capped at 95");
        assert_eq!(compute_limit(&s, None, 10), 7, "unreadable memory -> fixed");
        s.adaptive = false;
        assert_eq!(compute_limit(&s, Some(1000), 10), 7, "fixed mode");
    }

    #[test]
    fn reservations_respect_the_limit_and_release_on_drop() {
        let b = MemoryBudget::new(100);
        let g1 = b.try_reserve(60).expect("fits");
        assert!(b.try_reserve(50).is_none(), "60 + 50 > 100");
        let mut g2 = b.try_reserve(40).expect("fits exactly");
        assert!(!g2.grow(1));
        drop(g1);
        assert!(g2.grow(10));
        assert_eq!(b.used(), 50);
        drop(g2);
        assert_eq!(b.used(), 0);
    }

    #[tokio::test]
    async fn actor_applies_injected_readings_each_tick() {
        let reading = Arc::new(AtomicU64::new(1000));
        let r = reading.clone();
        let budget = MemoryBudget::new(1);
        let args = MemoryArgs {
            name: "memory".into(),
            parent: "root".into(),
            table: ActorTable::new(),
            settings: MemorySettings::default(),
            budget: budget.clone(),
            reader: Arc::new(move || Some(r.load(Ordering::Relaxed))),
            tick: Duration::from_millis(20),
        };
        let (actor, handle) = Actor::spawn(None, MemoryActor, args).await.expect("spawn");
        assert_eq!(budget.limit(), 850);
        reading.store(2000, Ordering::Relaxed);
        let mut ok = false;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            if budget.limit() == 1700 {
                ok = true;
                break;
            }
        }
        assert!(ok, "limit follows the new reading, got {}", budget.limit());
        actor.stop(None);
        let _ = handle.await;
    }
}
