//! Which order a Stripe payment belongs to, for refunds and disputes, which name only the charge's
//! payment intent: a one-time order stored it at checkout; a subscription's payments were recorded
//! as their invoices were paid.

use sqlx::PgConnection;
use uuid::Uuid;

use crate::store::order_standing;

pub struct LockedPaidOrder {
    pub id: Uuid,
    pub user_id: String,
    pub status: crate::orders::OrderStatus,
}

/// Finds and locks the order the payment intent paid for.
pub async fn lock_order_for_payment(
    conn: &mut PgConnection,
    payment_intent_id: &str,
) -> Result<Option<LockedPaidOrder>, sqlx::Error> {
    let Some(order_id) = order_standing::order_for_payment(conn, payment_intent_id).await? else {
        return Ok(None);
    };
    let locked = order_standing::lock(conn, order_id).await?;
    Ok(locked.map(|owner| LockedPaidOrder {
        id: order_id,
        user_id: owner.user_id,
        status: owner.status,
    }))
}
