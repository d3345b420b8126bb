//! Bounds on opening checkouts, each of which writes an order and costs a Stripe call: per user,
//! counted in the database so the bound holds across instances and concurrent requests, and per
//! process, a token bucket so no crowd of buyers spends the Stripe rate limit webhooks need.
//! A refused checkout has written nothing and asked Stripe nothing.

use std::time::Duration;

use sqlx::PgConnection;

use crate::{config::CheckoutLimits, domain_error::DomainError, rate_limit::RateLimit, store};

/// The per-user window slides: what counts is the orders of the last 60 seconds, whatever became
/// of them, so a buyer who abandoned a few checkouts waits at most this long.
const WINDOW: Duration = Duration::from_secs(60);

pub struct CheckoutLimiter {
    per_user: u32,
    sessions: RateLimit,
}

impl CheckoutLimiter {
    pub fn new(limits: &CheckoutLimits) -> Self {
        Self {
            per_user: limits.per_user_per_minute,
            sessions: RateLimit::new(limits.sessions.per_second, limits.sessions.burst),
        }
    }

    /// Lets one more checkout by `user_id` through, or refuses it with when to retry. Runs in the
    /// transaction that then inserts the order: its lock makes one user's concurrent checkouts
    /// count one after another, each seeing the orders committed before it.
    pub async fn admit(&self, tx: &mut PgConnection, user_id: &str) -> Result<(), DomainError> {
        store::orders::lock_user_checkouts(tx, user_id).await?;
        let room_in =
            store::orders::seconds_until_room(tx, user_id, WINDOW.as_secs_f64(), i64::from(self.per_user)).await?;
        if let Some(seconds) = room_in {
            let retry_after_secs = whole_seconds(seconds);
            return Err(DomainError::TooManyRequests {
                code: "too_many_checkouts",
                message: format!(
                    "You opened {} checkouts in the last minute. Please try again in {retry_after_secs} s.",
                    self.per_user
                ),
                retry_after_secs,
            });
        }
        // Taken last, so a user over their own limit does not spend others' share.
        self.sessions.try_take().map_err(|wait| {
            let retry_after_secs = whole_seconds(wait.as_secs_f64());
            tracing::warn!(
                retry_after_secs,
                "checkout refused: this process's Stripe session rate is spent"
            );
            DomainError::TooManyRequests {
                code: "too_many_checkouts",
                message: format!(
                    "Too many checkouts are being opened right now. Please try again in {retry_after_secs} s."
                ),
                retry_after_secs,
            }
        })
    }
}

/// `Retry-After` takes whole seconds; rounding up means a retry on time is never early.
fn whole_seconds(seconds: f64) -> u64 {
    seconds.ceil().max(1.0) as u64
}
