//! Large buffers borrowed only while bytes are in flight. A relay or a UDP session that waits
//! holds none, so an idle connection costs a few hundred bytes instead of the buffer's size;
//! a bounded number of free buffers is kept for reuse and the rest go back to the allocator.

use std::sync::Mutex;

pub struct BufPool {
    size: usize,
    max_free: usize,
    free: Mutex<Vec<Vec<u8>>>,
}

impl BufPool {
    pub const fn new(size: usize, max_free: usize) -> Self {
        Self {
            size,
            max_free,
            free: Mutex::new(Vec::new()),
        }
    }

    /// A buffer of the pool's size.
    pub fn take(&self) -> Vec<u8> {
        let pooled = self.free.lock().ok().and_then(|mut p| p.pop());
        // Zeroed through the allocator (fresh mmap pages), so an untouched tail costs no RSS.
        pooled.unwrap_or_else(|| vec![0; self.size])
    }

    /// Gives a buffer back (kept for reuse while fewer than `max_free` are).
    pub fn give(&self, b: Vec<u8>) {
        if b.len() != self.size {
            return;
        }
        if let Ok(mut p) = self.free.lock() {
            if p.len() < self.max_free {
                p.push(b);
            }
        }
    }
}

/// TCP relay bursts: 256 KiB beat splice(2) through a pipe here (bench/README.md).
pub static RELAY: BufPool = BufPool::new(256 * 1024, 64);

/// One UDP datagram of any size.
pub static DATAGRAM: BufPool = BufPool::new(65_535, 64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_up_to_the_bound() {
        let pool = BufPool::new(1024, 2);
        let bufs: Vec<Vec<u8>> = (0..5).map(|_| pool.take()).collect();
        assert!(bufs.iter().all(|b| b.len() == 1024));
        for b in bufs {
            pool.give(b);
        }
        assert_eq!(pool.free.lock().map(|p| p.len()).unwrap_or(0), 2);
        pool.give(vec![0; 10]);
        assert_eq!(
            pool.free.lock().map(|p| p.len()).unwrap_or(0),
            2,
            "foreign sizes are dropped"
        );
    }
}
