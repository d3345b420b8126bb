//! The reconciler's own tables: `reconciler_cursor` (where it stopped reading Stripe's event list)
//! and `reconciler_failures` (missed events it could not apply, how often and why), read against
//! `processed_webhook_events` so that an event applied since, by any path, counts as resolved.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// The `created` (unix seconds) up to which the named cursor has read.
pub async fn cursor(pool: &PgPool, name: &str) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar!("select created_up_to from reconciler_cursor where name = $1", name)
        .fetch_optional(pool)
        .await
}

/// Moves the cursor to `up_to`, never back: a run that read less than an earlier one keeps its place.
pub async fn advance_cursor(pool: &PgPool, name: &str, up_to: i64) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "insert into reconciler_cursor (name, created_up_to) values ($1, $2)
         on conflict (name) do update set created_up_to = greatest(reconciler_cursor.created_up_to, $2), updated_at = now()",
        name,
        up_to
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// An event the reconciler failed to apply, as it names it.
pub struct Failure<'a> {
    pub event_id: &'a str,
    pub event_type: &'a str,
    pub event_created: i64,
    /// One line for an operator, never a secret.
    pub error: &'a str,
}

/// Where an event stands after one more failed attempt.
pub struct FailedAttempt {
    pub attempts: i32,
    pub set_aside: bool,
}

/// Counts one more failed attempt; the one that reaches `max_attempts` sets the event aside.
pub async fn record_failure(
    pool: &PgPool,
    failure: &Failure<'_>,
    max_attempts: i32,
) -> Result<FailedAttempt, sqlx::Error> {
    sqlx::query_as!(
        FailedAttempt,
        r#"insert into reconciler_failures as f (event_id, event_type, event_created, attempts, last_error, set_aside_at)
           values ($1, $2, $3, 1, $4, case when $5 <= 1 then now() end)
           on conflict (event_id) do update set
               attempts = f.attempts + 1,
               last_error = excluded.last_error,
               last_failed_at = now(),
               set_aside_at = coalesce(f.set_aside_at, case when f.attempts + 1 >= $5 then now() end)
           returning attempts, set_aside_at is not null as "set_aside!""#,
        failure.event_id,
        failure.event_type,
        failure.event_created,
        failure.error,
        max_attempts
    )
    .fetch_one(pool)
    .await
}

/// Forgets failures whose event has been applied since, by whatever path.
pub async fn prune_resolved(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query!("delete from reconciler_failures f using processed_webhook_events p where p.event_id = f.event_id")
        .execute(pool)
        .await?;
    Ok(())
}

/// The `created` of the oldest event that failed and will be tried again: the cursor stops there.
pub async fn oldest_retryable(pool: &PgPool) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar!(
        "select min(event_created) from reconciler_failures f
         where set_aside_at is null
           and not exists (select 1 from processed_webhook_events p where p.event_id = f.event_id)"
    )
    .fetch_one(pool)
    .await
}

/// A listed event a run must not apply.
pub struct Skipped {
    pub event_id: String,
    /// Set aside after too many failures; else applied already.
    pub set_aside: bool,
}

/// Of `event_ids`, those a run must not apply.
pub async fn events_to_skip(pool: &PgPool, event_ids: &[&str]) -> Result<Vec<Skipped>, sqlx::Error> {
    sqlx::query_as!(
        Skipped,
        r#"select event_id as "event_id!", false as "set_aside!" from processed_webhook_events where event_id = any($1)
           union all
           select event_id, true from reconciler_failures where set_aside_at is not null and event_id = any($1)"#,
        event_ids as &[&str]
    )
    .fetch_all(pool)
    .await
}

/// An event the reconciler could not apply, as `entitle failed-events` shows it.
#[derive(Debug)]
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

/// Every failure not yet resolved: set-aside ones first, then those still being retried, oldest first.
pub async fn unresolved(pool: &PgPool) -> Result<Vec<FailedEvent>, sqlx::Error> {
    sqlx::query_as!(
        FailedEvent,
        "select event_id, event_type, event_created, attempts, last_error, first_failed_at, last_failed_at, set_aside_at
         from reconciler_failures f
         where not exists (select 1 from processed_webhook_events p where p.event_id = f.event_id)
         order by set_aside_at is null, event_created, event_id"
    )
    .fetch_all(pool)
    .await
}
