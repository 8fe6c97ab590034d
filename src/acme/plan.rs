//! When to renew and how long to wait after a failure (pure functions of the clock).

use std::time::{Duration, SystemTime};

/// When a pair valid from `not_before` to `not_after` is due: `renew_before` ahead of its
/// expiry, but never in the first third of its life, so a short-lived certificate (or a window
/// longer than the certificate) cannot make a renewal loop.
pub fn renew_at(
    not_before: SystemTime,
    not_after: SystemTime,
    renew_before: Duration,
) -> SystemTime {
    let life = not_after
        .duration_since(not_before)
        .unwrap_or(Duration::ZERO);
    let window = renew_before.min(life.mul_f64(2.0 / 3.0));
    not_after.checked_sub(window).unwrap_or(not_before)
}

/// The wait after `failures` failed attempts in a row (1, 2, ...): doubling from `min`, capped
/// at `max`, with ±20% jitter so instances sharing a CA do not retry in step. A `Retry-After`
/// from the CA is a floor.
pub fn retry_delay(
    failures: u32,
    min: Duration,
    max: Duration,
    retry_after: Option<Duration>,
) -> Duration {
    let doubled = min.saturating_mul(1u32 << failures.saturating_sub(1).min(20));
    let base = doubled.min(max);
    let jitter = 0.8 + rand::random::<f64>() * 0.4;
    let d = base.mul_f64(jitter);
    retry_after.map_or(d, |r| d.max(r))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400;

    fn at(days: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(days * DAY)
    }

    #[test]
    fn window_before_expiry_within_the_last_two_thirds() {
        // 90 days, renew 30 before: day 60.
        assert_eq!(
            renew_at(at(0), at(90), Duration::from_secs(30 * DAY)),
            at(60)
        );
        // A window longer than the certificate: a third of its life, not at once.
        assert_eq!(renew_at(at(0), at(6), Duration::from_secs(30 * DAY)), at(2));
        // A broken validity (after before before): due at once, never a panic.
        assert_eq!(renew_at(at(5), at(1), Duration::from_secs(DAY)), at(1));
    }

    #[test]
    fn retries_double_with_jitter_up_to_the_cap() {
        let (min, max) = (Duration::from_secs(10), Duration::from_secs(100));
        for _ in 0..50 {
            let first = retry_delay(1, min, max, None);
            assert!(first >= Duration::from_secs(8) && first <= Duration::from_secs(12));
            let third = retry_delay(3, min, max, None);
            assert!(third >= Duration::from_secs(32) && third <= Duration::from_secs(48));
            let late = retry_delay(40, min, max, None);
            assert!(late >= Duration::from_secs(80) && late <= Duration::from_secs(120));
        }
        let told = retry_delay(1, min, max, Some(Duration::from_secs(3600)));
        assert_eq!(told, Duration::from_secs(3600));
    }
}
