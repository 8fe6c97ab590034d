//! Metric label values taken from input a client or a templated config can vary (an upstream
//! authority built from a header, a protocol named by a template). Each such family keeps at
//! most `METRICS_MAX_LABEL_VALUES` distinct values; past the cap a value is reported as
//! `other` and `vane_metric_labels_collapsed_total{family}` counts it, so neither this process
//! nor Prometheus grows with what clients send.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{LazyLock, OnceLock};

use dashmap::DashMap;

/// The value that stands for every value past a family's cap.
pub const OTHER: &str = "other";

pub struct LabelCap {
    family: &'static str,
    max: usize,
    seen: DashMap<Box<str>, ()>,
    /// Values admitted (reserved before insertion, so concurrent callers never pass `max`).
    admitted: AtomicUsize,
    collapsed: OnceLock<metrics::Counter>,
}

impl LabelCap {
    pub fn new(family: &'static str, max: usize) -> Self {
        Self {
            family,
            max,
            seen: DashMap::new(),
            admitted: AtomicUsize::new(0),
            collapsed: OnceLock::new(),
        }
    }

    /// `value` when it already has a series or there is room for one; else [`OTHER`].
    pub fn admit<'a>(&self, value: &'a str) -> &'a str {
        if self.seen.contains_key(value) {
            return value;
        }
        if self.admitted.fetch_add(1, Ordering::AcqRel) < self.max {
            if self.seen.insert(value.into(), ()).is_some() {
                // Another caller admitted the same value meanwhile: give the slot back.
                self.admitted.fetch_sub(1, Ordering::AcqRel);
            }
            return value;
        }
        self.admitted.fetch_sub(1, Ordering::AcqRel);
        self.collapsed
            .get_or_init(
                || metrics::counter!("vane_metric_labels_collapsed_total", "family" => self.family),
            )
            .increment(1);
        OTHER
    }

    /// True when `value` has a series of its own.
    pub fn admits(&self, value: &str) -> bool {
        self.seen.contains_key(value)
    }

    /// Distinct values with a series of their own.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

fn cap(family: &'static str) -> LabelCap {
    LabelCap::new(family, crate::settings::get().metric_label_values)
}

/// `target` of `vane_upstream_requests_total` and `vane_upstream_healthy`.
pub static UPSTREAM_TARGET: LazyLock<LabelCap> =
    LazyLock::new(|| cap("vane_upstream_requests_total"));

/// `protocol` of `vane_l4p_inspections_total` (an upgrade's protocol may be templated).
pub static CARRIER: LazyLock<LabelCap> = LazyLock::new(|| cap("vane_l4p_inspections_total"));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hundred_thousand_values_leave_the_cap_and_an_other_series() {
        let cap = LabelCap::new("test", 1000);
        let mut other = 0;
        for i in 0..100_000 {
            let v = format!("10.0.{}.{}:80", i / 256, i % 256);
            match cap.admit(&v) {
                OTHER => other += 1,
                kept => assert_eq!(kept, v),
            }
        }
        assert_eq!(cap.len(), 1000);
        assert_eq!(other, 99_000);
        // An admitted value keeps its series; a new one still collapses.
        assert_eq!(cap.admit("10.0.0.0:80"), "10.0.0.0:80");
        assert_eq!(cap.admit("192.0.2.1:80"), OTHER);
    }

    #[test]
    fn concurrent_callers_never_pass_the_cap() {
        let cap = std::sync::Arc::new(LabelCap::new("test", 100));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let cap = cap.clone();
                std::thread::spawn(move || {
                    for i in 0..5_000 {
                        cap.admit(&format!("{}", (i * 7 + t) % 3_000));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert!(cap.len() <= 100, "{}", cap.len());
        assert!(cap.len() >= 90, "{}", cap.len());
    }
}
