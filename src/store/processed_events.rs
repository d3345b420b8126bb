//! `processed_webhook_events`: one row per Stripe event id, claimed in the transaction that applies
//! the event, so a redelivery finds its row and changes nothing.

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::outcome::Outcome;

/// Whether the event was applied (or is being applied) already; a read, safe to retry.
pub async fn is_processed(db: &PgPool, event_id: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"select exists (select 1 from processed_webhook_events where event_id = $1) as "exists!""#,
        event_id
    )
    .fetch_one(db)
    .await
}

/// Claims the event id; false if it is taken. A concurrent claim of the same id waits on the row
/// until the first transaction ends, then finds it taken.
pub async fn claim(conn: &mut PgConnection, event_id: &str, event_type: &str) -> Result<bool, sqlx::Error> {
    let claimed = sqlx::query!(
        "insert into processed_webhook_events (event_id, event_type, outcome)
         values ($1, $2, $3)
         on conflict (event_id) do nothing",
        event_id,
        event_type,
        Outcome::Processing as Outcome
    )
    .execute(conn)
    .await?
    .rows_affected();
    Ok(claimed == 1)
}

/// What applying the claimed event did, and to which order.
pub async fn record_outcome(
    conn: &mut PgConnection,
    event_id: &str,
    outcome: Outcome,
    order_id: Option<Uuid>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update processed_webhook_events set outcome = $2, order_id = $3 where event_id = $1",
        event_id,
        outcome as Outcome,
        order_id
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// How an event already applied was settled, and when it arrived.
pub struct Applied {
    /// As stored, for display only: history keeps the words older versions wrote too, which
    /// `Outcome` need not parse.
    pub outcome: String,
    pub received_at: chrono::DateTime<chrono::Utc>,
}

pub async fn applied(db: &PgPool, event_id: &str) -> Result<Option<Applied>, sqlx::Error> {
    sqlx::query_as!(
        Applied,
        "select outcome, received_at from processed_webhook_events where event_id = $1",
        event_id
    )
    .fetch_optional(db)
    .await
}
