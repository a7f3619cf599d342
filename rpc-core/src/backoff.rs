//! [`Backoff`]: how long to wait before trying again, for everything that retries
//! (reconnecting a channel, the `Retry` interceptor, renewing an etcd registration).

use std::time::Duration;

/// Exponential backoff with jitter: the `n`th delay is `initial × multiplier^(n-1)`, capped at
/// `max`, then shortened by a random fraction up to `jitter`, so that many clients that failed
/// together do not all come back in the same instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Backoff {
    pub(crate) initial: Duration,
    pub(crate) multiplier: f64,
    pub(crate) max: Duration,
    /// The largest fraction (0 to 1) taken off a delay at random.
    pub(crate) jitter: f64,
}

impl Backoff {
    /// Doubling from `initial` up to `max`, with `jitter`.
    pub(crate) fn doubling(initial: Duration, max: Duration, jitter: f64) -> Backoff {
        Backoff { initial, multiplier: 2.0, max: max.max(initial), jitter: jitter.clamp(0.0, 1.0) }
    }

    /// The delay after `attempts` failures (1 for the first), before jitter.
    pub(crate) fn ceiling(&self, attempts: u32) -> Duration {
        let exponent = attempts.saturating_sub(1).min(i32::MAX as u32) as i32;
        let secs = self.initial.as_secs_f64() * self.multiplier.powi(exponent);
        // A non-finite or huge product saturates to the maximum.
        Duration::try_from_secs_f64(secs).map_or(self.max, |d| d.min(self.max))
    }

    /// The delay after `attempts` failures: the ceiling, shortened by a random fraction up to
    /// the jitter.
    pub(crate) fn delay(&self, attempts: u32) -> Duration {
        let ceiling = self.ceiling(attempts);
        if self.jitter == 0.0 {
            return ceiling;
        }
        ceiling.mul_f64(1.0 - self.jitter * fastrand::f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_by_the_multiplier_up_to_the_cap_and_jitter_only_shortens() {
        let backoff = Backoff::doubling(Duration::from_millis(100), Duration::from_secs(2), 0.2);
        assert_eq!(backoff.ceiling(1), Duration::from_millis(100));
        assert_eq!(backoff.ceiling(3), Duration::from_millis(400));
        for attempts in [6, 1000, u32::MAX] {
            assert_eq!(backoff.ceiling(attempts), Duration::from_secs(2));
        }
        for _ in 0..100 {
            let delay = backoff.delay(3);
            assert!(delay > Duration::from_millis(319) && delay <= Duration::from_millis(400), "{delay:?}");
        }
        let exact = Backoff::doubling(Duration::from_millis(100), Duration::from_secs(2), 0.0);
        assert_eq!(exact.delay(2), Duration::from_millis(200));
    }

    #[test]
    fn a_huge_multiplier_saturates_at_the_cap() {
        let backoff = Backoff {
            initial: Duration::from_secs(1),
            multiplier: 1e300,
            max: Duration::from_secs(9),
            jitter: 0.0,
        };
        assert_eq!(backoff.delay(50), Duration::from_secs(9));
    }
}
