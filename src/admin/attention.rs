//! The lists that need a person, each item with the operator command that deals with it: orders
//! whose payment did not match (under review), missed events the reconciler set aside or keeps
//! failing on, and webhook deliveries to the app that failed.

use sqlx::PgPool;

use crate::store::{
    order_history::{self, UnderReview},
    outbox_deliveries::{self, Listed},
    reconciler::{self, FailedEvent},
};

/// The failed deliveries shown, newest first.
const MAX_FAILED_DELIVERIES: i64 = 100;

pub struct Attention {
    pub under_review: Vec<UnderReview>,
    pub failed_events: Vec<FailedEvent>,
    pub failed_deliveries: Vec<Listed>,
}

impl Attention {
    pub fn is_empty(&self) -> bool {
        self.under_review.is_empty() && self.failed_events.is_empty() && self.failed_deliveries.is_empty()
    }
}

pub async fn attention(db: &PgPool) -> Result<Attention, sqlx::Error> {
    Ok(Attention {
        under_review: order_history::under_review(db).await?,
        failed_events: reconciler::unresolved(db).await?,
        failed_deliveries: outbox_deliveries::latest(
            db,
            &outbox_deliveries::Filter {
                failed_only: true,
                ..Default::default()
            },
            MAX_FAILED_DELIVERIES,
        )
        .await?,
    })
}

/// Shows the order, its payment and every event applied to it: what a person reads before
/// refunding the payment at Stripe or granting by hand (`POST /v1/grants`).
pub fn review_command(order: &UnderReview) -> String {
    format!("entitle order {}", order.id)
}

/// Fetches the event from Stripe again and applies it, once its cause is fixed.
pub fn replay_command(event: &FailedEvent) -> String {
    format!("entitle replay {}", event.event_id)
}

/// Sends the delivery again (enabling its endpoint if it was disabled).
pub fn redeliver_command(delivery: &Listed) -> String {
    format!("entitle redeliver {}", delivery.delivery_id)
}

/// Drift between our records and Stripe's is not stored: the check prints it, and fixes it.
pub const DRIFT_COMMAND: &str = "entitle verify --since 30d --fix";
