//! Which order a Stripe payment belongs to, for refunds and disputes, which name only the charge's
//! payment intent: a one-time order stored it at checkout; a subscription's payments were recorded
//! as their invoices were paid.

use sqlx::PgConnection;
use uuid::Uuid;

pub struct LockedPaidOrder {
    pub id: Uuid,
    pub user_id: String,
    pub status: crate::orders::OrderStatus,
    /// Whether the payment paid for a subscription (a renewal, or its first invoice).
    pub via_subscription: bool,
}

/// Finds and locks the order the payment intent paid for (`no key update`, as checkout does, so
/// rows referencing the order can still be inserted by other events).
pub async fn lock_order_for_payment(
    conn: &mut PgConnection,
    payment_intent_id: &str,
) -> Result<Option<LockedPaidOrder>, sqlx::Error> {
    let one_time: Option<Uuid> = sqlx::query_scalar("select id from orders where stripe_payment_intent_id = $1")
        .bind(payment_intent_id)
        .fetch_optional(&mut *conn)
        .await?;
    let (order_id, via_subscription) = match one_time {
        Some(id) => (id, false),
        None => {
            let by_subscription: Option<Option<Uuid>> = sqlx::query_scalar(
                "select coalesce(s.order_id, o.id)
                 from subscription_payments p
                 left join subscriptions s on s.stripe_subscription_id = p.stripe_subscription_id
                 left join orders o on o.stripe_subscription_id = p.stripe_subscription_id
                 where p.stripe_payment_intent_id = $1
                 limit 1",
            )
            .bind(payment_intent_id)
            .fetch_optional(&mut *conn)
            .await?;
            match by_subscription.flatten() {
                Some(id) => (id, true),
                None => return Ok(None),
            }
        }
    };
    let row: Option<(String, crate::orders::OrderStatus)> =
        sqlx::query_as("select user_id, status from orders where id = $1 for no key update")
            .bind(order_id)
            .fetch_optional(conn)
            .await?;
    Ok(row.map(|(user_id, status)| LockedPaidOrder {
        id: order_id,
        user_id,
        status,
        via_subscription,
    }))
}
