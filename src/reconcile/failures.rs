//! Missed events the reconciler could not apply (`reconciler_failures`): how often each failed and
//! why, and whether it was set aside after too many attempts. A row whose event has since been
//! applied (by a webhook redelivery or `entitle replay`) is resolved and pruned on the next run.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::{
    error::AppError,
    stripe::{ProviderError, event::WebhookEvent, failure},
};

/// Longest `last_error` kept: one line for an operator, not a dump.
const MAX_ERROR_CHARS: usize = 500;

/// Where an event stands after one more failed attempt.
pub struct FailedAttempt {
    pub attempts: i32,
    pub set_aside: bool,
}

/// An event the reconciler could not apply, as `entitle failed-events` shows it.
#[derive(Debug, sqlx::FromRow)]
pub struct FailedEvent {
    pub event_id: String,
    pub event_type: String,
    pub event_created: i64,
    pub attempts: i32,
    pub last_error: String,
    pub first_failed_at: DateTime<Utc>,
    pub last_failed_at: DateTime<Utc>,
    pub set_aside_at: Option<DateTime<Utc>>,
}

/// Counts one more failed attempt; the one that reaches `max_attempts` sets the event aside.
pub async fn record_failure(
    pool: &PgPool,
    event: &WebhookEvent,
    error: &AppError,
    max_attempts: u32,
) -> Result<FailedAttempt, sqlx::Error> {
    let (attempts, set_aside): (i32, bool) = sqlx::query_as(
        "insert into reconciler_failures as f (event_id, event_type, event_created, attempts, last_error, set_aside_at)
         values ($1, $2, $3, 1, $4, case when $5 <= 1 then now() end)
         on conflict (event_id) do update set
             attempts = f.attempts + 1,
             last_error = excluded.last_error,
             last_failed_at = now(),
             set_aside_at = coalesce(f.set_aside_at, case when f.attempts + 1 >= $5 then now() end)
         returning attempts, set_aside_at is not null",
    )
    .bind(&event.id)
    .bind(&event.event_type)
    .bind(event.created)
    .bind(describe(error))
    .bind(i32::try_from(max_attempts).unwrap_or(i32::MAX))
    .fetch_one(pool)
    .await?;
    Ok(FailedAttempt { attempts, set_aside })
}

/// Forgets failures whose event has been applied since, by whatever path.
pub async fn prune_resolved(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query("delete from reconciler_failures f using processed_webhook_events p where p.event_id = f.event_id")
        .execute(pool)
        .await?;
    Ok(())
}

/// The `created` of the oldest event that failed and will be tried again: the cursor stops there.
pub async fn oldest_retryable(pool: &PgPool) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "select min(event_created) from reconciler_failures f
         where set_aside_at is null
           and not exists (select 1 from processed_webhook_events p where p.event_id = f.event_id)",
    )
    .fetch_one(pool)
    .await
}

/// Of `event_ids`, those a run must not apply, each with whether it was set aside (else: applied).
pub async fn events_to_skip(pool: &PgPool, event_ids: &[&str]) -> Result<Vec<(String, bool)>, sqlx::Error> {
    sqlx::query_as(
        "select event_id, false from processed_webhook_events where event_id = any($1)
         union all
         select event_id, true from reconciler_failures where set_aside_at is not null and event_id = any($1)",
    )
    .bind(event_ids)
    .fetch_all(pool)
    .await
}

/// Every failure not yet resolved: set-aside ones first, then those still being retried, oldest first.
pub async fn unresolved(pool: &PgPool) -> Result<Vec<FailedEvent>, sqlx::Error> {
    sqlx::query_as(
        "select event_id, event_type, event_created, attempts, last_error, first_failed_at, last_failed_at, set_aside_at
         from reconciler_failures f
         where not exists (select 1 from processed_webhook_events p where p.event_id = f.event_id)
         order by set_aside_at is null, event_created, event_id",
    )
    .fetch_all(pool)
    .await
}

/// What went wrong, in one line an operator can act on, with no secret in it: Stripe's status and
/// message, or the database's error code and message.
fn describe(error: &AppError) -> String {
    let text = match error {
        AppError::PaymentProvider(ProviderError::Stripe(err)) => failure::describe(err),
        AppError::Database(sqlx::Error::Database(db)) => {
            format!("database error {}: {}", db.code().unwrap_or_default(), db.message())
        }
        // Its text may quote the connection settings.
        AppError::Database(sqlx::Error::Configuration(_)) => "database configuration error".to_owned(),
        AppError::Database(err) => format!("database error: {err}"),
        other => other.to_string(),
    };
    text.chars().take(MAX_ERROR_CHARS).collect()
}
