//! `entitlements` (what a user holds now, one row per key) and `entitlement_history` (every change,
//! naming its event), with the read of every order that grants a key.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::{
    entitlement::{EntitlementChange, EntitlementStatus},
    orders::Hold,
};

/// The row as stored, read under its lock.
pub struct Stored {
    pub status: EntitlementStatus,
    pub order_id: Option<Uuid>,
    pub current_period_end: Option<DateTime<Utc>>,
    pub cancel_at_period_end: bool,
}

pub async fn lock_stored(conn: &mut PgConnection, user_id: &str, key: &str) -> Result<Option<Stored>, sqlx::Error> {
    sqlx::query_as!(
        Stored,
        r#"select status as "status: EntitlementStatus", order_id, current_period_end, cancel_at_period_end
           from entitlements where user_id = $1 and key = $2 for update"#,
        user_id,
        key
    )
    .fetch_optional(conn)
    .await
}

/// The user's entitlement to `key` if a subscription backs it, for checkout's "already
/// subscribed" check (which applies `entitlement::access` to it).
pub async fn subscribed(conn: &mut PgConnection, user_id: &str, key: &str) -> Result<Option<Held>, sqlx::Error> {
    sqlx::query_as!(
        Held,
        r#"select key, status as "status: EntitlementStatus", current_period_end, cancel_at_period_end
           from entitlements
           where user_id = $1 and key = $2 and stripe_subscription_id is not null"#,
        user_id,
        key
    )
    .fetch_optional(conn)
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
    pub status: EntitlementStatus,
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
        derived.status as EntitlementStatus,
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
    pub change: EntitlementChange,
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
        change.change as EntitlementChange,
        change.event_id,
        change.detail,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Whose order it is and which key it grants.
pub struct Grantee {
    pub user_id: String,
    pub entitlement: Option<String>,
}

pub async fn grantee(conn: &mut PgConnection, order_id: Uuid) -> Result<Option<Grantee>, sqlx::Error> {
    sqlx::query_as!(
        Grantee,
        "select user_id, entitlement from orders where id = $1",
        order_id
    )
    .fetch_optional(conn)
    .await
}

/// An entitlement as the user sees it now, by the database's clock.
pub struct Held {
    pub key: String,
    pub status: EntitlementStatus,
    pub current_period_end: Option<DateTime<Utc>>,
    pub cancel_at_period_end: bool,
}

/// Every entitlement of the user, by key, as stored; `entitlement::access` says what each grants now.
pub async fn held(db: &PgPool, user_id: &str) -> Result<Vec<Held>, sqlx::Error> {
    sqlx::query_as!(
        Held,
        r#"select key, status as "status: EntitlementStatus", current_period_end, cancel_at_period_end
           from entitlements where user_id = $1 order by key"#,
        user_id
    )
    .fetch_all(db)
    .await
}

/// The user's entitlement to one key, for `/v1/check`.
pub async fn held_key(db: &PgPool, user_id: &str, key: &str) -> Result<Option<Held>, sqlx::Error> {
    sqlx::query_as!(
        Held,
        r#"select key, status as "status: EntitlementStatus", current_period_end, cancel_at_period_end
           from entitlements where user_id = $1 and key = $2"#,
        user_id,
        key
    )
    .fetch_optional(db)
    .await
}
