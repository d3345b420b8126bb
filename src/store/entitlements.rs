//! `entitlements` (what a user holds now, one row per key) and `entitlement_history` (every change,
//! naming its event), with the read of every order that grants a key.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::orders::Hold;

/// The row as stored, read under its lock.
pub struct Stored {
    pub status: String,
    pub order_id: Option<Uuid>,
    pub current_period_end: Option<DateTime<Utc>>,
    pub cancel_at_period_end: bool,
}

pub async fn lock_stored(conn: &mut PgConnection, user_id: &str, key: &str) -> Result<Option<Stored>, sqlx::Error> {
    sqlx::query_as!(
        Stored,
        "select status, order_id, current_period_end, cancel_at_period_end
         from entitlements where user_id = $1 and key = $2 for update",
        user_id,
        key
    )
    .fetch_optional(conn)
    .await
}

/// Whether the user holds the key through a subscription that still bills: a second one would bill
/// twice for one entitlement.
pub async fn held_by_live_subscription(
    conn: &mut PgConnection,
    user_id: &str,
    key: Option<&str>,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"select exists (
               select 1 from entitlements
               where user_id = $1 and key = $2 and stripe_subscription_id is not null
                 and status in ('active', 'past_due')
                 and (current_period_end is null or current_period_end > now())) as "exists!""#,
        user_id,
        key
    )
    .fetch_one(conn)
    .await
}

/// One fulfilled order's claim on a key: its hold and its subscription as Stripe last said.
pub struct Grant {
    pub order_id: Uuid,
    pub hold: Option<Hold>,
    pub stripe_subscription_id: Option<String>,
    pub stripe_status: Option<String>,
    pub current_period_end: Option<DateTime<Utc>>,
    pub cancel_at_period_end: Option<bool>,
}

pub async fn grants(conn: &mut PgConnection, user_id: &str, key: &str) -> Result<Vec<Grant>, sqlx::Error> {
    sqlx::query_as!(
        Grant,
        r#"select o.id as order_id, o.hold as "hold: Hold", o.stripe_subscription_id,
                  s.status as "stripe_status?", s.current_period_end as "current_period_end?",
                  s.cancel_at_period_end as "cancel_at_period_end?"
           from orders o
           left join subscriptions s on s.stripe_subscription_id = o.stripe_subscription_id
           where o.user_id = $1 and o.entitlement = $2 and o.status in ('paid', 'refunded', 'disputed')"#,
        user_id,
        key
    )
    .fetch_all(conn)
    .await
}

/// The entitlement as derived, written whole.
pub struct Derived<'a> {
    pub status: &'a str,
    pub stripe_subscription_id: Option<&'a str>,
    pub order_id: Uuid,
    pub current_period_end: Option<DateTime<Utc>>,
    pub cancel_at_period_end: bool,
    pub hold: Option<Hold>,
}

pub async fn write(
    conn: &mut PgConnection,
    user_id: &str,
    key: &str,
    derived: &Derived<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "insert into entitlements as e
             (user_id, key, status, stripe_subscription_id, order_id, current_period_end, cancel_at_period_end, hold)
         values ($1, $2, $3, $4, $5, $6, $7, $8)
         on conflict (user_id, key) do update set
             status = excluded.status, stripe_subscription_id = excluded.stripe_subscription_id,
             order_id = excluded.order_id, current_period_end = excluded.current_period_end,
             cancel_at_period_end = excluded.cancel_at_period_end, hold = excluded.hold, updated_at = now()",
        user_id,
        key,
        derived.status,
        derived.stripe_subscription_id,
        derived.order_id,
        derived.current_period_end,
        derived.cancel_at_period_end,
        derived.hold as Option<Hold>,
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub struct Change<'a> {
    pub user_id: &'a str,
    pub key: &'a str,
    pub order_id: Uuid,
    pub change: &'a str,
    pub event_id: &'a str,
    pub detail: Option<&'a str>,
}

/// A history row; `grant` at most once per order (a unique index), so a second grant adds nothing.
pub async fn record(conn: &mut PgConnection, change: &Change<'_>) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "insert into entitlement_history (user_id, key, order_id, change, stripe_event_id, detail)
         values ($1, $2, $3, $4, $5, $6)
         on conflict do nothing",
        change.user_id,
        change.key,
        change.order_id,
        change.change,
        change.event_id,
        change.detail,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Whose order it is and which key it grants.
pub async fn grantee(conn: &mut PgConnection, order_id: Uuid) -> Result<Option<(String, Option<String>)>, sqlx::Error> {
    let row = sqlx::query!("select user_id, entitlement from orders where id = $1", order_id)
        .fetch_optional(conn)
        .await?;
    Ok(row.map(|r| (r.user_id, r.entitlement)))
}

/// An entitlement as the user sees it now, by the database's clock.
pub struct Held {
    pub key: String,
    /// `expired` once a subscription's period and grace ran out, else as stored.
    pub status: String,
    /// Whether it grants access now.
    pub active: bool,
    pub current_period_end: Option<DateTime<Utc>>,
    pub cancel_at_period_end: bool,
}

/// Every entitlement of the user, by key. A subscription's grants until its period end plus
/// `grace` (just the period end once it is set to cancel); past that it reads `expired` until
/// Stripe tells us more. The clock is the database's, the one that stamped the period ends.
pub async fn held_now(db: &PgPool, user_id: &str, grace: Duration) -> Result<Vec<Held>, sqlx::Error> {
    sqlx::query_as!(
        Held,
        r#"select key as "key!", case when lapsed then 'expired' else status end as "status!",
                  status in ('active', 'past_due') and not lapsed as "active!",
                  current_period_end, cancel_at_period_end as "cancel_at_period_end!"
           from (
               select *, status in ('active', 'past_due') and current_period_end is not null
                         and now() >= current_period_end
                             + case when cancel_at_period_end then interval '0' else make_interval(secs => $2) end
                         as lapsed
               from entitlements where user_id = $1
           ) e
           order by key"#,
        user_id,
        grace.as_secs_f64()
    )
    .fetch_all(db)
    .await
}
