//! What a user holds now, as both readers show it: the buyer's `GET /entitlements` and the app
//! backend's `/v1/` balance and check. An entitlement's status and whether it grants access come
//! from `entitlement::access`, the one rule for both.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::{db, entitlement, store::entitlements};

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EntitlementView {
    pub key: String,
    /// `active`, `past_due`, `suspended`, `revoked`, or `expired` once the paid period (plus the
    /// grace) is over and Stripe has not said more.
    pub status: String,
    /// Whether it grants access now.
    pub active: bool,
    pub current_period_end: Option<DateTime<Utc>>,
    pub cancel_at_period_end: bool,
}

impl EntitlementView {
    /// What `held` means at `now`.
    pub fn at(held: entitlements::Held, now: DateTime<Utc>, grace: Duration) -> Self {
        let access = entitlement::access(
            held.status,
            held.current_period_end,
            held.cancel_at_period_end,
            now,
            grace,
        );
        Self {
            key: held.key,
            status: if access.lapsed { "expired" } else { held.status.as_str() }.to_owned(),
            active: access.active,
            current_period_end: held.current_period_end,
            cancel_at_period_end: held.cancel_at_period_end,
        }
    }
}

/// Every entitlement the user has, by key.
pub async fn entitlements(db: &PgPool, user_id: &str, grace: Duration) -> Result<Vec<EntitlementView>, sqlx::Error> {
    let now = Utc::now();
    Ok(db::retry_idempotent(db, || entitlements::held(db, user_id))
        .await?
        .into_iter()
        .map(|held| EntitlementView::at(held, now, grace))
        .collect())
}

/// The user's entitlement to `key`, if they have one.
pub async fn entitlement(
    db: &PgPool,
    user_id: &str,
    key: &str,
    grace: Duration,
) -> Result<Option<EntitlementView>, sqlx::Error> {
    let held = db::retry_idempotent(db, || entitlements::held_key(db, user_id, key)).await?;
    Ok(held.map(|held| EntitlementView::at(held, Utc::now(), grace)))
}
