//! What an operator reads about orders (`entitle order`, `entitle review`): one order's row, the
//! events applied to it, and every credit and entitlement change it caused from `credit_ledger`
//! and `entitlement_history`; and the orders waiting for a person.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

pub struct OrderSummary {
    pub user_id: String,
    pub plan_id: String,
    /// As stored, so the report shows exactly what the row says.
    pub status: String,
    pub amount: i64,
    pub amount_refunded: i64,
    pub currency: String,
    pub created_at: DateTime<Utc>,
    pub paid_at: Option<DateTime<Utc>>,
}

pub async fn summary(db: &PgPool, order_id: Uuid) -> Result<Option<OrderSummary>, sqlx::Error> {
    sqlx::query_as!(
        OrderSummary,
        "select user_id, plan_id, status, amount, amount_refunded, currency, created_at, paid_at
         from orders where id = $1",
        order_id
    )
    .fetch_optional(db)
    .await
}

pub struct AppliedEvent {
    pub event_id: String,
    pub event_type: String,
    /// As stored, for display only: history keeps the words older versions wrote too, which
    /// `Outcome` need not parse.
    pub outcome: String,
    pub received_at: DateTime<Utc>,
}

/// The events applied to the order, in the order they arrived.
pub async fn applied_events(db: &PgPool, order_id: Uuid) -> Result<Vec<AppliedEvent>, sqlx::Error> {
    sqlx::query_as!(
        AppliedEvent,
        "select event_id, event_type, outcome, received_at from processed_webhook_events
         where order_id = $1 order by received_at, event_id",
        order_id
    )
    .fetch_all(db)
    .await
}

/// One change to what the order gives, in words, with the event that caused it (none for a path
/// that had no event, such as the return page's sync).
pub struct Change {
    pub stripe_event_id: Option<String>,
    pub change: String,
    pub created_at: DateTime<Utc>,
}

/// The ledger's and the entitlement history's rows for the order, as one list in time order.
pub async fn changes(db: &PgPool, order_id: Uuid) -> Result<Vec<Change>, sqlx::Error> {
    sqlx::query_as!(
        Change,
        r#"select stripe_event_id as "stripe_event_id?",
                  format('credits %s (%s)', case when delta > 0 then '+' || delta else delta::text end, kind) as "change!",
                  created_at as "created_at!"
           from credit_ledger where order_id = $1
           union all
           select stripe_event_id, format('entitlement %s: %s%s', key, change, coalesce(' - ' || detail, '')), created_at
           from entitlement_history where order_id = $1
           order by 3"#,
        order_id
    )
    .fetch_all(db)
    .await
}

/// An order whose payment did not match it: nothing was granted.
pub struct UnderReview {
    pub id: Uuid,
    pub user_id: String,
    pub plan_id: String,
    pub updated_at: DateTime<Utc>,
    pub review_reason: Option<String>,
}

pub async fn under_review(db: &PgPool) -> Result<Vec<UnderReview>, sqlx::Error> {
    sqlx::query_as!(
        UnderReview,
        "select id, user_id, plan_id, updated_at, review_reason from orders
         where status = 'under_review' order by created_at"
    )
    .fetch_all(db)
    .await
}
