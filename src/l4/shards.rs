//! The TCP data plane's threads: one single-threaded runtime per core, each accepting from the
//! listener sockets and running the connections it accepted to their end.
//!
//! Connections then never move between threads: no work stealing, no cross-thread wake-ups,
//! and a connection's sockets, timers and task stay in one core's caches. On the short-
//! connection benchmark this is what two work-stealing workers cost against HAProxy (see
//! bench/README.md). The shards live as long as the process, so a listener actor that restarts
//! (and aborts its accept loops) leaves the connections it accepted running.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::task::JoinHandle;

/// How the shard threads run.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tuning {
    /// Each of two or more shards bound to a CPU of its own ([`cpus_for`]).
    pub pin: bool,
    /// A shard that has used this much CPU time since it last slept yields its core to
    /// another shard waiting for it (`super::turns`).
    pub turn: Option<Duration>,
    /// The scheduler slice each shard asks for (`vane_sys::sched`): a shard woken by network
    /// events then runs ahead of batch work on its core instead of waiting out its slice.
    pub slice: Option<Duration>,
}

pub struct Shards {
    handles: Vec<Handle>,
    /// Connections running on each shard.
    loads: Arc<[Load]>,
}

/// One shard's connection count, on a cache line of its own (two shards' counters side by
/// side would bounce one line between the cores).
#[repr(align(64))]
#[derive(Default)]
struct Load(AtomicUsize);

/// A connection counted on its shard until this is dropped (when the connection ends).
pub struct Placed {
    loads: Arc<[Load]>,
    shard: usize,
}

impl Placed {
    /// The shard the connection runs on.
    pub fn shard(&self) -> usize {
        self.shard
    }
}

impl Drop for Placed {
    fn drop(&mut self) {
        self.loads[self.shard].0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Run by a shard thread each time it goes idle (set once by the binary, before the shards
/// start: it returns the allocator's free memory to the OS).
static ON_PARK: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Sets what a shard thread runs when it goes idle (the first call wins).
pub fn on_park(hook: fn()) {
    let _ = ON_PARK.set(hook);
}

impl Shards {
    /// Starts `n` shard threads, run as `how` says; with `n == 0` everything runs on the
    /// shared runtime.
    pub fn start(n: usize, how: Tuning) -> io::Result<Shards> {
        let cpus = if how.pin { cpus_for(n) } else { None };
        let mut handles = Vec::with_capacity(n);
        let turns = how.turn.map(|t| super::turns::Turns::new(t, n));
        // A shard that fails to start leaves the ones before it parked forever; harmless, as
        // start-up then falls back to the shared runtime.
        for i in 0..n {
            let cpu = cpus.as_ref().and_then(|c| c.get(i).copied());
            let turns = turns.clone();
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::Builder::new()
                .name(format!("vane-shard-{i}"))
                .spawn(move || {
                    if let Some(cpu) = cpu {
                        if let Err(e) = vane_sys::cpu::pin_this_thread(cpu) {
                            tracing::warn!("data-plane thread {i} stays unbound (CPU {cpu}): {e}");
                        }
                    }
                    if let Some(slice) = how.slice {
                        if let Err(e) = vane_sys::sched::request_slice(slice) {
                            tracing::debug!("data-plane thread {i} keeps the default slice: {e}");
                        }
                    }
                    let mut b = tokio::runtime::Builder::new_current_thread();
                    b.enable_all();
                    let hook = ON_PARK.get().copied();
                    if let Some(t) = turns.clone() {
                        b.on_thread_unpark(move || t.unparked(i));
                    }
                    b.on_thread_park(move || {
                        if let Some(t) = &turns {
                            t.parking(i);
                        }
                        if let Some(hook) = hook {
                            hook();
                        }
                    });
                    let rt = b.build();
                    match rt {
                        Ok(rt) => {
                            let _ = tx.send(Ok(rt.handle().clone()));
                            rt.block_on(std::future::pending::<()>());
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                        }
                    }
                })?;
            let handle = rx
                .recv()
                .map_err(|_| io::Error::other("shard thread ended before starting"))??;
            handles.push(handle);
        }
        Ok(Shards::of(handles))
    }

    fn of(handles: Vec<Handle>) -> Shards {
        let loads = (0..handles.len().max(1)).map(|_| Load::default()).collect();
        Shards { handles, loads }
    }

    /// No shards: everything runs on the shared runtime.
    pub fn none() -> Shards {
        Shards::of(Vec::new())
    }

    /// Where a connection accepted on shard `here` should run, counted there: `here`, unless
    /// another shard runs fewer connections by more than one. Every shard's accept loop
    /// watches the same sockets and whichever wakes first takes a connection, so a burst of
    /// clients can land mostly on one shard, and connections never move afterwards: with
    /// keep-alive clients one core then did most of the work while the other idled.
    pub fn place(&self, here: usize) -> Placed {
        let load = |i: usize| self.loads[i].0.load(Ordering::Relaxed);
        let here = here.min(self.loads.len() - 1);
        let least = (0..self.loads.len())
            .min_by_key(|&i| load(i))
            .unwrap_or(here);
        let shard = if load(here) > load(least) + 1 {
            least
        } else {
            here
        };
        self.loads[shard].0.fetch_add(1, Ordering::Relaxed);
        Placed {
            loads: self.loads.clone(),
            shard,
        }
    }

    /// Runs `task` on shard `shard` (on the current runtime when there are no shards).
    pub fn spawn_on<F>(&self, shard: usize, task: F) -> JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        match self.handles.get(shard) {
            Some(h) => h.spawn(task),
            None => tokio::spawn(task),
        }
    }

    /// How many shards there are (0: the shared runtime serves).
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// Runs one task per shard, `make(i)` building shard `i`'s; on the shared runtime when
    /// there are no shards.
    pub fn spawn_each<F, Fut>(&self, mut make: F) -> Vec<JoinHandle<()>>
    where
        F: FnMut(usize) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        if self.handles.is_empty() {
            return vec![tokio::spawn(make(0))];
        }
        self.handles
            .iter()
            .enumerate()
            .map(|(i, h)| h.spawn(make(i)))
            .collect()
    }
}

/// The CPUs `n` shards are bound to, one each: those this process may run on, when there are
/// two or more and one shard for each (the default count). With fewer shards than CPUs the
/// others are free for the scheduler to spread them over, and the operator who chose that
/// number may share the machine: they stay unbound. Unbound, the scheduler lets both shards of
/// a 2-core machine share one core about a tenth of the time under wrk (with the load
/// generator and the upstream on the same cores); turns (`super::turns`) keep each one's wait
/// for the other short. Bound, a shard cannot leave a core that other busy processes want:
/// TLS passthrough's connection rate with 16 handshaking clients on the same two cores fell by
/// 6 %, hence an option, off by default (bench/history-2026-12-04.md, thirteenth stop).
fn cpus_for(n: usize) -> Option<Vec<usize>> {
    if n < 2 {
        return None;
    }
    let cpus = vane_sys::cpu::allowed().ok()?;
    (cpus.len() == n).then_some(cpus)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pin_each() -> Tuning {
        Tuning {
            pin: true,
            ..Tuning::default()
        }
    }

    /// Each shard reports its thread's name and the CPUs it may run on.
    async fn where_each_runs(shards: &Shards) -> Vec<(usize, Option<String>, Vec<usize>)> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for t in shards.spawn_each(move |i| {
            let tx = tx.clone();
            async move {
                let name = std::thread::current().name().map(str::to_string);
                let cpus = vane_sys::cpu::allowed().unwrap_or_default();
                let _ = tx.send((i, name, cpus));
            }
        }) {
            t.await.expect("task");
        }
        let mut seen = Vec::new();
        while let Ok(x) = rx.try_recv() {
            seen.push(x);
        }
        seen.sort();
        seen
    }

    /// Pinned, a shard per CPU runs on a CPU each (where the process may use two or more);
    /// unpinned, or fewer shards than CPUs, each may run wherever the process may.
    #[tokio::test]
    async fn pinned_shards_run_on_a_cpu_each() {
        let all = vane_sys::cpu::allowed().expect("the mask");
        let n = all.len();
        let cpus = |seen: Vec<(usize, Option<String>, Vec<usize>)>| -> Vec<Vec<usize>> {
            seen.into_iter().map(|(_, _, c)| c).collect()
        };
        let pinned = cpus(where_each_runs(&Shards::start(n, pin_each()).expect("shards")).await);
        if n >= 2 {
            let one_each: Vec<Vec<usize>> = all.iter().map(|&c| vec![c]).collect();
            assert_eq!(pinned, one_each);
        } else {
            assert_eq!(pinned, vec![all.clone()], "one CPU: nothing to bind");
        }
        let free =
            cpus(where_each_runs(&Shards::start(n, Tuning::default()).expect("shards")).await);
        assert_eq!(free, vec![all.clone(); n]);
        let more = cpus(where_each_runs(&Shards::start(n + 1, pin_each()).expect("shards")).await);
        assert_eq!(
            more,
            vec![all.clone(); n + 1],
            "more shards than CPUs: unbound"
        );
        if n > 2 {
            let fewer = cpus(where_each_runs(&Shards::start(2, pin_each()).expect("shards")).await);
            assert_eq!(
                fewer,
                vec![all.clone(); 2],
                "fewer shards than CPUs: unbound"
            );
        }
    }

    #[tokio::test]
    async fn each_shard_runs_its_task_on_its_own_thread() {
        let shards = Shards::start(2, Tuning::default()).expect("shards");
        assert_eq!(shards.len(), 2);
        let tasks = shards.spawn_each(|_| async {});
        assert_eq!(tasks.len(), 2);
        let seen: Vec<_> = where_each_runs(&shards)
            .await
            .into_iter()
            .map(|(i, name, _)| (i, name))
            .collect();
        assert_eq!(
            seen,
            vec![
                (0, Some("vane-shard-0".to_string())),
                (1, Some("vane-shard-1".to_string()))
            ]
        );
        let none = Shards::none();
        assert!(none.is_empty());
        assert_eq!(none.spawn_each(|_| async {}).len(), 1);
    }

    /// Connections accepted in a burst on one shard are spread over the shards, placed
    /// connections are counted until they end, and a moved one runs on its shard's thread.
    #[tokio::test]
    async fn a_burst_accepted_on_one_shard_is_spread_and_counted() {
        let shards = Shards::start(2, Tuning::default()).expect("shards");
        let placed: Vec<Placed> = (0..10).map(|_| shards.place(0)).collect();
        let on = |s: usize| placed.iter().filter(|p| p.shard() == s).count();
        // Each moves once shard 0 runs more than one over shard 1.
        assert_eq!((on(0), on(1)), (6, 4), "ten accepted on shard 0");
        assert_eq!(
            shards.place(1).shard(),
            1,
            "within one of the least loaded: stays"
        );
        drop(placed);
        let loads: Vec<usize> = shards
            .loads
            .iter()
            .map(|l| l.0.load(Ordering::Relaxed))
            .collect();
        assert_eq!(loads, [0, 0], "counted until dropped");
        let (tx, rx) = tokio::sync::oneshot::channel();
        shards.spawn_on(1, async move {
            let _ = tx.send(std::thread::current().name().map(str::to_string));
        });
        assert_eq!(rx.await.ok().flatten().as_deref(), Some("vane-shard-1"));
        let none = Shards::none();
        assert_eq!(none.place(3).shard(), 0, "no shards: the shared runtime");
    }
}
