//! A token bucket for calls to Stripe that users can trigger (polling a return page), so no number
//! of browsers can spend the account's rate limit (25 requests per second per endpoint in live
//! mode) that webhooks and checkout need. Per process: with several instances, the cap multiplies,
//! which is why it sits far below Stripe's.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

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
        let mut bucket = self.bucket.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (tokens, last) = &mut *bucket;
        let now = Instant::now();
        let refill = now.saturating_duration_since(*last).as_secs_f64() * self.per_second;
        *tokens = (*tokens + refill).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// How long until the next token, for tests and logs.
    pub fn interval(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.per_second)
    }
}

#[cfg(test)]
mod tests {
    use super::RateLimit;

    #[test]
    fn a_burst_is_allowed_and_then_refused_until_tokens_refill() {
        let limit = RateLimit::new(1.0, 3);
        assert!((0..3).all(|_| limit.try_acquire()));
        assert!(!limit.try_acquire());
        std::thread::sleep(limit.interval());
        assert!(limit.try_acquire());
    }
}
