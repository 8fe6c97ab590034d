//! Which CPUs a thread runs on: the data plane binds each of its threads to a CPU of its own.

use std::io;

/// The CPUs the calling thread may run on (its affinity mask), in ascending order.
#[cfg(target_os = "linux")]
pub fn allowed() -> io::Result<Vec<usize>> {
    // SAFETY: an all-zero `cpu_set_t` is an empty set, a valid value of the type.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a live `cpu_set_t` and the size passed is its own; pid 0 is this thread.
    let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    let max = libc::CPU_SETSIZE as usize;
    // SAFETY: every index is below CPU_SETSIZE, inside the set.
    Ok((0..max)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect())
}

/// Binds the calling thread to CPU `cpu` alone.
#[cfg(target_os = "linux")]
pub fn pin_this_thread(cpu: usize) -> io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: an all-zero `cpu_set_t` is an empty set, a valid value of the type.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` was checked to be below CPU_SETSIZE.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a live `cpu_set_t` and the size passed is its own; pid 0 is this thread.
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The CPU the calling thread runs on now (glibc reads it from the thread's `rseq` area,
/// without a system call), or `None` where the kernel cannot tell.
#[cfg(target_os = "linux")]
pub fn current() -> Option<usize> {
    // SAFETY: `sched_getcpu` takes no argument and only reads the calling thread's state.
    let cpu = unsafe { libc::sched_getcpu() };
    usize::try_from(cpu).ok()
}

/// Not known here.
#[cfg(not(target_os = "linux"))]
pub fn current() -> Option<usize> {
    None
}

/// Affinity is not read here: unsupported.
#[cfg(not(target_os = "linux"))]
pub fn allowed() -> io::Result<Vec<usize>> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

/// Affinity is not set here: unsupported.
#[cfg(not(target_os = "linux"))]
pub fn pin_this_thread(_: usize) -> io::Result<()> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn a_pinned_thread_runs_on_that_cpu_alone() {
        let cpus = allowed().expect("the mask");
        assert!(!cpus.is_empty());
        let last = *cpus.last().expect("a cpu");
        let seen = std::thread::spawn(move || {
            pin_this_thread(last).expect("pin");
            allowed().expect("the mask")
        })
        .join()
        .expect("thread");
        assert_eq!(seen, vec![last]);
        let on = std::thread::spawn(move || {
            pin_this_thread(last).expect("pin");
            current()
        })
        .join()
        .expect("thread");
        assert_eq!(on, Some(last));
        // The spawning thread keeps its own mask.
        assert_eq!(allowed().expect("the mask"), cpus);
        assert!(pin_this_thread(libc::CPU_SETSIZE as usize).is_err());
    }
}
