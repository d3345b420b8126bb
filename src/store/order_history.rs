//! What an operator reads about orders (`entitle order`, `entitle review`): one order's row, the
//! events applied to it, and every credit and entitlement change it caused from `credit_ledger`
//! and `entitlement_history`; and the orders waiting for a person.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

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

/// An order's whole row, as `entitle order` and the dashboard show it.
pub struct OrderDetail {
    pub id: Uuid,
    pub user_id: String,
    pub plan_id: String,
    /// As stored, so the report and the page show exactly what the row says.
    pub status: String,
    pub amount: i64,
    pub amount_refunded: i64,
    pub currency: String,
    pub hold: Option<String>,
    pub review_reason: Option<String>,
    pub stripe_checkout_session_id: Option<String>,
    pub stripe_payment_intent_id: Option<String>,
    pub stripe_subscription_id: Option<String>,
    pub stripe_customer_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub paid_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

pub async fn detail(db: &PgPool, order_id: Uuid) -> Result<Option<OrderDetail>, sqlx::Error> {
    sqlx::query_as!(
        OrderDetail,
        "select id, user_id, plan_id, status, amount, amount_refunded, currency, hold, review_reason,
                stripe_checkout_session_id, stripe_payment_intent_id, stripe_subscription_id,
                stripe_customer_id, created_at, paid_at, updated_at
         from orders where id = $1",
        order_id
    )
    .fetch_optional(db)
    .await
}

/// One line of a list of orders.
pub struct OrderBrief {
    pub id: Uuid,
    pub user_id: String,
    pub plan_id: String,
    pub status: String,
    pub amount: i64,
    pub currency: String,
    pub created_at: DateTime<Utc>,
}

/// The orders a Stripe id names: its checkout session, payment intent, subscription or customer.
/// A payment intent of a subscription's renewal is on no order; it names the order through the
/// subscription it paid for (`subscription_payments`).
pub async fn matching_stripe_id(db: &PgPool, stripe_id: &str, limit: i64) -> Result<Vec<OrderBrief>, sqlx::Error> {
    sqlx::query_as!(
        OrderBrief,
        "select id, user_id, plan_id, status, amount, currency, created_at from orders
         where stripe_checkout_session_id = $1
            or stripe_payment_intent_id = $1
            or stripe_subscription_id = $1
            or stripe_subscription_id = (select stripe_subscription_id from subscription_payments
                                         where stripe_payment_intent_id = $1)
            or stripe_customer_id = $1
         order by created_at desc, id
         limit $2",
        stripe_id,
        limit
    )
    .fetch_all(db)
    .await
}

/// The user's orders, newest first.
pub async fn of_user(db: &PgPool, user_id: &str, limit: i64) -> Result<Vec<OrderBrief>, sqlx::Error> {
    sqlx::query_as!(
        OrderBrief,
        "select id, user_id, plan_id, status, amount, currency, created_at from orders
         where user_id = $1 order by created_at desc, id limit $2",
        user_id,
        limit
    )
    .fetch_all(db)
    .await
}
