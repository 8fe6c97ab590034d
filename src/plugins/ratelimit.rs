//! `internal.common.ratelimit.sec|min`: at most `limit` hits per key per window.
//!
//! A fixed window per key, aligned to the key's first hit (not a global reset that lets a
//! burst straddle two windows for every key at once). Memory is bounded: past the budget, the
//! stalest keys are dropped first.

use std::time::{Duration, Instant};

use dashmap::DashMap;

struct Window {
    start: Instant,
    count: u64,
}

/// One process-wide table (`sec` and `min` each have their own).
pub struct RateLimiter {
    window: Duration,
    table: DashMap<String, Window>,
    max_bytes: usize,
    max_key_len: usize,
}

/// Approximate bytes one entry costs, as 0.9.2 counts them.
const ENTRY_OVERHEAD: usize = 92;

impl RateLimiter {
    pub fn new(window: Duration, max_bytes: usize, max_key_len: usize) -> Self {
        Self {
            window,
            table: DashMap::new(),
            max_bytes,
            max_key_len,
        }
    }

    /// Counts a hit for `key`; true while the key has used at most `limit` hits this window.
    pub fn hit(&self, key: &str, limit: u64) -> bool {
        if key.len() > self.max_key_len {
            return false;
        }
        let now = Instant::now();
        if !self.table.contains_key(key) {
            self.make_room(now, key.len());
        }
        let mut w = self.table.entry(key.to_string()).or_insert(Window {
            start: now,
            count: 0,
        });
        if now.duration_since(w.start) >= self.window {
            w.start = now;
            w.count = 0;
        }
        w.count = w.count.saturating_add(1);
        w.count <= limit
    }

    fn make_room(&self, now: Instant, new_key: usize) {
        let used = |t: &DashMap<String, Window>| {
            t.iter()
                .map(|e| e.key().len() + ENTRY_OVERHEAD)
                .sum::<usize>()
        };
        if self.table.len() * ENTRY_OVERHEAD + new_key < self.max_bytes / 2
            || used(&self.table) + new_key + ENTRY_OVERHEAD <= self.max_bytes
        {
            return;
        }
        // Expired windows carry no state worth keeping.
        self.table
            .retain(|_, w| now.duration_since(w.start) < self.window);
        if used(&self.table) + new_key + ENTRY_OVERHEAD <= self.max_bytes {
            return;
        }
        let mut ages: Vec<(Instant, String)> = self
            .table
            .iter()
            .map(|e| (e.start, e.key().clone()))
            .collect();
        ages.sort_unstable_by_key(|(t, _)| *t);
        let drop_n = (ages.len() / 10).max(1);
        for (_, k) in ages.into_iter().take(drop_n) {
            self.table.remove(&k);
        }
    }

    /// Keys longer than this are denied (`RATELIMIT_KEY_MAX_LEN`).
    pub fn max_key_len(&self) -> usize {
        self.max_key_len
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_per_window_then_reset() {
        let rl = RateLimiter::new(Duration::from_millis(50), 1 << 20, 256);
        let passed = (0..30).filter(|_| rl.hit("1.2.3.4", 20)).count();
        assert_eq!(passed, 20);
        assert!(rl.hit("other", 20), "keys are independent");
        std::thread::sleep(Duration::from_millis(60));
        assert!((0..20).all(|_| rl.hit("1.2.3.4", 20)), "a new window");
    }

    #[test]
    fn long_keys_denied_and_memory_bounded() {
        let rl = RateLimiter::new(Duration::from_secs(60), 10_000, 16);
        assert!(!rl.hit(&"k".repeat(17), 100));
        for i in 0..100_000 {
            rl.hit(&format!("key-{i}"), 100);
        }
        let used: usize = rl
            .table
            .iter()
            .map(|e| e.key().len() + ENTRY_OVERHEAD)
            .sum();
        assert!(used <= 10_000, "used {used}");
        assert!(rl.hit("key-99999", 100), "the newest key survives");
    }
}
