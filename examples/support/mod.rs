//! The load loop shared by the bench clients: `clients` threads repeat one attempt for `secs`
//! seconds; the completed attempts per second are printed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Runs `attempt` (true when it completed) in a loop on `clients` threads and prints the rate.
pub fn run<F>(clients: usize, secs: u64, attempt: F)
where
    F: Fn() -> bool + Send + Sync + 'static,
{
    let attempt = Arc::new(attempt);
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (attempt, done, stop) = (attempt.clone(), done.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if attempt() {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    for t in threads {
        let _ = t.join();
    }
    println!("{:.0}", done.load(Ordering::Relaxed) as f64 / elapsed);
}
