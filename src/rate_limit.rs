//! Token buckets for calls to Stripe that users can trigger (opening checkouts, polling a return
//! page), so no number of browsers can spend the account's rate limit (25 requests per second per
//! endpoint in live mode) that webhooks need. `RateLimit` is per process: with several instances
//! its cap multiplies, which is why its defaults sit far below Stripe's. `SharedRateLimit` keeps
//! its bucket in the database, so its cap is the fleet's total.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use sqlx::PgPool;

use crate::{config::Rate, store::rate_buckets};

/// A token bucket in `rate_buckets`, shared by every instance on the database.
#[derive(Clone, Debug)]
pub struct SharedRateLimit {
    /// The bucket's row.
    name: &'static str,
    rate: Rate,
}

impl SharedRateLimit {
    pub fn new(name: &'static str, rate: Rate) -> Self {
        Self { name, rate }
    }

    /// Takes a token if the fleet has one left; never waits for one.
    pub async fn try_acquire(&self, pool: &PgPool) -> Result<bool, sqlx::Error> {
        // An empty bucket (burst 0, a test's) never holds a whole token.
        if self.rate.burst == 0 {
            return Ok(false);
        }
        let (per_second, burst) = (self.rate.per_second, f64::from(self.rate.burst));
        // Not retried after a lost connection: a take that did commit would count twice.
        rate_buckets::try_take(pool, self.name, per_second, burst).await
    }
}

pub struct RateLimit {
    per_second: f64,
    burst: f64,
    bucket: Mutex<(f64, Instant)>,
}

impl RateLimit {
    pub fn new(per_second: f64, burst: u32) -> Self {
        let burst = f64::from(burst);
        Self {
            per_second,
            burst,
            bucket: Mutex::new((burst, Instant::now())),
        }
    }

    /// Takes a token if one is left; never waits.
    pub fn try_acquire(&self) -> bool {
        self.try_take().is_ok()
    }

    /// Takes a token if one is left, or says how long until the next one arrives; never waits.
    pub fn try_take(&self) -> Result<(), Duration> {
        let mut bucket = self.bucket.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (tokens, last) = &mut *bucket;
        let now = Instant::now();
        let refill = now.saturating_duration_since(*last).as_secs_f64() * self.per_second;
        *tokens = (*tokens + refill).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            // A bucket that never refills (rate 0) answers "not for a long time", not a panic.
            Err(Duration::try_from_secs_f64((1.0 - *tokens) / self.per_second).unwrap_or(Duration::MAX))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::RateLimit;

    #[test]
    fn a_burst_is_allowed_and_then_refused_until_tokens_refill() {
        let limit = RateLimit::new(1.0, 3);
        assert!((0..3).all(|_| limit.try_acquire()));
        assert!(!limit.try_acquire());
        std::thread::sleep(Duration::from_secs(1));
        assert!(limit.try_acquire());
    }

    #[test]
    fn a_refusal_says_when_the_next_token_arrives() {
        let limit = RateLimit::new(0.001, 1);
        assert_eq!(limit.try_take(), Ok(()));
        let wait = limit.try_take().unwrap_err();
        assert!(
            wait > Duration::from_secs(990) && wait <= Duration::from_secs(1000),
            "{wait:?}"
        );
        assert!(RateLimit::new(0.0, 0).try_take().is_err());
    }
}
