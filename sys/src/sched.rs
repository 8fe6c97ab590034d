//! How long the scheduler lets a thread run before another may take its core: the data plane
//! asks for a short slice, so a shard woken by network events runs ahead of the batch work
//! (load generators, compilers, other daemons) that shares the core.
//!
//! Linux 6.12 and later (EEVDF) read `sched_runtime` of a normal (`SCHED_OTHER`) thread as
//! the slice it asks for, clamped to 0.1-100 ms. A shorter slice means an earlier virtual
//! deadline, and a woken thread whose deadline comes first preempts the running one. Earlier
//! kernels accept the call and ignore the field.

use std::io;
use std::time::Duration;

/// The scheduling attributes of the calling thread.
#[cfg(target_os = "linux")]
fn get() -> io::Result<libc::sched_attr> {
    // SAFETY: an all-zero `sched_attr` is a valid value of the plain-data type.
    let mut attr: libc::sched_attr = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::sched_attr>() as libc::c_uint;
    // SAFETY: `attr` is a live `sched_attr` and `size` is its own; pid 0 is this thread; the
    // kernel writes at most `size` bytes.
    let r = unsafe { libc::syscall(libc::SYS_sched_getattr, 0, &mut attr, size, 0) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(attr)
}

/// Asks the scheduler to run the calling thread in slices of `slice`, keeping its policy and
/// nice value. Threads under a real-time policy (set by the operator) are left as they are
/// (`Ok(false)`).
#[cfg(target_os = "linux")]
pub fn request_slice(slice: Duration) -> io::Result<bool> {
    let mut attr = get()?;
    if !matches!(
        attr.sched_policy as libc::c_int,
        libc::SCHED_OTHER | libc::SCHED_BATCH
    ) {
        return Ok(false);
    }
    attr.sched_runtime = u64::try_from(slice.as_nanos()).unwrap_or(u64::MAX);
    set(attr)?;
    Ok(true)
}

/// Sets the scheduling attributes of the calling thread.
#[cfg(target_os = "linux")]
fn set(mut attr: libc::sched_attr) -> io::Result<()> {
    attr.size = std::mem::size_of::<libc::sched_attr>() as u32;
    attr.sched_flags = 0;
    // SAFETY: `attr` is a live, initialised `sched_attr` whose `size` is its own; pid 0 is
    // this thread; the kernel only reads it.
    let r = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr, 0) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The slice the calling thread runs in, as the kernel reports it (the default one unless
/// asked; `None` from a kernel that reports none, before 6.12).
#[cfg(target_os = "linux")]
pub fn slice() -> io::Result<Option<Duration>> {
    let attr = get()?;
    Ok((attr.sched_runtime > 0).then(|| Duration::from_nanos(attr.sched_runtime)))
}

/// No slice to ask for here.
#[cfg(not(target_os = "linux"))]
pub fn request_slice(_: Duration) -> io::Result<bool> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

/// Not known here.
#[cfg(not(target_os = "linux"))]
pub fn slice() -> io::Result<Option<Duration>> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// On a kernel that reads the request (6.12 on), the thread runs in the slice it asked
    /// for, and only that thread does; its nice value stays.
    #[test]
    fn a_thread_runs_in_the_slice_it_asked_for() {
        let own = slice().expect("read");
        let (before, after, nice) = std::thread::spawn(|| {
            let before = slice().expect("read");
            // A nice value other than the default, which the request must keep (raising
            // one's own needs no privilege).
            let mut attr = get().expect("attr");
            attr.sched_nice = 5;
            set(attr).expect("nice 5");
            let taken = request_slice(Duration::from_micros(300)).expect("set");
            assert!(taken, "a normal thread takes a slice");
            (
                before,
                slice().expect("read"),
                get().expect("attr").sched_nice,
            )
        })
        .join()
        .expect("thread");
        assert_eq!(before, own, "a new thread starts with the default");
        assert_eq!(nice, 5, "nice kept");
        assert_eq!(slice().expect("read"), own, "other threads keep theirs");
        match own {
            Some(default) => {
                assert_ne!(default, Duration::from_micros(300));
                assert_eq!(after, Some(Duration::from_micros(300)));
            }
            None => eprintln!("this kernel reports no slice (before 6.12)"),
        }
    }
}
