//! `user_versions` (written by the outbox triggers) read with what it numbers: a user's credits
//! and entitlements, in one statement, so the version and the state come from one snapshot.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::entitlement::EntitlementStatus;

/// One row per entitlement of each user asked about (one without any for a user who has none),
/// each with the user's version and credits beside it.
pub struct HoldingsRow {
    pub user_id: String,
    pub version: i64,
    pub available: i64,
    pub overdrawn: i64,
    pub key: Option<String>,
    pub status: Option<EntitlementStatus>,
    pub current_period_end: Option<DateTime<Utc>>,
    pub cancel_at_period_end: Option<bool>,
}

/// The credits are the account's totals as of its last change (see credit_accounts); an expiry
/// that fell due since is written by the next read or the sweep, and is a change of its own.
/// Several users in one statement, so a batch of senders costs one round trip, not one each.
pub async fn holdings_of(db: &PgPool, user_ids: &[String]) -> Result<Vec<HoldingsRow>, sqlx::Error> {
    sqlx::query_as!(
        HoldingsRow,
        r#"select u.user_id as "user_id!", coalesce(v.version, 0) as "version!",
                  coalesce(a.available, 0) as "available!", coalesce(a.overdrawn, 0) as "overdrawn!",
                  e.key as "key?", e.status as "status?: EntitlementStatus",
                  e.current_period_end as "current_period_end?", e.cancel_at_period_end as "cancel_at_period_end?"
           from (select distinct user_id from unnest($1::text[]) as asked (user_id)) u
           left join user_versions v on v.user_id = u.user_id
           left join credit_accounts a on a.user_id = u.user_id
           left join entitlements e on e.user_id = u.user_id
           order by u.user_id, e.key"#,
        user_ids
    )
    .fetch_all(db)
    .await
}
