//! What happens to a purchase after checkout: a subscription renews, fails, changes or ends; a
//! payment is refunded or disputed. `fulfillment::process_event` hands every event that is not a
//! checkout session's here, inside the event's transaction. Nothing here calls Stripe: what a
//! subscription event needs from it is fetched before the transaction opens.

pub mod entitlement_state;
pub mod payment_facts;
pub mod payment_owner;
pub mod reversals;
pub mod subscriptions;

use sqlx::PgConnection;
use uuid::Uuid;

use crate::{domain_error::DomainError, outcome::Outcome, stripe::event::WebhookEvent};
use subscriptions::FetchedForEvent;

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
    "charge.refund.updated",
    "refund.created",
    "refund.updated",
    "refund.failed",
    "charge.dispute.created",
    "charge.dispute.updated",
    "charge.dispute.closed",
    "charge.dispute.funds_withdrawn",
    "charge.dispute.funds_reinstated",
];

/// Applies an event inside its transaction. `fetched` is what a subscription event needed from
/// Stripe (`subscriptions::fetch_for_event`, before the transaction); the others need nothing.
pub async fn apply_lifecycle_event(
    conn: &mut PgConnection,
    event: &WebhookEvent,
    fetched: Option<FetchedForEvent>,
) -> Result<(Outcome, Option<Uuid>), DomainError> {
    if let Some(fetched) = fetched {
        return subscriptions::apply_subscription_event(conn, event, fetched).await;
    }
    let event_type = event.event_type.as_str();
    if reversals::REFUND_EVENT_TYPES.contains(&event_type) || reversals::DISPUTE_EVENT_TYPES.contains(&event_type) {
        return Ok(reversals::apply_reversal_event(conn, event).await?);
    }
    Ok((Outcome::IgnoredType, None))
}

#[cfg(test)]
mod tests {
    use super::{HANDLED_EVENT_TYPES, reversals, subscriptions::SUBSCRIPTION_EVENT_TYPES};

    #[test]
    fn every_event_type_acted_on_is_one_the_reconciler_asks_for() {
        for event_type in SUBSCRIPTION_EVENT_TYPES
            .iter()
            .chain(reversals::REFUND_EVENT_TYPES)
            .chain(reversals::DISPUTE_EVENT_TYPES)
        {
            assert!(HANDLED_EVENT_TYPES.contains(event_type), "{event_type}");
        }
    }
}
