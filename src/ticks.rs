//! Coarse shared time. A connection that must notice a long silence (the idle watchdog) or a
//! flow that must not outlive its deadline waits for the next *tick* of a shared clock instead
//! of owning a timer: nothing allocated per connection, nothing put into and taken out of
//! tokio's timer wheel per connection or request. One thread per period ticks, and a tick
//! wakes every waiter, which counts it. The price is precision: a wait counted in ticks ends
//! up to one period later than a timer would have.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::futures::Notified;
use tokio::sync::Notify;

/// Waiter lists, one per thread in turn: a waiter goes into its thread's list (under that
/// list's lock), so threads that wait often do not share one lock.
#[derive(Debug, Default)]
pub struct Lists([Notify; LISTS]);

const LISTS: usize = 8;

impl Lists {
    /// A wait on this thread's list: it counts [`Lists::wake_all`] calls from the moment it is
    /// made, polled or not.
    pub fn notified(&self) -> Notified<'_> {
        self.0[thread_list()].notified()
    }

    /// Wakes every waiter of every list.
    pub fn wake_all(&self) {
        for n in &self.0 {
            n.notify_waiters();
        }
    }
}

/// This thread's list, given out in turn as threads first ask.
fn thread_list() -> usize {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    thread_local! {
        static LIST: usize = NEXT.fetch_add(1, Ordering::Relaxed) % LISTS;
    }
    LIST.with(|l| *l)
}

/// A clock that ticks every `period` for the life of the process.
#[derive(Debug)]
pub struct Ticks {
    period: Duration,
    /// Raised before a tick's wake and again after it: odd while a tick is being delivered,
    /// so a [`Tick`] can tell, with one load, that none has begun since it was made.
    count: AtomicU64,
    lists: Lists,
    /// One delivery at a time (the clock's thread and [`Ticks::tick`] callers), which keeps
    /// `count`'s parity meaning "under way".
    delivering: Mutex<()>,
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
            count: AtomicU64::new(0),
            lists: Lists::default(),
            delivering: Mutex::new(()),
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

    /// Ticks that make sure at least `d` has passed once counted from a wait's first tick:
    /// `ceil(d / period)`, at least 1.
    pub fn covering(&self, d: Duration) -> u32 {
        let n = d.as_nanos().div_ceil(self.period.as_nanos().max(1)).max(1);
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// Delivers a tick now: every waiter wakes and counts it.
    pub fn tick(&self) {
        let _one = self.delivering.lock().unwrap_or_else(|e| e.into_inner());
        self.count.fetch_add(1, Ordering::SeqCst);
        self.lists.wake_all();
        self.count.fetch_add(1, Ordering::SeqCst);
    }

    /// The next tick (one that begins after this call).
    pub fn next(&'static self) -> Tick {
        // Read before the wait is made: a tick under way or begun after this read is never
        // skipped (see `Tick::poll`).
        let seen = self.count.load(Ordering::SeqCst) as u32;
        Tick {
            ticks: self,
            notified: self.lists.notified(),
            seen,
            enrolled: false,
        }
    }
}

pin_project_lite::pin_project! {
    /// Resolves at least `d` after [`Ticks::after`] made it, and at most a period more.
    pub struct Deadline {
        #[pin]
        tick: Tick,
        // Ticks still to come.
        left: u32,
    }
}

impl Ticks {
    /// A deadline `d` from now on this clock: it ends at the tick that makes sure `d` has
    /// passed (the first tick may come at once, so it is not counted).
    pub fn after(&'static self, d: Duration) -> Deadline {
        Deadline {
            tick: self.next(),
            left: self.covering(d).saturating_add(1),
        }
    }
}

impl Future for Deadline {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        loop {
            std::task::ready!(this.tick.as_mut().poll(cx));
            *this.left -= 1;
            if *this.left == 0 {
                return Poll::Ready(());
            }
            let ticks = this.tick.ticks();
            this.tick.set(ticks.next());
        }
    }
}

pin_project_lite::pin_project! {
    /// The next tick of a [`Ticks`]. Polled by every wake of its task, so a poll before the
    /// tick is one atomic load, not the lock of a waiter list.
    pub struct Tick {
        ticks: &'static Ticks,
        #[pin]
        notified: Notified<'static>,
        // The clock's count when this wait was made (its low half: a wait skips only while
        // the count equals it, and the count cannot move 2^32 times between two polls when
        // every tick wakes the waiter).
        seen: u32,
        // Polled once: the waker is in a list.
        enrolled: bool,
    }
}

impl Tick {
    /// The clock this wait is on.
    pub fn ticks(&self) -> &'static Ticks {
        self.ticks
    }
}

impl Future for Tick {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        // Skipped only when no tick was under way when the wait was made and none has begun
        // since: the waker is in a list, and the next tick's wake brings a new poll that sees
        // the count moved. (A task's waker stays valid across its polls.)
        if *this.enrolled
            && this.seen.is_multiple_of(2)
            && this.ticks.count.load(Ordering::SeqCst) as u32 == *this.seen
        {
            return Poll::Pending;
        }
        let r = this.notified.poll(cx);
        *this.enrolled = true;
        r
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
        let (waiting, waits) = std::sync::mpsc::channel();
        let threads: Vec<_> = (0..3)
            .map(|_| {
                let waiting = waiting.clone();
                std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_time()
                        .build()
                        .expect("runtime");
                    rt.block_on(async {
                        let tick = ticks.next();
                        tokio::pin!(tick);
                        // Polled several times before the tick: each must stay pending.
                        for _ in 0..3 {
                            let early =
                                tokio::time::timeout(Duration::from_millis(10), tick.as_mut());
                            if early.await.is_ok() {
                                return false;
                            }
                        }
                        waiting.send(()).expect("send");
                        tokio::time::timeout(Duration::from_secs(5), tick)
                            .await
                            .is_ok()
                    })
                })
            })
            .collect();
        for _ in 0..3 {
            waits.recv_timeout(Duration::from_secs(5)).expect("waiting");
        }
        ticks.tick();
        for t in threads {
            assert!(
                t.join().expect("thread"),
                "a waiter was not woken by the tick"
            );
        }

        let fast = Ticks::every(Duration::from_millis(20));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        let took = rt.block_on(async {
            let start = Instant::now();
            for _ in 0..5 {
                tokio::time::timeout(Duration::from_secs(5), fast.next())
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
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
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

    #[test]
    fn covering_rounds_up() {
        let ticks = Ticks::every(Duration::from_secs(3601));
        assert_eq!(ticks.covering(Duration::from_secs(3601)), 1);
        assert_eq!(ticks.covering(Duration::from_secs(3602)), 2);
        assert_eq!(ticks.covering(Duration::ZERO), 1);
    }
}
