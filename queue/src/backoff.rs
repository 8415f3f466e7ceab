//! Retry delays: exponential, capped, with full jitter.

use std::time::Duration;

use rand::Rng;

/// Default delay before the second attempt.
pub const DEFAULT_RETRY_BASE: Duration = Duration::from_secs(1);
/// Default ceiling of one retry delay.
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(600);

/// How long a failed attempt waits before the next one.
///
/// Delay for attempt `n` (1-based, the attempt that just failed) is drawn uniformly from
/// `[d/2, d]` with `d = min(base * 2^(n-1), max)`: exponential so a struggling host gets room,
/// capped so a job is never parked for hours, and jittered (half of it) so jobs that failed
/// together do not come back together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay after the first failed attempt (before jitter).
    pub base: Duration,
    /// Ceiling of any delay.
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base: DEFAULT_RETRY_BASE,
            max: DEFAULT_RETRY_MAX,
        }
    }
}

impl RetryPolicy {
    /// The undithered delay after failed attempt `attempt` (1-based).
    pub fn ceiling(&self, attempt: i32) -> Duration {
        let exponent = u32::try_from(attempt.saturating_sub(1)).unwrap_or(0).min(30);
        self.base.saturating_mul(1u32 << exponent).min(self.max)
    }

    /// The jittered delay after failed attempt `attempt` (1-based).
    pub fn backoff(&self, attempt: i32) -> Duration {
        let ceiling = self.ceiling(attempt);
        let half = ceiling / 2;
        let spread = ceiling.saturating_sub(half);
        if spread.is_zero() {
            return ceiling;
        }
        let jitter = rand::rng().random_range(0..=spread.as_millis().min(u128::from(u64::MAX)) as u64);
        half + Duration::from_millis(jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_until_the_cap() {
        let policy = RetryPolicy {
            base: Duration::from_secs(1),
            max: Duration::from_secs(10),
        };
        assert_eq!(policy.ceiling(1), Duration::from_secs(1));
        assert_eq!(policy.ceiling(2), Duration::from_secs(2));
        assert_eq!(policy.ceiling(4), Duration::from_secs(8));
        assert_eq!(policy.ceiling(5), Duration::from_secs(10));
        assert_eq!(policy.ceiling(500), Duration::from_secs(10));
    }

    #[test]
    fn backoff_jitter_stays_within_half_to_full_ceiling() {
        let policy = RetryPolicy::default();
        for attempt in 1..8 {
            let ceiling = policy.ceiling(attempt);
            for _ in 0..50 {
                let d = policy.backoff(attempt);
                assert!(
                    d >= ceiling / 2 && d <= ceiling,
                    "{d:?} outside [{:?}, {ceiling:?}]",
                    ceiling / 2
                );
            }
        }
    }
}
