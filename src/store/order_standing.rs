//! The part of `orders` that reversals derive: status, amount refunded and hold, with the order's
//! payments (its own payment intent, or its subscription's invoices').

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::orders::{Hold, OrderStatus};

/// What settling an order needs to know about it now.
pub struct StandingRow {
    pub amount: i64,
    pub amount_refunded: i64,
    pub hold: Option<Hold>,
    /// A full refund or lost dispute from before reversal facts were kept: it stands for good.
    pub legacy_hold: Option<Hold>,
    pub entitlement: Option<String>,
    /// Set when the payment did not match the order; `paid_at` stays empty until it is granted.
    pub review_reason: Option<String>,
    pub paid_at: Option<DateTime<Utc>>,
}

pub async fn standing(conn: &mut PgConnection, order_id: Uuid) -> Result<StandingRow, sqlx::Error> {
    sqlx::query_as!(
        StandingRow,
        r#"select amount, amount_refunded, hold as "hold: Hold", legacy_hold as "legacy_hold: Hold", entitlement,
                  review_reason, paid_at
           from orders where id = $1"#,
        order_id
    )
    .fetch_one(conn)
    .await
}

/// Writes the derived standing; `notify` wakes the long-polls waiting on the order (its status
/// changed). Postgres delivers the notification at commit and drops it on rollback.
pub async fn set_standing(
    conn: &mut PgConnection,
    order_id: Uuid,
    status: OrderStatus,
    amount_refunded: i64,
    hold: Option<Hold>,
    notify: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update orders set status = $2, amount_refunded = $3, hold = $4, updated_at = now() where id = $1
         returning case when $5 then pg_notify('order_status', id::text) end",
        order_id,
        status as OrderStatus,
        amount_refunded,
        hold as Option<Hold>,
        notify
    )
    .fetch_all(conn)
    .await?;
    Ok(())
}

/// The payment intents that paid for the order: a one-time order's own, a subscription's invoices'.
pub async fn payment_intents_of(conn: &mut PgConnection, order_id: Uuid) -> Result<Vec<String>, sqlx::Error> {
    let intents = sqlx::query_scalar!(
        r#"select stripe_payment_intent_id as "id!" from orders
           where id = $1 and stripe_payment_intent_id is not null
           union
           select p.stripe_payment_intent_id
           from subscription_payments p
           left join subscriptions s on s.stripe_subscription_id = p.stripe_subscription_id
           left join orders o on o.stripe_subscription_id = p.stripe_subscription_id
           where coalesce(s.order_id, o.id) = $1"#,
        order_id
    )
    .fetch_all(conn)
    .await?;
    Ok(intents)
}

/// The order a payment intent paid for: a one-time order's own, else the subscription's whose
/// invoice it paid.
pub async fn order_for_payment(conn: &mut PgConnection, payment_intent: &str) -> Result<Option<Uuid>, sqlx::Error> {
    let one_time = sqlx::query_scalar!(
        "select id from orders where stripe_payment_intent_id = $1",
        payment_intent
    )
    .fetch_optional(&mut *conn)
    .await?;
    if one_time.is_some() {
        return Ok(one_time);
    }
    let by_subscription = sqlx::query_scalar!(
        "select coalesce(s.order_id, o.id)
         from subscription_payments p
         left join subscriptions s on s.stripe_subscription_id = p.stripe_subscription_id
         left join orders o on o.stripe_subscription_id = p.stripe_subscription_id
         where p.stripe_payment_intent_id = $1
         limit 1",
        payment_intent
    )
    .fetch_optional(conn)
    .await?;
    Ok(by_subscription.flatten())
}

/// Whose order it is and where it stands.
pub struct Owner {
    pub user_id: String,
    pub status: OrderStatus,
}

/// The order's owner and status, read without a lock (the caller already holds what it needs).
pub async fn owner(conn: &mut PgConnection, order_id: Uuid) -> Result<Option<Owner>, sqlx::Error> {
    sqlx::query_as!(
        Owner,
        r#"select user_id, status as "status: OrderStatus" from orders where id = $1"#,
        order_id
    )
    .fetch_optional(conn)
    .await
}

/// Locks the order `for no key update`: it serialises every change to the order yet lets other
/// transactions insert rows that reference it (their foreign-key check takes `key share`).
pub async fn lock(conn: &mut PgConnection, order_id: Uuid) -> Result<Option<Owner>, sqlx::Error> {
    sqlx::query_as!(
        Owner,
        r#"select user_id, status as "status: OrderStatus" from orders where id = $1 for no key update"#,
        order_id
    )
    .fetch_optional(conn)
    .await
}
