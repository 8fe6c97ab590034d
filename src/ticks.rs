//! Coarse shared time. A connection that must notice a long silence (the idle watchdog) or a
//! flow that must not outlive its deadline waits for the next *tick* of a shared clock instead
//! of owning a timer: nothing allocated per connection, nothing put into and taken out of
//! tokio's timer wheel per connection or request. One thread per period ticks, and a tick
//! wakes every waiter, which counts it. The price is precision: a wait counted in ticks ends
//! up to one period later than a timer would have.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// Waiters are kept in lists, one per thread in turn: a waiter joins and leaves its thread's
/// list (under that list's lock), so threads that wait often do not share one lock.
const LISTS: usize = 8;

/// This thread's list, given out in turn as threads first ask.
fn thread_list() -> usize {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    thread_local! {
        static LIST: usize = NEXT.fetch_add(1, Ordering::Relaxed) % LISTS;
    }
    LIST.with(|l| *l)
}

/// One list: the wakers of its waiters by slot, and the ticks delivered to it.
#[derive(Debug, Default)]
struct Roster {
    wakers: Vec<Option<Waker>>,
    free: Vec<u32>,
    ticks: u64,
}

/// A clock that ticks every `period` for the life of the process.
#[derive(Debug)]
pub struct Ticks {
    period: Duration,
    rosters: [Mutex<Roster>; LISTS],
    /// Each roster's `ticks`, readable without its lock: a waiter's poll between ticks is
    /// this one load.
    counts: [AtomicU64; LISTS],
}

impl Ticks {
    /// The process's clock of `period` (at least 10 ms), started at the first ask: one thread
    /// per distinct period, never stopped.
    ///
    /// # Panics
    /// When the operating system cannot start the clock's thread (asked at start-up only).
    pub fn every(period: Duration) -> &'static Ticks {
        static ALL: Mutex<Vec<&'static Ticks>> = Mutex::new(Vec::new());
        let period = period.max(Duration::from_millis(10));
        let mut all = ALL.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = all.iter().find(|t| t.period == period) {
            return t;
        }
        let ticks: &'static Ticks = Box::leak(Box::new(Ticks {
            period,
            rosters: Default::default(),
            counts: Default::default(),
        }));
        std::thread::Builder::new()
            .name(format!("vane-ticks-{}ms", period.as_millis()))
            .spawn(move || loop {
                std::thread::sleep(period);
                ticks.tick();
            })
            .unwrap_or_else(|e| panic!("cannot start the clock thread: {e}"));
        all.push(ticks);
        ticks
    }

    /// The clock for a wait of `d` that looks `looks` times per `d` (at most every 50 ms),
    /// so it ends at most `d / looks` late.
    pub fn for_wait(d: Duration, looks: u32) -> &'static Ticks {
        Self::every((d / looks.max(1)).max(Duration::from_millis(50)))
    }

    pub fn period(&self) -> Duration {
        self.period
    }

    /// Ticks so far: a coarse clock read with one load instead of a `clock_gettime`.
    pub fn count(&self) -> u64 {
        self.counts[0].load(Ordering::Acquire)
    }

    /// The time this clock has counted since it started: behind the real time by up to a
    /// period (and by its thread's lateness), read with one load.
    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos(
            u64::try_from(self.period.as_nanos())
                .unwrap_or(u64::MAX)
                .saturating_mul(self.count()),
        )
    }

    /// Ticks that make sure at least `d` has passed once counted from a wait's first tick:
    /// `ceil(d / period)`, at least 1.
    pub fn covering(&self, d: Duration) -> u32 {
        let n = d.as_nanos().div_ceil(self.period.as_nanos().max(1)).max(1);
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// Delivers a tick now: every waiter wakes and counts it.
    pub fn tick(&self) {
        for (roster, count) in self.rosters.iter().zip(&self.counts) {
            let mut r = lock(roster);
            r.ticks += 1;
            // Stored before the wakes, under the lock a waiter joins under: a waiter that
            // joined before sees it moved when woken; one that joins after counts from it.
            count.store(r.ticks, Ordering::Release);
            for w in r.wakers.iter().flatten() {
                w.wake_by_ref();
            }
        }
    }

    /// A waiter for this clock's ticks; it joins a list at its first poll.
    pub fn waiter(&'static self) -> Waiter {
        Waiter {
            ticks: self,
            slot: NOT_JOINED,
            list: 0,
            seen: 0,
        }
    }

    /// Resolves at least `d` after this call, and at most a period more.
    pub fn after(&'static self, d: Duration) -> Deadline {
        Deadline {
            waiter: self.waiter(),
            // The first tick may come at once: it is not counted.
            left: self.covering(d).saturating_add(1),
        }
    }

    /// `work`'s output, or [`Late`] once `d` has passed (at most a period more): the timeout
    /// of a wait that nearly always ends first. A tokio timer would read the clock, enter the
    /// timer wheel at its first pending poll, and wake the runtime's driver (an eventfd write
    /// and one more `epoll_wait`) whenever it is due before the driver's next timer.
    pub fn within<F: Future>(&'static self, d: Duration, work: F) -> Within<F> {
        Within {
            work,
            late: self.after(d),
        }
    }
}

pin_project_lite::pin_project! {
    /// [`Ticks::within`]: the work and its deadline side by side, no larger than both.
    #[derive(Debug)]
    pub struct Within<F> {
        #[pin]
        work: F,
        late: Deadline,
    }
}

impl<F: Future> Future for Within<F> {
    type Output = Result<F::Output, Late>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        // The work first: an answer that comes with the deadline's tick still counts.
        if let Poll::Ready(r) = this.work.poll(cx) {
            return Poll::Ready(Ok(r));
        }
        Pin::new(this.late).poll(cx).map(|()| Err(Late))
    }
}

/// A timeout and the clock made for it ([`Ticks::for_wait`]): the two always go together, so
/// a wait names one value instead of a clock and a duration that must match.
#[derive(Debug, Clone, Copy)]
pub struct Wait {
    ticks: &'static Ticks,
    limit: Duration,
}

impl Wait {
    /// `limit`, counted on a clock that looks `looks` times per `limit`.
    pub fn new(limit: Duration, looks: u32) -> Self {
        Self {
            ticks: Ticks::for_wait(limit, looks),
            limit,
        }
    }

    pub fn limit(&self) -> Duration {
        self.limit
    }

    /// [`Ticks::within`] this wait's limit.
    pub fn within<F: Future>(&self, work: F) -> Within<F> {
        self.ticks.within(self.limit, work)
    }
}

/// A wait outlived its deadline ([`Ticks::within`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Late;

fn lock(roster: &Mutex<Roster>) -> MutexGuard<'_, Roster> {
    roster.lock().unwrap_or_else(|e| e.into_inner())
}

const NOT_JOINED: u32 = u32::MAX;

/// Slots a list keeps when its last waiter leaves (16 bytes each).
const KEPT_SLOTS: usize = 32;

/// One waiter's place in a clock's list: 16 bytes and no pinning, where a `Notify` waiter
/// takes 64 and must stay put; its waker stays in the list until it is dropped, so a waiter
/// woken by a tick does not join again. It must be polled by one task (whose waker it keeps).
#[derive(Debug)]
pub struct Waiter {
    ticks: &'static Ticks,
    slot: u32,
    list: u32,
    /// The list's tick count when last looked at.
    seen: u64,
}

impl Waiter {
    /// Ready with the number of ticks since the last ready poll (or since it joined).
    pub fn poll_ticks(&mut self, cx: &mut Context<'_>) -> Poll<u32> {
        let t = self.ticks;
        if self.slot == NOT_JOINED {
            self.list = thread_list() as u32;
            let mut r = lock(&t.rosters[self.list as usize]);
            self.seen = r.ticks;
            let waker = Some(cx.waker().clone());
            self.slot = match r.free.pop() {
                Some(slot) => {
                    r.wakers[slot as usize] = waker;
                    slot
                }
                None => {
                    r.wakers.push(waker);
                    u32::try_from(r.wakers.len() - 1).unwrap_or(NOT_JOINED)
                }
            };
            return Poll::Pending;
        }
        let now = t.counts[self.list as usize].load(Ordering::Acquire);
        if now == self.seen {
            return Poll::Pending;
        }
        let ticks = u32::try_from(now - self.seen).unwrap_or(u32::MAX);
        self.seen = now;
        Poll::Ready(ticks)
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        if self.slot == NOT_JOINED {
            return;
        }
        let mut r = lock(&self.ticks.rosters[self.list as usize]);
        if let Some(w) = r.wakers.get_mut(self.slot as usize) {
            *w = None;
            r.free.push(self.slot);
        }
        if r.free.len() == r.wakers.len() {
            // The last waiter left: give back the room a crowd of them took, but for a few
            // slots, so that one waiter coming and going (a request at a time) allocates
            // nothing.
            r.wakers.clear();
            r.free.clear();
            r.wakers.shrink_to(KEPT_SLOTS);
            r.free.shrink_to(KEPT_SLOTS);
        }
    }
}

/// The next tick: resolves once one has come since its first poll.
impl Future for Waiter {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.poll_ticks(cx).map(|_| ())
    }
}

/// Resolves at least `d` after [`Ticks::after`] made it, and at most a period more.
#[derive(Debug)]
pub struct Deadline {
    waiter: Waiter,
    /// Ticks still to come.
    left: u32,
}

impl Future for Deadline {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        while let Poll::Ready(n) = this.waiter.poll_ticks(cx) {
            this.left = this.left.saturating_sub(n);
            if this.left == 0 {
                return Poll::Ready(());
            }
        }
        Poll::Pending
    }
}

/// What the tests of waits on a clock share.
#[cfg(test)]
pub mod testing {
    use std::future::Future;
    use std::time::Duration;

    /// A runtime of one thread, with timers (for the tests' own timeouts).
    pub fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime")
    }

    /// Whether a wait `make` gives, on each of three threads (so in three lists), stays
    /// pending through three polls and then ends within 2 s of `wake`.
    pub fn woken_on_three_threads<M, F>(make: M, wake: impl FnOnce()) -> bool
    where
        M: Fn() -> F + Clone + Send + 'static,
        F: Future,
    {
        let (waiting, waits) = std::sync::mpsc::channel();
        let threads: Vec<_> = (0..3)
            .map(|_| {
                let (make, waiting) = (make.clone(), waiting.clone());
                std::thread::spawn(move || {
                    runtime().block_on(async {
                        let wait = make();
                        tokio::pin!(wait);
                        for _ in 0..3 {
                            let early =
                                tokio::time::timeout(Duration::from_millis(10), wait.as_mut());
                            if early.await.is_ok() {
                                return false;
                            }
                        }
                        waiting.send(()).expect("send");
                        // Within 2 s, not at the 5 s timeout: its own poll of a wait that
                        // reads a flag would end it without any wake.
                        let start = std::time::Instant::now();
                        let ended = tokio::time::timeout(Duration::from_secs(5), wait).await;
                        ended.is_ok() && start.elapsed() < Duration::from_secs(2)
                    })
                })
            })
            .collect();
        for _ in 0..3 {
            waits.recv_timeout(Duration::from_secs(5)).expect("waiting");
        }
        wake();
        threads.into_iter().all(|t| t.join().expect("thread"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// A wait ends at the next tick, not before; a tick delivered by hand wakes waiters on
    /// several threads; the count of a clock's ticks follows its period.
    #[test]
    fn a_tick_wakes_waiters_on_every_thread_and_only_after_it_comes() {
        // A period long enough that the clock's own thread does not tick during the test.
        let ticks = Ticks::every(Duration::from_secs(3600));
        assert!(std::ptr::eq(ticks, Ticks::every(Duration::from_secs(3600))));
        assert!(
            testing::woken_on_three_threads(|| ticks.waiter(), || ticks.tick()),
            "a waiter ended before the tick or was not woken by it"
        );
        let before = ticks.count();
        ticks.tick();
        ticks.tick();
        assert_eq!(ticks.count(), before + 2, "the count follows the ticks");

        let fast = Ticks::every(Duration::from_millis(20));
        let took = testing::runtime().block_on(async {
            let start = Instant::now();
            for _ in 0..5 {
                tokio::time::timeout(Duration::from_secs(5), fast.waiter())
                    .await
                    .expect("a tick of the 20 ms clock");
            }
            start.elapsed()
        });
        assert!(
            took >= Duration::from_millis(80) && took < Duration::from_secs(2),
            "five ticks of 20 ms took {took:?}"
        );
    }

    /// A deadline never ends before its time, and at most a period after it.
    #[test]
    fn a_deadline_ends_after_its_time_and_within_a_period_more() {
        let ticks = Ticks::every(Duration::from_millis(40));
        let rt = testing::runtime();
        for wait in [Duration::from_millis(100), Duration::from_millis(130)] {
            let took = rt.block_on(async {
                let start = Instant::now();
                tokio::time::timeout(Duration::from_secs(5), ticks.after(wait))
                    .await
                    .expect("the deadline ended");
                start.elapsed()
            });
            assert!(took >= wait, "a deadline of {wait:?} ended after {took:?}");
            assert!(
                took < wait + Duration::from_millis(40) + Duration::from_millis(300),
                "a deadline of {wait:?} ended after {took:?}"
            );
        }
    }

    /// Waiters that come and go reuse their list's slots: the list holds as many as wait at
    /// once, not one per waiter ever made.
    #[test]
    fn waiters_that_leave_free_their_slots() {
        let ticks = Ticks::every(Duration::from_secs(3602));
        let rt = testing::runtime();
        rt.block_on(async {
            for _ in 0..1000 {
                let mut w = ticks.waiter();
                let joined = std::future::poll_fn(|cx| Poll::Ready(w.poll_ticks(cx))).await;
                assert!(joined.is_pending());
            }
        });
        let held = |ticks: &Ticks| -> (usize, usize) {
            let r = ticks.rosters.iter().map(|r| lock(r));
            r.fold((0, 0), |(n, c), r| {
                (n + r.wakers.len(), c + r.wakers.capacity())
            })
        };
        let (n, room) = held(ticks);
        assert_eq!(n, 0, "slots held after 1,000 waiters came and went");
        assert!(
            room > 0 && room <= LISTS * KEPT_SLOTS,
            "room for {room} after one waiter at a time: kept, so that none allocates"
        );
        // A crowd that waits at once, then leaves: its room goes with it.
        rt.block_on(async {
            let mut crowd: Vec<_> = (0..1000).map(|_| ticks.waiter()).collect();
            for w in &mut crowd {
                let joined = std::future::poll_fn(|cx| Poll::Ready(w.poll_ticks(cx))).await;
                assert!(joined.is_pending());
            }
            assert_eq!(held(ticks).0, 1000);
            crowd.truncate(1);
            assert_eq!(
                held(ticks).0,
                1000,
                "a waiter left keeps the slots in place"
            );
        });
        let (n, room) = held(ticks);
        assert_eq!(n, 0);
        assert!(
            room <= LISTS * KEPT_SLOTS,
            "the room of 1,000 waiters after they left: {room}"
        );
    }

    #[test]
    fn covering_rounds_up() {
        let ticks = Ticks::every(Duration::from_secs(3601));
        assert_eq!(ticks.covering(Duration::from_secs(3601)), 1);
        assert_eq!(ticks.covering(Duration::from_secs(3602)), 2);
        assert_eq!(ticks.covering(Duration::ZERO), 1);
    }

    /// The counted time is the ticks delivered times the period: never ahead of the real
    /// time, and behind it by about a period.
    #[test]
    fn elapsed_counts_periods() {
        let ticks = Ticks::every(Duration::from_secs(3603));
        assert_eq!(ticks.elapsed(), Duration::ZERO);
        ticks.tick();
        ticks.tick();
        assert_eq!(ticks.elapsed(), Duration::from_secs(2 * 3603));

        let period = Duration::from_millis(20);
        let ticks = Ticks::every(period);
        let started = std::time::Instant::now();
        let from = ticks.elapsed();
        std::thread::sleep(Duration::from_millis(200));
        let counted = ticks.elapsed() - from;
        let real = started.elapsed();
        assert!(counted <= real + period, "{counted:?} counted in {real:?}");
        // Loose: the clock's thread may be held up on a loaded machine.
        assert!(
            counted * 2 + period >= real,
            "{counted:?} counted in {real:?}"
        );
    }
}
