//! Busy data-plane threads on one core take turns (`l4::turns`): neither waits for the other's
//! whole scheduler tick, and none yields to a thread that is not a shard. Alone in its file,
//! so no other test's threads share the core or the yield count.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vane::l4::shards::{Shards, Tuning};
use vane::l4::turns::yields;

/// How long each thread runs its load.
const RUN: Duration = Duration::from_millis(400);
/// A pause in a thread's progress this long is a wait for the core (its own work between two
/// progress marks takes about 20 us).
const STALL: Duration = Duration::from_micros(2500);

/// A socket pair ping-pong that works about 20 us per round, so the thread is always busy yet
/// waits for events between rounds (as a shard under load does). Returns the pauses in its
/// progress that were at least `STALL` long.
async fn busy_rounds() -> usize {
    let (mut a, mut b) = tokio::net::UnixStream::pair().expect("socket pair");
    tokio::spawn(async move {
        let mut byte = [0u8; 1];
        while b.read_exact(&mut byte).await.is_ok() {
            if b.write_all(&byte).await.is_err() {
                break;
            }
        }
    });
    let start = Instant::now();
    let mut last = start;
    let mut stalls = 0;
    let mut byte = [0u8; 1];
    while last.duration_since(start) < RUN {
        a.write_all(b"x").await.expect("write");
        a.read_exact(&mut byte).await.expect("read");
        let work = Instant::now();
        while work.elapsed() < Duration::from_micros(20) {
            std::hint::spin_loop();
        }
        let now = Instant::now();
        if now.duration_since(last) >= STALL {
            stalls += 1;
        }
        last = now;
    }
    stalls
}

/// Starts `n` shards with `turn`, binds each to `cpu`, runs the load on each at once and
/// returns their stalls.
fn stalls_on_one_core(cpu: usize, n: usize, turn: Option<Duration>) -> usize {
    let how = Tuning {
        turn,
        ..Tuning::default()
    };
    let shards = Shards::start(n, how).expect("shards");
    let (tx, rx) = mpsc::channel();
    shards.spawn_each(|_| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(vane_sys::cpu::pin_this_thread(cpu));
        }
    });
    for _ in 0..n {
        let bound = rx.recv_timeout(Duration::from_secs(5)).expect("shard");
        bound.expect("bind a shard thread to the CPU");
    }
    let (tx, rx) = mpsc::channel();
    shards.spawn_each(|_| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(busy_rounds().await);
        }
    });
    (0..n)
        .map(|_| rx.recv_timeout(Duration::from_secs(20)).expect("load ran"))
        .sum()
}

#[test]
fn busy_shards_on_one_core_take_turns_and_yield_to_no_other_thread() {
    let cpu = vane_sys::cpu::allowed().expect("affinity")[0];
    let turn = Some(Duration::from_millis(1));
    let without = stalls_on_one_core(cpu, 2, None);
    let yields_before = yields();
    let with = stalls_on_one_core(cpu, 2, turn);
    let yielded = yields() - yields_before;
    eprintln!(
        "pauses of {STALL:?} or more in {RUN:?}: {without} without turns, {with} with ({yielded} yields)"
    );

    // One shard beside a thread of another kind, both busy on the core: the shard keeps the
    // slices the kernel gives it.
    let spinning = std::thread::spawn(move || {
        vane_sys::cpu::pin_this_thread(cpu).expect("bind the spinning thread");
        let start = Instant::now();
        while start.elapsed() < RUN + Duration::from_millis(100) {
            std::hint::spin_loop();
        }
    });
    let yields_before = yields();
    stalls_on_one_core(cpu, 1, turn);
    let yielded_alone = yields() - yields_before;
    spinning.join().expect("spinning thread");
    assert_eq!(
        yielded_alone, 0,
        "a shard yielded to a thread that is not a shard"
    );

    if without < 10 {
        // A kernel that ticks at 1000 Hz (or preempts on its own) ends a busy thread's time
        // within 1 ms: there is nothing for turns to shorten, and nothing to tell apart.
        eprintln!("this kernel does not leave a busy thread waiting a tick; nothing to compare");
        return;
    }
    assert!(yielded > 0, "neither shard yielded its core to the other");
    assert!(
        with * 5 <= without,
        "with 1 ms turns the shards still waited {with} times for the core (without: {without})"
    );
}
