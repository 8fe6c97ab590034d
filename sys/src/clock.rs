//! Clocks the standard library does not read: this thread's CPU time, and `CLOCK_MONOTONIC`
//! as a number (systemd compares its own with it).
//!
//! Read through the C library's `clock_gettime`, not rustix's: rustix finds the vDSO by
//! parsing the image `AT_SYSINFO_EHDR` points to, which valgrind does not map, so every
//! valgrind tool (`bench/l7_instructions.sh` runs callgrind) ended the process with SIGSEGV
//! at a shard's first park (rustix issue 1559).

use std::time::Duration;

fn read(clock: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a live, writable `timespec`; the clock ids passed are constants every
    // supported kernel knows, and on an error `ts` stays zero.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

/// CPU time the calling thread has used.
pub fn thread_cpu_time() -> Duration {
    read(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// `CLOCK_MONOTONIC`: time since an arbitrary start, the same for every process on the host.
pub fn monotonic() -> Duration {
    read(libc::CLOCK_MONOTONIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_cpu_time_counts_work_and_not_sleep() {
        let before = thread_cpu_time();
        std::thread::sleep(Duration::from_millis(60));
        let slept = thread_cpu_time() - before;
        assert!(slept < Duration::from_millis(30), "sleeping used {slept:?}");
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(60) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let worked = thread_cpu_time() - before - slept;
        assert!(
            worked >= Duration::from_millis(20),
            "spinning 60 ms used {worked:?}"
        );
    }

    #[test]
    fn monotonic_moves_with_the_wall() {
        let a = monotonic();
        std::thread::sleep(Duration::from_millis(20));
        let moved = monotonic() - a;
        assert!(moved >= Duration::from_millis(20), "{moved:?}");
        assert!(a > Duration::ZERO);
    }
}
