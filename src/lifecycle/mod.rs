//! What happens to a purchase after checkout: a subscription renews, fails, changes or ends; a
//! payment is refunded or disputed. `fulfillment::process_event` hands every event that is not a
//! checkout session's here, inside the event's transaction.

pub mod disputes;
pub mod entitlement_state;
pub mod payment_owner;
pub mod refunds;
pub mod subscriptions;

use sqlx::PgConnection;
use uuid::Uuid;

use crate::{error::AppError, fulfillment::Outcome, stripe::event::WebhookEvent};

/// Every event type the service acts on; the reconciler asks Stripe for exactly these.
pub const HANDLED_EVENT_TYPES: &[&str] = &[
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
    "checkout.session.expired",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "invoice.paid",
    "invoice.payment_failed",
    "charge.refunded",
    "charge.dispute.created",
    "charge.dispute.closed",
];

pub async fn apply_lifecycle_event(
    conn: &mut PgConnection,
    stripe: &stripe::Client,
    event: &WebhookEvent,
) -> Result<(Outcome, Option<Uuid>), AppError> {
    match event.event_type.as_str() {
        "customer.subscription.created"
        | "customer.subscription.updated"
        | "customer.subscription.deleted"
        | "invoice.paid"
        | "invoice.payment_failed" => subscriptions::apply_subscription_event(conn, stripe, event).await,
        "charge.refunded" => Ok(refunds::apply_charge_refunded(conn, event).await?),
        "charge.dispute.created" | "charge.dispute.closed" => Ok(disputes::apply_dispute_event(conn, event).await?),
        _ => Ok((Outcome::IgnoredType, None)),
    }
}
