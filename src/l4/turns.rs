//! Data-plane threads that share a core take turns on it.
//!
//! Unbound, the scheduler at times runs two shards on one core while the other cores are busy
//! too (on a 2-core machine with the load generator and the upstream beside vane, about a tenth
//! of the time). Under load a shard never sleeps: its wait for events returns at once. So the
//! shard that waits for the core is not woken, nothing preempts the one that runs, and the
//! waiting one gets the core back at the next scheduler tick: 4 ms on a 250 Hz kernel. That
//! was 1 to 4 % of keep-alive requests taking 4 ms instead of 1, in bursts that held all of one
//! shard's connections at once (bench/README.md, eighteenth stop).
//!
//! So each shard says, every time it runs out of ready tasks and again when its wait for
//! events ends, on which CPU it is and when. A shard that has used a turn of CPU time since it
//! last slept looks at the others: when one was last seen on this same CPU, not waiting for
//! events, and has not been seen for half a turn, it waits for this core, and this shard
//! yields it (`sched_yield`). It yields to nothing else: a shard sharing its core with other
//! busy processes keeps the slices the kernel gives it (yielding to sixteen handshaking TLS
//! clients cost TLS passthrough 4 % of its connection rate).
//!
//! Turns count CPU time, not wall time: a shard that has just waited for the core is not sent
//! back to wait at once.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A wait for events that lasted this long slept (one that found events ready returns within
/// microseconds): the thread gave up its core, and its next turn starts afresh.
const SLEPT: Duration = Duration::from_micros(100);

/// The shards' turns: how long one is, and where each shard was last seen.
pub struct Turns {
    turn: Duration,
    epoch: Instant,
    seen: Box<[Seen]>,
}

/// Where and when one shard was last seen, in one word on a cache line of its own (each shard
/// writes its own at every wait for events): microseconds since `Turns::epoch` in the high 47
/// bits, the CPU in the next 16, and the lowest bit set while the shard waits for events.
#[repr(align(64))]
struct Seen(AtomicU64);

const CPU_BITS: u32 = 16;
/// Stands for a CPU the kernel did not tell (and for a shard not seen yet).
const NO_CPU: u64 = (1 << CPU_BITS) - 1;
/// The microseconds kept: they wrap after 4.4 years, and ages are taken modulo this.
const MICROS: u64 = (1 << (64 - CPU_BITS - 1)) - 1;

impl Seen {
    fn pack(micros: u64, cpu: Option<usize>, waiting: bool) -> u64 {
        let cpu = cpu.map_or(NO_CPU, |c| (c as u64).min(NO_CPU));
        (micros & MICROS) << (CPU_BITS + 1) | cpu << 1 | u64::from(waiting)
    }

    /// The CPU and the waiting bit of `word`, without its time.
    fn place(word: u64) -> u64 {
        word & ((NO_CPU << 1) | 1)
    }

    /// Microseconds from when `word` was written to `now` (both since `Turns::epoch`).
    fn age(now: u64, word: u64) -> u64 {
        now.wrapping_sub(word >> (CPU_BITS + 1)) & MICROS
    }
}

/// Yields made by every shard since the process started.
static YIELDS: AtomicU64 = AtomicU64::new(0);

/// How many times a shard has yielded its core to another (for tests and diagnosis).
pub fn yields() -> u64 {
    YIELDS.load(Ordering::Relaxed)
}

/// This thread's turn: when it started, in wall and CPU time, and when the thread last began
/// to wait for events.
#[derive(Clone, Copy)]
struct Turn {
    started: Option<(Instant, Duration)>,
    parked: Option<Instant>,
}

thread_local! {
    static TURN: Cell<Turn> = const { Cell::new(Turn { started: None, parked: None }) };
}

impl Turns {
    /// Turns of `turn` CPU time among `shards` shards.
    pub fn new(turn: Duration, shards: usize) -> Arc<Turns> {
        Arc::new(Turns {
            turn,
            epoch: Instant::now(),
            // Until a shard first reports, it counts as waiting for events.
            seen: (0..shards)
                .map(|_| Seen(AtomicU64::new(Seen::pack(0, None, true))))
                .collect(),
        })
    }

    /// Run by shard `me` when its runtime has no ready task, before it waits for events.
    ///
    /// The wall clock (read without a system call) is checked first, so CPU time is read at
    /// most once per turn of wall time.
    pub fn parking(&self, me: usize) {
        let now = Instant::now();
        let cpu = vane_sys::cpu::current();
        self.show(me, now, cpu, true);
        let mut t = TURN.get();
        match t.started {
            None => t.started = Some((now, cpu_time())),
            Some((wall, _)) if now.duration_since(wall) < self.turn => {}
            Some((_, cpu_then)) => {
                let used_now = cpu_time();
                let used = used_now.saturating_sub(cpu_then);
                if used < self.turn {
                    // Off the core for part of it: check again when the turn could be up.
                    t.started = Some((now.checked_sub(used).unwrap_or(now), cpu_then));
                } else {
                    if cpu.is_some_and(|c| self.another_waits(me, c, now)) {
                        // Not waiting for events but for the core, as the other was.
                        self.show(me, now, cpu, false);
                        std::thread::yield_now();
                        YIELDS.fetch_add(1, Ordering::Relaxed);
                    }
                    t.started = Some((Instant::now(), used_now));
                }
            }
        }
        t.parked = Some(now);
        TURN.set(t);
    }

    /// Run by shard `me` when its runtime's wait for events ends: a wait that slept ends the
    /// turn.
    pub fn unparked(&self, me: usize) {
        let now = Instant::now();
        self.show(me, now, vane_sys::cpu::current(), false);
        let mut t = TURN.get();
        if t.parked.is_some_and(|at| now.duration_since(at) >= SLEPT) {
            t.started = None;
            TURN.set(t);
        }
    }

    fn show(&self, me: usize, now: Instant, cpu: Option<usize>, waiting: bool) {
        if let Some(seen) = self.seen.get(me) {
            let word = Seen::pack(self.micros(now), cpu, waiting);
            seen.0.store(word, Ordering::Relaxed);
        }
    }

    /// Whether a shard other than `me` is runnable on `cpu` but has not run for half a turn.
    fn another_waits(&self, me: usize, cpu: usize, now: Instant) -> bool {
        let here = Seen::pack(0, Some(cpu), false);
        let now = self.micros(now);
        let stale = u64::try_from(self.turn.as_micros() / 2).unwrap_or(u64::MAX);
        self.seen.iter().enumerate().any(|(i, s)| {
            let word = s.0.load(Ordering::Relaxed);
            i != me && Seen::place(word) == here && Seen::age(now, word) >= stale
        })
    }

    fn micros(&self, at: Instant) -> u64 {
        u64::try_from(at.duration_since(self.epoch).as_micros()).unwrap_or(u64::MAX)
    }
}

/// CPU time this thread has used.
fn cpu_time() -> Duration {
    vane_sys::clock::thread_cpu_time()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_shard_waits_only_when_runnable_on_this_cpu_and_stale() {
        let turns = Turns::new(Duration::from_millis(1), 3);
        let t0 = Instant::now() + Duration::from_millis(5);
        let later = |us| t0 + Duration::from_micros(us);
        // Not seen yet: counts as waiting for events.
        assert!(!turns.another_waits(0, 2, later(5_000)));
        turns.show(1, t0, Some(2), false);
        assert!(turns.another_waits(0, 2, later(600)));
        assert!(!turns.another_waits(0, 2, later(400)), "seen 0.4 ms ago");
        assert!(!turns.another_waits(0, 3, later(600)), "on another CPU");
        assert!(!turns.another_waits(1, 2, later(600)), "itself");
        turns.show(1, t0, Some(2), true);
        assert!(!turns.another_waits(0, 2, later(600)), "waiting for events");
        turns.show(1, t0, None, false);
        assert!(!turns.another_waits(0, 2, later(600)), "CPU unknown");
    }

    #[test]
    fn ages_survive_the_microseconds_wrapping() {
        let word = Seen::pack(MICROS + 3, Some(7), false);
        assert_eq!(Seen::age(MICROS + 10, word), 7);
        assert_eq!(
            Seen::age(MICROS + 1 + 5, Seen::pack(MICROS + 1 + 2, Some(7), true)),
            3
        );
        assert_eq!(Seen::place(word), 7 << 1);
    }
}
