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
/// until the first transaction ends, then finds it taken. `created` is Stripe's (unix seconds; 0
/// when the event had none), kept for the operator's timeline and lag chart.
pub async fn claim(
    conn: &mut PgConnection,
    event_id: &str,
    event_type: &str,
    created: i64,
) -> Result<bool, sqlx::Error> {
    let claimed = sqlx::query!(
        "insert into processed_webhook_events (event_id, event_type, outcome, event_created)
         values ($1, $2, $3, to_timestamp(nullif($4::bigint, 0)))
         on conflict (event_id) do nothing",
        event_id,
        event_type,
        Outcome::Processing as Outcome,
        created
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

/// An event applied to an order, for the operator's timeline: when Stripe created it (none for
/// events recorded before that was kept) and when it was applied here.
pub struct TimelineEvent {
    pub event_id: String,
    pub event_type: String,
    /// As stored (see `Applied::outcome`).
    pub outcome: String,
    pub event_created: Option<chrono::DateTime<chrono::Utc>>,
    pub received_at: chrono::DateTime<chrono::Utc>,
}

/// Every event applied to the order, in the order it was applied.
pub async fn for_order(db: &PgPool, order_id: Uuid) -> Result<Vec<TimelineEvent>, sqlx::Error> {
    sqlx::query_as!(
        TimelineEvent,
        "select event_id, event_type, outcome, event_created, received_at from processed_webhook_events
         where order_id = $1 order by received_at, event_id",
        order_id
    )
    .fetch_all(db)
    .await
}

/// The order an applied event named: `None` when no such event was applied, `Some(None)` when it
/// was but named no order (an event type we do not act on, say).
pub async fn order_of(db: &PgPool, event_id: &str) -> Result<Option<Option<Uuid>>, sqlx::Error> {
    sqlx::query_scalar!(
        "select order_id from processed_webhook_events where event_id = $1",
        event_id
    )
    .fetch_optional(db)
    .await
}

/// The events received in one time slot, and how far behind Stripe's `created` they arrived.
pub struct ActivitySlot {
    pub slot_start: chrono::DateTime<chrono::Utc>,
    pub events: i64,
    pub lag_avg_secs: Option<f64>,
    pub lag_max_secs: Option<f64>,
}

/// Events received since `since`, counted in slots of `slot_secs` aligned to the epoch; slots
/// without events are absent. Lag counts only events whose `created` is known.
pub async fn activity_since(
    db: &PgPool,
    since: chrono::DateTime<chrono::Utc>,
    slot_secs: f64,
) -> Result<Vec<ActivitySlot>, sqlx::Error> {
    sqlx::query_as!(
        ActivitySlot,
        r#"select date_bin(make_interval(secs => $2), received_at, timestamptz '1970-01-01') as "slot_start!",
                  count(*) as "events!",
                  avg(extract(epoch from received_at - event_created))::float8 as lag_avg_secs,
                  max(extract(epoch from received_at - event_created))::float8 as lag_max_secs
           from processed_webhook_events where received_at >= $1
           group by 1 order by 1"#,
        since,
        slot_secs
    )
    .fetch_all(db)
    .await
}
