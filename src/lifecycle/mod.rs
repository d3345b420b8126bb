//! What happens to a purchase after checkout: a subscription renews, fails, changes or ends; a
//! payment is refunded or disputed. `fulfillment::process_event` hands every event that is not a
//! checkout session's here, inside the event's transaction. Nothing here calls Stripe: what a
//! subscription event needs from it is fetched before the transaction opens.

pub mod entitlement_state;
pub mod payment_facts;
pub mod payment_owner;
pub mod plan_changes;
pub mod reversals;
pub mod subscriptions;

use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    domain_error::DomainError,
    outcome::Outcome,
    stripe::event::{EventKind, WebhookEvent},
};
use subscriptions::FetchedForEvent;

/// Applies an event inside its transaction. `fetched` is what a subscription event needed from
/// Stripe (`subscriptions::fetch_for_event`, before the transaction); the others need nothing.
pub async fn apply_lifecycle_event(
    conn: &mut PgConnection,
    event: &WebhookEvent,
    kind: EventKind,
    fetched: Option<FetchedForEvent>,
) -> Result<(Outcome, Option<Uuid>), DomainError> {
    if let Some(fetched) = fetched {
        return subscriptions::apply_subscription_event(conn, event, fetched).await;
    }
    if kind.is_refund() || kind.is_dispute() {
        return Ok(reversals::apply_reversal_event(conn, event, kind).await?);
    }
    Ok((Outcome::IgnoredType, None))
}
