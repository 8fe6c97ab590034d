//! The `quic` actor: owns the QUIC session tables (connection ID -> route and client
//! address -> route), sweeps idle entries and enforces a hard size cap.
//!
//! Lookups on the data plane are lock-free reads of the current tables through
//! [`QuicTablesHandle`]; only the sweep lives in the actor. A restarted actor publishes fresh,
//! empty tables: in-flight flows then fall back to the sticky path or re-inspection.

use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use dashmap::DashMap;
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::control::{self, Control};
use crate::status::ActorTable;
use crate::supervisor::ChildSpec;

struct Slot<V> {
    value: V,
    last_seen_ms: AtomicU64,
}

/// A concurrent map with idle expiry and a hard cap on entries.
pub struct SessionTable<K, V> {
    map: DashMap<K, Slot<V>>,
    ttl: Duration,
    cap: usize,
    epoch: Instant,
    evictions: AtomicU64,
    /// Held while a new key is checked against the cap and inserted, so inserts from several
    /// threads cannot pass the cap together (replacing a key needs no lock).
    inserting: std::sync::Mutex<()>,
    /// The most entries the table ever held (measured after each new key, under the lock).
    high_water: std::sync::atomic::AtomicUsize,
}

impl<K: Eq + Hash + Clone, V: Clone> SessionTable<K, V> {
    pub fn new(ttl: Duration, cap: usize) -> Self {
        Self {
            map: DashMap::new(),
            ttl,
            cap: cap.max(1),
            epoch: Instant::now(),
            evictions: AtomicU64::new(0),
            inserting: std::sync::Mutex::new(()),
            high_water: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Looks a key up (by any borrowed form, e.g. `&[u8]` for `Vec<u8>` keys) and refreshes
    /// its idle timer.
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let slot = self.map.get(key)?;
        slot.last_seen_ms.store(self.now_ms(), Ordering::Relaxed);
        Some(slot.value.clone())
    }

    /// Inserts or replaces; when full, expired entries go first, then the least recently seen.
    /// The cap is hard: new keys are admitted one at a time.
    pub fn insert(&self, key: K, value: V) {
        let slot = Slot {
            value,
            last_seen_ms: AtomicU64::new(self.now_ms()),
        };
        if let Some(mut e) = self.map.get_mut(&key) {
            *e = slot;
            return;
        }
        let _one_at_a_time = self.inserting.lock().unwrap_or_else(|e| e.into_inner());
        if self.map.len() >= self.cap && !self.map.contains_key(&key) {
            self.sweep();
            if self.map.len() >= self.cap {
                self.evict_oldest((self.cap / 16).max(1));
            }
        }
        self.map.insert(key, slot);
        self.high_water.fetch_max(self.map.len(), Ordering::Relaxed);
    }

    /// The most entries the table ever held.
    pub fn high_water(&self) -> usize {
        self.high_water.load(Ordering::Relaxed)
    }

    pub fn remove(&self, key: &K) {
        self.map.remove(key);
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Entries evicted because the table was full.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    /// Drops entries idle longer than the TTL; returns how many.
    pub fn sweep(&self) -> usize {
        let now = self.now_ms();
        let ttl = self.ttl.as_millis() as u64;
        let before = self.map.len();
        self.map
            .retain(|_, s| now.saturating_sub(s.last_seen_ms.load(Ordering::Relaxed)) <= ttl);
        before.saturating_sub(self.map.len())
    }

    fn evict_oldest(&self, n: usize) {
        let mut ages: Vec<(u64, K)> = self
            .map
            .iter()
            .map(|e| (e.last_seen_ms.load(Ordering::Relaxed), e.key().clone()))
            .collect();
        ages.sort_unstable_by_key(|(t, _)| *t);
        for (_, k) in ages.into_iter().take(n) {
            if self.map.remove(&k).is_some() {
                self.evictions.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("vane_quic_evictions_total").increment(1);
            }
        }
    }
}

/// The two tables the QUIC layer routes by.
pub struct QuicTables<R> {
    pub by_cid: SessionTable<Vec<u8>, R>,
    pub by_client: SessionTable<std::net::SocketAddr, R>,
}

/// Table limits (env `QUIC_SESSION_TTL_SECS`, `QUIC_STICKY_SESSION_TTL`, caps).
#[derive(Debug, Clone, Copy)]
pub struct QuicLimits {
    pub cid_ttl: Duration,
    pub sticky_ttl: Duration,
    pub max_entries: usize,
}

impl Default for QuicLimits {
    fn default() -> Self {
        Self {
            cid_ttl: Duration::from_secs(300),
            sticky_ttl: Duration::from_secs(60),
            max_entries: 100_000,
        }
    }
}

impl<R: Clone> QuicTables<R> {
    pub fn new(l: QuicLimits) -> Self {
        Self {
            by_cid: SessionTable::new(l.cid_ttl, l.max_entries),
            by_client: SessionTable::new(l.sticky_ttl, l.max_entries),
        }
    }
}

/// Where the data plane finds the current tables.
pub type QuicTablesHandle<R> = Arc<ArcSwap<QuicTables<R>>>;

pub struct QuicArgs<R> {
    pub name: String,
    pub parent: String,
    pub table: ActorTable,
    pub limits: QuicLimits,
    pub tables: QuicTablesHandle<R>,
    pub sweep_every: Duration,
}

impl<R> Clone for QuicArgs<R> {
    fn clone(&self) -> Self {
        Self {
            name: self.name.clone(),
            parent: self.parent.clone(),
            table: self.table.clone(),
            limits: self.limits,
            tables: self.tables.clone(),
            sweep_every: self.sweep_every,
        }
    }
}

pub enum QuicMsg {
    Control(Control),
    Sweep,
}

impl From<Control> for QuicMsg {
    fn from(c: Control) -> Self {
        QuicMsg::Control(c)
    }
}

pub struct QuicState<R> {
    args: QuicArgs<R>,
    _ticker: ractor::concurrency::JoinHandle<()>,
}

pub struct QuicActor<R>(std::marker::PhantomData<fn() -> R>);

impl<R: Clone + Send + Sync + 'static> QuicActor<R> {
    pub fn child_spec(args: QuicArgs<R>) -> ChildSpec {
        ChildSpec::linked(
            args.name.clone(),
            || QuicActor::<R>(std::marker::PhantomData),
            args,
        )
    }
}

impl<R: Clone + Send + Sync + 'static> Actor for QuicActor<R> {
    type Msg = QuicMsg;
    type State = QuicState<R>;
    type Arguments = QuicArgs<R>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: QuicArgs<R>,
    ) -> Result<Self::State, ActorProcessingErr> {
        args.table.set_running(
            &args.name,
            &args.parent,
            control::handle_for(myself.clone()),
        );
        // A fresh start means fresh tables: whatever the old instance held may be inconsistent.
        args.tables.store(Arc::new(QuicTables::new(args.limits)));
        metrics::gauge!("vane_quic_sessions").set(0.0);
        let ticker = myself.send_interval(args.sweep_every, || QuicMsg::Sweep);
        Ok(QuicState {
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
            QuicMsg::Sweep | QuicMsg::Control(Control::Refresh) => {
                let t = state.args.tables.load();
                t.by_cid.sweep();
                t.by_client.sweep();
                metrics::gauge!("vane_quic_sessions").set(t.by_cid.len() as f64);
            }
            QuicMsg::Control(c) => control::apply_fault(&state.args.name, c).await,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_is_hard_and_evicts_least_recently_seen() {
        let t: SessionTable<u32, u32> = SessionTable::new(Duration::from_secs(60), 32);
        for i in 0..32 {
            t.insert(i, i);
        }
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(t.get(&0), Some(0), "0 is now the most recent");
        for i in 100..200 {
            t.insert(i, i);
        }
        assert!(t.len() <= 32, "len {} over cap", t.len());
        assert!(t.evictions() >= 90, "evictions {}", t.evictions());
        assert_eq!(t.get(&199), Some(199));
    }

    #[test]
    fn concurrent_inserts_never_pass_the_cap() {
        let t: std::sync::Arc<SessionTable<u32, u32>> =
            std::sync::Arc::new(SessionTable::new(Duration::from_secs(60), 100));
        let threads: Vec<_> = (0..8u32)
            .map(|n| {
                let t = t.clone();
                std::thread::spawn(move || {
                    for i in 0..5_000 {
                        t.insert(n * 1_000_000 + i, i);
                    }
                })
            })
            .collect();
        for h in threads {
            h.join().expect("thread");
        }
        assert!(
            t.high_water() <= 100,
            "the table reached {} entries (cap 100)",
            t.high_water()
        );
        assert_eq!(
            t.len() as u64 + t.evictions(),
            40_000,
            "every insert is kept or evicts"
        );
        assert!(
            t.evictions() >= 40_000 - 100,
            "evictions {} for 40000 inserts into 100 slots",
            t.evictions()
        );
    }

    #[test]
    fn idle_entries_are_swept() {
        let t: SessionTable<u32, u32> = SessionTable::new(Duration::from_millis(10), 8);
        t.insert(1, 1);
        std::thread::sleep(Duration::from_millis(30));
        t.insert(2, 2);
        assert_eq!(t.sweep(), 1);
        assert_eq!(t.get(&1), None);
        assert_eq!(t.get(&2), Some(2));
    }
}
