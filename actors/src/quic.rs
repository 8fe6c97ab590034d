//! The `quic` actor: sweeps the QUIC connection-ID table (connection ID -> route) of idle
//! entries and of entries whose connection has ended; the table itself enforces a hard cap.
//!
//! Lookups on the data plane are lock-free reads of the table through [`QuicTablesHandle`].
//! The table belongs to the data plane, not to the actor: a restarted actor adopts it as it
//! is (dropping only entries whose connection has ended), so live connections keep their
//! routes and the gauges keep counting them.

use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::control::{self, Control};
use crate::status::ActorTable;
use crate::supervisor::ChildSpec;

struct Slot<V> {
    value: V,
    last_seen_ms: AtomicU64,
}

/// A table value that can tell whether what it points at still exists (a route to a
/// connection that has ended is garbage, whatever its age).
pub trait Route: Clone + Send + Sync + 'static {
    fn is_live(&self) -> bool;
}

impl<T: Send + Sync + 'static> Route for std::sync::Weak<T> {
    fn is_live(&self) -> bool {
        self.strong_count() > 0
    }
}

/// Milliseconds for idle and eviction ages: the monotonic clock, or one a test moves by hand.
#[derive(Clone)]
pub enum Clock {
    Real(Instant),
    Manual(Arc<AtomicU64>),
}

impl Clock {
    fn now_ms(&self) -> u64 {
        match self {
            Clock::Real(epoch) => epoch.elapsed().as_millis() as u64,
            Clock::Manual(ms) => ms.load(Ordering::Relaxed),
        }
    }
}

/// A concurrent map with idle expiry and a hard cap on entries.
pub struct SessionTable<K, V> {
    map: DashMap<K, Slot<V>>,
    ttl: Duration,
    cap: usize,
    clock: Clock,
    evictions: AtomicU64,
    /// Held while a new key is checked against the cap and inserted, so inserts from several
    /// threads cannot pass the cap together (replacing a key needs no lock).
    inserting: std::sync::Mutex<()>,
    /// The most entries the table ever held (measured after each new key, under the lock).
    high_water: std::sync::atomic::AtomicUsize,
}

impl<K: Eq + Hash + Clone, V: Clone> SessionTable<K, V> {
    pub fn new(ttl: Duration, cap: usize) -> Self {
        Self::with_clock(ttl, cap, Clock::Real(Instant::now()))
    }

    pub fn with_clock(ttl: Duration, cap: usize, clock: Clock) -> Self {
        Self {
            map: DashMap::new(),
            ttl,
            cap: cap.max(1),
            clock,
            evictions: AtomicU64::new(0),
            inserting: std::sync::Mutex::new(()),
            high_water: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.clock.now_ms()
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

    /// Inserts only when `key` is absent; returns whether it did. (A connection ID already
    /// routed stays with its connection: whoever repeats it cannot take it over.)
    pub fn insert_new(&self, key: K, value: V) -> bool {
        if self.map.contains_key(&key) {
            return false;
        }
        let _one_at_a_time = self.inserting.lock().unwrap_or_else(|e| e.into_inner());
        if self.map.contains_key(&key) {
            return false;
        }
        if self.map.len() >= self.cap {
            self.sweep();
            if self.map.len() >= self.cap {
                self.evict_oldest((self.cap / 16).max(1));
            }
        }
        let slot = Slot {
            value,
            last_seen_ms: AtomicU64::new(self.now_ms()),
        };
        self.map.insert(key, slot);
        self.high_water.fetch_max(self.map.len(), Ordering::Relaxed);
        true
    }

    pub fn remove(&self, key: &K) {
        self.map.remove(key);
    }

    /// Removes `key` if its value satisfies `pred` (e.g. it still points at the caller).
    pub fn remove_if<Q>(&self, key: &Q, pred: impl FnOnce(&V) -> bool)
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.remove_if(key, |_, s| pred(&s.value));
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
        self.sweep_where(|_| true)
    }

    /// Drops entries idle longer than the TTL and those `live` rejects; returns how many.
    pub fn sweep_where(&self, live: impl Fn(&V) -> bool) -> usize {
        let now = self.now_ms();
        let ttl = self.ttl.as_millis() as u64;
        let before = self.map.len();
        self.map.retain(|_, s| {
            now.saturating_sub(s.last_seen_ms.load(Ordering::Relaxed)) <= ttl && live(&s.value)
        });
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

/// The table the QUIC layer routes moved clients by. (Clients that have not moved are found
/// by address in their listener's session map, which lives exactly as long as each session.)
pub struct QuicTables<R> {
    pub by_cid: SessionTable<Vec<u8>, R>,
}

/// Table limits (env `QUIC_SESSION_TTL_SECS`, `QUIC_MAX_SESSIONS`).
#[derive(Debug, Clone, Copy)]
pub struct QuicLimits {
    pub cid_ttl: Duration,
    pub max_entries: usize,
}

impl Default for QuicLimits {
    fn default() -> Self {
        Self {
            cid_ttl: Duration::from_secs(300),
            max_entries: 100_000,
        }
    }
}

impl<R: Clone> QuicTables<R> {
    pub fn new(l: QuicLimits) -> Self {
        Self {
            by_cid: SessionTable::new(l.cid_ttl, l.max_entries),
        }
    }

    /// Publishes the table's size and peak (`vane_quic_cids`, `vane_quic_cids_peak`).
    pub fn publish(&self) {
        metrics::gauge!("vane_quic_cids").set(self.by_cid.len() as f64);
        metrics::gauge!("vane_quic_cids_peak").set(self.by_cid.high_water() as f64);
    }
}

/// Where the data plane finds the current tables.
pub type QuicTablesHandle<R> = Arc<QuicTables<R>>;

pub struct QuicArgs<R> {
    pub name: String,
    pub parent: String,
    pub table: ActorTable,
    pub tables: QuicTablesHandle<R>,
    pub sweep_every: Duration,
}

impl<R> Clone for QuicArgs<R> {
    fn clone(&self) -> Self {
        Self {
            name: self.name.clone(),
            parent: self.parent.clone(),
            table: self.table.clone(),
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

impl<R: Route> QuicActor<R> {
    pub fn child_spec(args: QuicArgs<R>) -> ChildSpec {
        ChildSpec::linked(
            args.name.clone(),
            || QuicActor::<R>(std::marker::PhantomData),
            args,
        )
    }
}

impl<R: Route> Actor for QuicActor<R> {
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
        // The table outlives this actor (only the sweep lives here): adopt it, dropping what
        // belongs to connections that ended while no sweep ran.
        let t = &args.tables;
        t.by_cid.sweep_where(R::is_live);
        t.publish();
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
                let t = &state.args.tables;
                t.by_cid.sweep_where(R::is_live);
                t.publish();
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

    /// With a clock moved by hand: when the cap is reached, the entries seen longest ago go
    /// first (in that order), a lookup counts as being seen, and every eviction is counted.
    #[test]
    fn eviction_takes_the_least_recently_seen_in_order() {
        let ms = Arc::new(AtomicU64::new(0));
        let t: SessionTable<u32, u32> =
            SessionTable::with_clock(Duration::from_secs(3600), 16, Clock::Manual(ms.clone()));
        for i in 0..16 {
            ms.store(i as u64 * 10, Ordering::Relaxed);
            t.insert(i, i);
        }
        // Key 0 is seen again last: it is now the most recent.
        ms.store(1_000, Ordering::Relaxed);
        assert_eq!(t.get(&0), Some(0));
        // One insert past the cap evicts cap/16 = 1 entry: the oldest is key 1.
        ms.store(1_010, Ordering::Relaxed);
        t.insert(100, 100);
        assert_eq!(t.evictions(), 1);
        assert_eq!(t.get(&1), None, "key 1 was seen longest ago");
        assert_eq!(t.get(&0), Some(0), "key 0 was refreshed by its lookup");
        ms.store(1_020, Ordering::Relaxed);
        t.insert(101, 101);
        assert_eq!(t.get(&2), None, "then key 2");
        assert_eq!(t.get(&3), Some(3));
        assert_eq!(t.evictions(), 2);
        assert_eq!(t.len(), 16);
    }

    #[test]
    fn insert_new_keeps_the_first_owner_and_remove_if_checks_it() {
        let t: SessionTable<u32, u32> = SessionTable::new(Duration::from_secs(60), 8);
        assert!(t.insert_new(1, 10));
        assert!(
            !t.insert_new(1, 20),
            "a repeated key does not take the entry over"
        );
        assert_eq!(t.get(&1), Some(10));
        t.remove_if(&1, |v| *v == 20);
        assert_eq!(t.get(&1), Some(10), "not removed for another owner");
        t.remove_if(&1, |v| *v == 10);
        assert_eq!(t.get(&1), None);
    }

    #[test]
    fn sweep_drops_routes_to_ended_connections() {
        let t: SessionTable<u32, std::sync::Weak<u8>> =
            SessionTable::new(Duration::from_secs(60), 8);
        let live = Arc::new(1u8);
        let ended = Arc::new(2u8);
        t.insert(1, Arc::downgrade(&live));
        t.insert(2, Arc::downgrade(&ended));
        drop(ended);
        assert_eq!(t.sweep_where(Route::is_live), 1);
        assert!(t.get(&1).is_some() && t.get(&2).is_none());
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
