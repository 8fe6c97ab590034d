//! The process allocator: mimalloc, called the way its fast paths expect.
//!
//! mimalloc's per-thread free lists suit the many short-lived allocations of HTTP requests
//! (glibc's malloc spent ~12% of the L7 proxy path in malloc/free/consolidate). The `mimalloc`
//! crate sends every request through `mi_malloc_aligned`, whose fast path only serves blocks up
//! to 1 KiB that happen to be aligned; larger ones (a request's future, a read buffer) went the
//! generic way, 190 instructions instead of 40, and blocks whose size is not a power of two were
//! over-allocated to be aligned. Every mimalloc block of 16 bytes or more is 16-byte aligned
//! (and an 8-byte block 8), so a layout asking no more than that is plain `mi_malloc`.
//!
//! In front of mimalloc, each long-lived runtime thread keeps a short last-in-first-out stack
//! of freed small blocks per size class ([`cache_this_thread`]). mimalloc hands out a page's
//! free blocks in turn and only takes freed ones back when that list runs dry, so a request
//! that allocates and frees the same sizes walked through every free block of each size (an
//! exchange's 2.8 KiB state through about 60 KiB), in memory long out of the CPU's cache. The
//! stack gives back the block freed last, still in cache, as HAProxy's pools do: simulated
//! level-1 data misses per proxied keep-alive request 473 -> 395 (HAProxy: 20).

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::ffi::c_void;
use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering};

use libmimalloc_sys as mi;

/// The alignment every `mi_malloc` block of at least that size has (`MI_MAX_ALIGN_SIZE`).
const NATURAL: usize = 16;

/// mimalloc as the global allocator; see the module comment.
pub struct Mimalloc;

/// Whether `mi_malloc` alone satisfies the layout's alignment.
fn natural(layout: &Layout) -> bool {
    layout.align() <= NATURAL && layout.align() <= layout.size()
}

/// The largest block the thread caches keep; larger ones are rarer and go to mimalloc.
const CACHED_MAX: usize = 4096;

/// Size classes: 16-byte steps up to 128 bytes, then four per doubling up to [`CACHED_MAX`]
/// (mimalloc's own bins over that range, so rounding a size up to its class costs no memory,
/// but for sizes up to 8 bytes, which take 16 instead of 8).
const CLASSES: usize = 28;

/// Bytes a thread keeps cached per class, at most (and at least two blocks, at most 32).
const CACHED_BYTES: usize = 8192;

/// The class of a cacheable size (1..=[`CACHED_MAX`]).
#[inline(always)]
fn class_of(size: usize) -> usize {
    if size <= 128 {
        return size.div_ceil(16) - 1;
    }
    let s = size - 1;
    let b = (usize::BITS - 1 - s.leading_zeros()) as usize;
    8 + (b - 7) * 4 + ((s >> (b - 2)) & 3)
}

/// The size every block of class `c` is allocated with.
const fn class_size(c: usize) -> usize {
    if c < 8 {
        return (c + 1) * 16;
    }
    let b = 7 + (c - 8) / 4;
    (1 << b) + ((c - 8) % 4 + 1) * (1 << (b - 2))
}

/// How many freed blocks of class `c` a thread keeps.
const fn class_cap(c: usize) -> u16 {
    let n = CACHED_BYTES / class_size(c);
    (if n < 2 {
        2
    } else if n > 32 {
        32
    } else {
        n
    }) as u16
}

/// [`class_size`] and [`class_cap`] of every class, worked out once.
const SIZES: [usize; CLASSES] = table().0;
const CAPS: [u16; CLASSES] = table().1;

const fn table() -> ([usize; CLASSES], [u16; CLASSES]) {
    let (mut sizes, mut caps) = ([0; CLASSES], [0; CLASSES]);
    let mut c = 0;
    while c < CLASSES {
        sizes[c] = class_size(c);
        caps[c] = class_cap(c);
        c += 1;
    }
    (sizes, caps)
}

/// The class of a layout the caches may serve: small, and no more aligned than every block of
/// its class is (each class size is a multiple of 16, so its mimalloc blocks are 16-aligned).
#[inline(always)]
fn cached_class(layout: &Layout) -> Option<usize> {
    (layout.size() <= CACHED_MAX && layout.align() <= NATURAL && layout.size() > 0)
        .then(|| class_of(layout.size()))
}

/// One thread's stacks of freed blocks: each block holds the next one's address in its first
/// word. No destructor (a destructor would put a check on every access): the caches are turned
/// on only on threads that live as long as the process.
struct Cache {
    on: Cell<bool>,
    heads: [Cell<*mut u8>; CLASSES],
    counts: [Cell<u16>; CLASSES],
}

thread_local! {
    static CACHE: Cache = const {
        Cache {
            on: Cell::new(false),
            heads: [const { Cell::new(ptr::null_mut()) }; CLASSES],
            counts: [const { Cell::new(0) }; CLASSES],
        }
    };
}

impl Cache {
    /// The block freed last in class `c`, if any.
    #[inline(always)]
    fn pop(&self, c: usize) -> Option<*mut u8> {
        let head = self.heads[c].get();
        if head.is_null() {
            return None;
        }
        // SAFETY: a cached block is a live mimalloc block of `class_size(c)` bytes, owned by
        // this stack, whose first word `push` set to the next block's address.
        self.heads[c].set(unsafe { head.cast::<*mut u8>().read() });
        self.counts[c].set(self.counts[c].get() - 1);
        Some(head)
    }

    /// Keeps `block` (of class `c`) unless the stack is full or the cache is off.
    #[inline(always)]
    fn push(&self, c: usize, block: *mut u8) -> bool {
        let n = self.counts[c].get();
        if !self.on.get() || n >= CAPS[c] {
            return false;
        }
        // SAFETY: the caller gives up `block`, at least 16 bytes and 16-aligned: its first word
        // is ours to write.
        unsafe { block.cast::<*mut u8>().write(self.heads[c].get()) };
        self.heads[c].set(block);
        self.counts[c].set(n + 1);
        true
    }

    /// Gives every cached block back to mimalloc.
    fn flush(&self) {
        for c in 0..CLASSES {
            while let Some(block) = self.pop(c) {
                // SAFETY: the block came from mimalloc and no one else holds it.
                unsafe { mi::mi_free(block.cast()) };
            }
        }
    }
}

/// A block of class `c`: the one this thread freed last, or a new one.
#[inline(always)]
fn take(c: usize) -> Option<*mut u8> {
    CACHE.try_with(|cache| cache.pop(c)).ok().flatten()
}

/// Keeps a freed block of class `c` on this thread; false when it should go to mimalloc.
#[inline(always)]
fn keep(c: usize, block: *mut u8) -> bool {
    CACHE
        .try_with(|cache| cache.push(c, block))
        .unwrap_or(false)
}

/// Turns on the calling thread's cache of freed blocks (see the module comment). Only for a
/// thread that lives as long as the process: what it holds when it ends is not freed.
pub fn cache_this_thread() {
    let _ = CACHE.try_with(|cache| cache.on.set(true));
}

// SAFETY: every path returns a block of at least `layout.size()` bytes aligned to
// `layout.align()` (plain mimalloc blocks are naturally aligned as `natural` states, the
// `_aligned` calls align explicitly; a cached block has its class's size, which every block of
// that class is allocated with, and is 16-aligned) or null, and frees go to the same heap
// family.
unsafe impl GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if let Some(c) = cached_class(&layout) {
            if let Some(block) = take(c) {
                return block;
            }
            // SAFETY: mimalloc takes any size.
            return unsafe { mi::mi_malloc(SIZES[c]).cast() };
        }
        // SAFETY: mimalloc takes any size; the alignment is a power of two (Layout's invariant).
        unsafe {
            if natural(&layout) {
                mi::mi_malloc(layout.size()).cast()
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if let Some(c) = cached_class(&layout) {
            if let Some(block) = take(c) {
                // SAFETY: the block has `class_size(c) >= layout.size()` bytes.
                unsafe { block.write_bytes(0, layout.size()) };
                return block;
            }
            // SAFETY: as `alloc`.
            return unsafe { mi::mi_zalloc(SIZES[c]).cast() };
        }
        // SAFETY: as `alloc`.
        unsafe {
            if natural(&layout) {
                mi::mi_zalloc(layout.size()).cast()
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(c) = cached_class(&layout) {
            if keep(c, ptr) {
                return;
            }
        }
        // SAFETY: `ptr` came from this allocator (GlobalAlloc's contract); mimalloc frees
        // aligned and plain blocks alike.
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let grown = Layout::from_size_align(new_size, layout.align());
        let (old, new) = match &grown {
            Ok(l) => (cached_class(&layout), cached_class(l)),
            Err(_) => (None, None),
        };
        if old.is_some() && old == new {
            // The block already has its class's size.
            return ptr;
        }
        // SAFETY: `ptr` came from this allocator with `layout` (GlobalAlloc's contract). A new
        // size the caches serve is rounded up to its class's, which `dealloc` relies on.
        unsafe {
            match (grown, new) {
                (Ok(_), Some(c)) => mi::mi_realloc(ptr.cast(), SIZES[c]).cast(),
                (Ok(l), None) if natural(&l) => mi::mi_realloc(ptr.cast(), new_size).cast(),
                _ => mi::mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast(),
            }
        }
    }
}

/// [`Mimalloc`], counting the calls that allocate (`alloc`, `alloc_zeroed`, `realloc`): the
/// global allocator of a test that holds a path to a number of allocations. One relaxed atomic
/// add per call, shared by every thread.
pub struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

impl Counting {
    /// Calls that allocated so far, by every thread of the process.
    pub fn allocations() -> u64 {
        ALLOCATIONS.load(Ordering::Relaxed)
    }
}

// SAFETY: every call goes to `Mimalloc` with the caller's arguments unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: GlobalAlloc's contract, passed on.
        unsafe { Mimalloc.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as `alloc`.
        unsafe { Mimalloc.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as `alloc`.
        unsafe { Mimalloc.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as `alloc`.
        unsafe { Mimalloc.realloc(ptr, layout, new_size) }
    }
}

/// Hands memory freed on the calling thread back to the OS (`mi_collect`): the blocks its cache
/// holds, pages the thread freed, and frees other threads made into its heap, that it would
/// otherwise keep until it allocates again.
pub fn collect() {
    let _ = CACHE.try_with(Cache::flush);
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

    /// How many blocks this thread's cache holds per class.
    fn cached() -> Vec<u16> {
        CACHE.with(|c| c.counts.iter().map(Cell::get).collect())
    }

    /// Every cacheable size falls in the smallest class that holds it, and the classes are
    /// mimalloc's bins from 128 bytes on (four per doubling).
    #[test]
    fn sizes_fall_in_the_smallest_class_that_holds_them() {
        for size in 1..=CACHED_MAX {
            let c = class_of(size);
            assert!(SIZES[c] >= size, "size {size} in class {c} of {}", SIZES[c]);
            assert!(
                c == 0 || SIZES[c - 1] < size,
                "size {size}: class {c} is not the smallest"
            );
        }
        assert_eq!(
            SIZES[..12],
            [16, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256]
        );
        assert_eq!(SIZES[CLASSES - 1], CACHED_MAX);
        assert!(CAPS.iter().all(|&n| (2..=32).contains(&n)));
    }

    /// Rounding a size up to its class costs no memory: mimalloc gives a block of the class's
    /// size to every size of the class anyway (its bins over this range are the classes), but
    /// for sizes up to 8 bytes, which take 16 (every cached block holds a 16-byte aligned link).
    #[test]
    fn a_class_is_the_block_mimalloc_gives_its_sizes() {
        for size in 9..=CACHED_MAX {
            // SAFETY: a plain allocation of a non-zero size, measured and freed at once.
            let usable = unsafe {
                let p = mi::mi_malloc(size);
                let n = mi::mi_usable_size(p);
                mi::mi_free(p);
                n
            };
            assert_eq!(usable, SIZES[class_of(size)], "size {size}");
        }
    }

    /// With the cache on, a block freed and asked for again is the same block, however many
    /// free blocks mimalloc's page has to walk through (without the cache the cycle below
    /// touched about 200 blocks of 100 bytes); a full stack sends the rest to mimalloc, and
    /// `collect` empties it.
    #[test]
    fn the_block_freed_last_is_given_out_first() {
        let a = Mimalloc;
        cache_this_thread();
        for size in [24usize, 100, 700, 2800, 4096] {
            let l = Layout::from_size_align(size, 8).expect("layout");
            let c = class_of(size);
            // SAFETY: every block is allocated and freed with `l`.
            unsafe {
                // A page with many free blocks, as a busy thread's are.
                let warm: Vec<_> = (0..200).map(|_| a.alloc(l)).collect();
                for p in &warm {
                    a.dealloc(*p, l);
                }
                assert_eq!(cached()[c], CAPS[c], "size {size}: a full stack");
                let mut seen = std::collections::HashSet::new();
                for _ in 0..1000 {
                    let p = a.alloc(l);
                    p.write_bytes(0x5A, size);
                    seen.insert(p as usize);
                    a.dealloc(p, l);
                }
                assert_eq!(seen.len(), 1, "size {size}: blocks walked through");
                let z = a.alloc_zeroed(l);
                assert!(std::slice::from_raw_parts(z, size).iter().all(|b| *b == 0));
                a.dealloc(z, l);
            }
            collect();
            assert!(
                cached().iter().all(|&n| n == 0),
                "collect empties the cache"
            );
        }
    }

    /// Each layout the rule sends to `mi_malloc` comes back as aligned as asked, over the sizes
    /// of mimalloc's small and medium bins (where a non-power-of-two block would betray it).
    #[test]
    fn plain_blocks_are_as_aligned_as_the_layouts_ask() {
        let a = Mimalloc;
        // Cached blocks too: each layout's block is freed and the next one may reuse it.
        cache_this_thread();
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
