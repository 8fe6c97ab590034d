//! Restart budgets: how many crashes a supervisor absorbs before it gives up.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// One-for-one restart policy with a budget and exponential backoff.
#[derive(Debug, Clone, Copy)]
pub struct RestartPolicy {
    /// Crashes allowed inside `window` before the supervisor itself fails.
    pub max_restarts: usize,
    pub window: Duration,
    /// Delay before the first restart; doubles for each crash already in the window.
    pub base_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            max_restarts: 20,
            window: Duration::from_secs(60),
            base_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_secs(2),
        }
    }
}

/// Sliding window of recent crashes of one supervisor's children.
#[derive(Debug, Default)]
pub struct RestartBudget {
    recent: VecDeque<Instant>,
}

impl RestartBudget {
    /// Records a crash at `now`; returns the backoff to wait, or `None` when the budget is spent.
    pub fn on_crash(&mut self, policy: &RestartPolicy, now: Instant) -> Option<Duration> {
        while let Some(first) = self.recent.front() {
            if now.duration_since(*first) > policy.window {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        if self.recent.len() >= policy.max_restarts {
            return None;
        }
        let exp = self.recent.len().min(16) as u32;
        self.recent.push_back(now);
        let backoff = policy.base_backoff.saturating_mul(1u32 << exp);
        Some(backoff.min(policy.max_backoff))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_exhausts_inside_window_and_recovers_after() {
        let p = RestartPolicy {
            max_restarts: 3,
            window: Duration::from_secs(10),
            base_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(25),
        };
        let mut b = RestartBudget::default();
        let t0 = Instant::now();
        assert_eq!(b.on_crash(&p, t0), Some(Duration::from_millis(10)));
        assert_eq!(b.on_crash(&p, t0), Some(Duration::from_millis(20)));
        assert_eq!(
            b.on_crash(&p, t0),
            Some(Duration::from_millis(25)),
            "capped"
        );
        assert_eq!(
            b.on_crash(&p, t0),
            None,
            "fourth crash in the window is too many"
        );
        let later = t0 + Duration::from_secs(11);
        assert_eq!(b.on_crash(&p, later), Some(Duration::from_millis(10)));
    }
}
