//! The process allocator: mimalloc, called the way its fast paths expect.
//!
//! mimalloc's per-thread free lists suit the many short-lived allocations of HTTP requests
//! (glibc's malloc spent ~12% of the L7 proxy path in malloc/free/consolidate). The `mimalloc`
//! crate sends every request through `mi_malloc_aligned`, whose fast path only serves blocks up
//! to 1 KiB that happen to be aligned; larger ones (a request's future, a read buffer) went the
//! generic way, 190 instructions instead of 40, and blocks whose size is not a power of two were
//! over-allocated to be aligned. Every mimalloc block of 16 bytes or more is 16-byte aligned
//! (and an 8-byte block 8), so a layout asking no more than that is plain `mi_malloc`.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// The alignment every `mi_malloc` block of at least that size has (`MI_MAX_ALIGN_SIZE`).
const NATURAL: usize = 16;

/// mimalloc as the global allocator; see the module comment.
pub struct Mimalloc;

/// Whether `mi_malloc` alone satisfies the layout's alignment.
fn natural(layout: &Layout) -> bool {
    layout.align() <= NATURAL && layout.align() <= layout.size()
}

// SAFETY: every path returns a block of at least `layout.size()` bytes aligned to
// `layout.align()` (plain mimalloc blocks are naturally aligned as `natural` states, the
// `_aligned` calls align explicitly) or null, and frees go to the same heap family.
unsafe impl GlobalAlloc for Mimalloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: mimalloc takes any size; the alignment is a power of two (Layout's invariant).
        unsafe {
            if natural(&layout) {
                mi::mi_malloc(layout.size()).cast()
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `alloc`.
        unsafe {
            if natural(&layout) {
                mi::mi_zalloc(layout.size()).cast()
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator (GlobalAlloc's contract); mimalloc frees
        // aligned and plain blocks alike.
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let grown = Layout::from_size_align(new_size, layout.align());
        // SAFETY: `ptr` came from this allocator with `layout` (GlobalAlloc's contract).
        unsafe {
            match grown {
                Ok(l) if natural(&l) => mi::mi_realloc(ptr.cast(), new_size).cast(),
                _ => mi::mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast(),
            }
        }
    }
}

/// Hands memory freed on the calling thread back to the OS (`mi_collect`): pages the thread
/// freed, and frees other threads made into its heap, that it would otherwise keep until it
/// allocates again.
pub fn collect() {
    // SAFETY: `mi_collect` only tidies the calling thread's own heap; it takes no pointer and
    // has no precondition.
    unsafe { mi::mi_collect(false) }
}

/// Stops the kernel from backing this process's memory with transparent huge pages
/// (`PR_SET_THP_DISABLE`, for every page faulted in from here on). mimalloc asks for them on
/// its arenas, so resident memory grew in 2 MiB steps whatever the connections used: an idle
/// gateway held about 34 MB instead of 19, and huge-page compaction can stall an allocation,
/// which a proxy pays in its tail latency. `false` when the kernel refused (or is not Linux).
pub fn no_transparent_huge_pages() -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_SET_THP_DISABLE takes plain integers and changes only this process's
        // memory policy; no pointer is passed.
        unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) == 0 }
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each layout the rule sends to `mi_malloc` comes back as aligned as asked, over the sizes
    /// of mimalloc's small and medium bins (where a non-power-of-two block would betray it).
    #[test]
    fn plain_blocks_are_as_aligned_as_the_layouts_ask() {
        let a = Mimalloc;
        for size in 1..=5000usize {
            for align in [1usize, 2, 4, 8, 16, 32, 64] {
                let Ok(layout) = Layout::from_size_align(size, align) else {
                    continue;
                };
                // SAFETY: the layout has a non-zero size; the block is freed with it.
                unsafe {
                    let p = a.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size} align {align}");
                    p.write_bytes(0xA5, size);
                    let q = a.realloc(p, layout, size * 2);
                    assert_eq!(q as usize % align, 0, "realloc {size} align {align}");
                    assert_eq!(*q.add(size - 1), 0xA5);
                    a.dealloc(q, Layout::from_size_align_unchecked(size * 2, align));
                    let z = a.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0);
                    assert!(std::slice::from_raw_parts(z, size).iter().all(|b| *b == 0));
                    a.dealloc(z, layout);
                }
            }
        }
    }
}
