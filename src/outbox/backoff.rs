//! How long to wait before the next attempt: exponential per failure in a row, capped, with
//! jitter so that the instances (and endpoints) that failed together do not retry together.

use std::time::Duration;

/// The wait before the attempt that follows `failures` failures in a row (1 or more): `first`,
/// then twice as long each time up to `max`, stretched by up to a quarter by `jitter` (0 to 1).
pub fn delay(failures: u32, first: Duration, max: Duration, jitter: f64) -> Duration {
    let doublings = failures.saturating_sub(1).min(30);
    let base = first.saturating_mul(1 << doublings).min(max);
    base.mul_f64(1.0 + 0.25 * jitter.clamp(0.0, 1.0))
}

/// A number in [0, 1) from the OS's randomness (a v4 UUID is 122 random bits).
pub fn jitter() -> f64 {
    (uuid::Uuid::new_v4().as_u128() >> 75) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIRST: Duration = Duration::from_secs(5);
    const MAX: Duration = Duration::from_secs(3600);

    #[test]
    fn the_first_retry_comes_within_seconds_and_each_later_one_waits_twice_as_long_up_to_the_cap() {
        assert_eq!(delay(1, FIRST, MAX, 0.0), Duration::from_secs(5));
        assert_eq!(delay(2, FIRST, MAX, 0.0), Duration::from_secs(10));
        assert_eq!(delay(5, FIRST, MAX, 0.0), Duration::from_secs(80));
        assert_eq!(delay(11, FIRST, MAX, 0.0), MAX);
        assert_eq!(delay(u32::MAX, FIRST, MAX, 0.0), MAX);
        // A delivery that never failed waits as after one failure.
        assert_eq!(delay(0, FIRST, MAX, 0.0), FIRST);
    }

    #[test]
    fn jitter_stretches_a_wait_by_at_most_a_quarter() {
        assert_eq!(delay(1, FIRST, MAX, 1.0), Duration::from_millis(6250));
        assert_eq!(delay(20, FIRST, MAX, 5.0), MAX.mul_f64(1.25));
        for _ in 0..1000 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j), "{j}");
        }
    }
}
