//! `outbox_endpoints`: where messages go, synced from the configuration, each with its backoff
//! (failures in a row, when it may be tried again, since when it has been failing) and whether it
//! is disabled.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// How an endpoint's messages are delivered; the migrations' check constraint lists the same names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum EndpointKind {
    /// A signed POST to the app (`APP_WEBHOOK_URL`).
    Webhook,
    /// The buyer's confirmation email, through the mailer (`SMTP_URL`, or the dev mailbox).
    Email,
}

impl EndpointKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Webhook => "webhook",
            Self::Email => "email",
        }
    }
}

pub struct Endpoint {
    pub id: Uuid,
    pub kind: EndpointKind,
    pub url: String,
    pub configured: bool,
    pub consecutive_failures: i32,
    pub retry_at: Option<DateTime<Utc>>,
    pub failing_since: Option<DateTime<Utc>>,
    pub disabled_at: Option<DateTime<Utc>>,
    pub disabled_reason: Option<String>,
}

/// Makes `urls` the configured endpoints of `kind`: each one is added (or configured again), every
/// other one of that kind stops receiving new messages. A disabled one stays disabled.
pub async fn sync(conn: &mut PgConnection, kind: EndpointKind, urls: &[String]) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "insert into outbox_endpoints (kind, url) select $1, unnest($2::text[])
         on conflict (kind, url) do update set configured = true, updated_at = now()
         where not outbox_endpoints.configured",
        kind as EndpointKind,
        urls
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "update outbox_endpoints set configured = false, updated_at = now()
         where kind = $1 and configured and url <> all($2)",
        kind as EndpointKind,
        urls
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Every endpoint, configured ones first.
pub async fn all(db: &PgPool) -> Result<Vec<Endpoint>, sqlx::Error> {
    sqlx::query_as!(
        Endpoint,
        r#"select id, kind as "kind: EndpointKind", url, configured, consecutive_failures, retry_at, failing_since,
                  disabled_at, disabled_reason
           from outbox_endpoints order by configured desc, created_at, url"#
    )
    .fetch_all(db)
    .await
}

/// A failing endpoint being tried once more is held for `secs`, so the other senders leave its
/// deliveries alone until this one's answer (or the lease running out) says how it is.
pub async fn hold_for_probe(conn: &mut PgConnection, ids: &[Uuid], secs: f64) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update outbox_endpoints set retry_at = now() + make_interval(secs => $2), updated_at = now()
         where id = any($1)",
        ids,
        secs
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// They answered: they are healthy again. Returns the URLs of those that had been failing (writes
/// nothing for the others).
pub async fn record_success(conn: &mut PgConnection, ids: &[Uuid]) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar!(
        "update outbox_endpoints
         set consecutive_failures = 0, retry_at = null, failing_since = null, updated_at = now()
         where id = any($1) and (consecutive_failures > 0 or retry_at is not null or failing_since is not null)
         returning url",
        ids
    )
    .fetch_all(conn)
    .await
}

/// How an endpoint stands after a failure.
pub struct Health {
    pub consecutive_failures: i32,
    /// Seconds since its first failure of this run of them.
    pub failing_for_secs: f64,
    pub disabled: bool,
}

/// Counts a failure of an attempt made when the endpoint had `seen` failures in a row, and holds
/// it back `retry_in_secs`. Attempts sent together fail together: only the first of them to be
/// recorded counts (the others find the count moved on), so one burst is one failure, not as many
/// as there were messages in flight.
pub async fn record_failure(
    conn: &mut PgConnection,
    id: Uuid,
    seen: i32,
    retry_in_secs: f64,
) -> Result<Health, sqlx::Error> {
    sqlx::query_as!(
        Health,
        r#"with counted as (
               update outbox_endpoints
               set consecutive_failures = consecutive_failures + 1, failing_since = coalesce(failing_since, now()),
                   retry_at = now() + make_interval(secs => $3), updated_at = now()
               where id = $1 and consecutive_failures = $2
               returning consecutive_failures, failing_since, disabled_at
           ),
           current as (
               select consecutive_failures, failing_since, disabled_at from counted
               union all
               select consecutive_failures, failing_since, disabled_at from outbox_endpoints
               where id = $1 and not exists (select 1 from counted)
           )
           select consecutive_failures as "consecutive_failures!",
                  coalesce(extract(epoch from now() - failing_since)::float8, 0) as "failing_for_secs!",
                  disabled_at is not null as "disabled!"
           from current"#,
        id,
        seen,
        retry_in_secs
    )
    .fetch_one(conn)
    .await
}

/// Disables the endpoint with the reason an operator will read; false when it already was.
pub async fn disable(conn: &mut PgConnection, id: Uuid, reason: &str) -> Result<bool, sqlx::Error> {
    let disabled = sqlx::query!(
        "update outbox_endpoints set disabled_at = now(), disabled_reason = $2, retry_at = null, updated_at = now()
         where id = $1 and disabled_at is null",
        id,
        reason
    )
    .execute(conn)
    .await?
    .rows_affected();
    Ok(disabled == 1)
}

/// An endpoint enabled again, with why it had been disabled.
pub struct Enabled {
    pub url: String,
    pub disabled_at: DateTime<Utc>,
    pub disabled_reason: String,
}

/// Enables the disabled ones of `ids` again, as healthy.
pub async fn enable(conn: &mut PgConnection, ids: &[Uuid]) -> Result<Vec<Enabled>, sqlx::Error> {
    sqlx::query_as!(
        Enabled,
        r#"update outbox_endpoints e
           set disabled_at = null, disabled_reason = null, consecutive_failures = 0, retry_at = null,
               failing_since = null, updated_at = now()
           from outbox_endpoints before
           where e.id = any($1) and before.id = e.id and e.disabled_at is not null
           returning e.url, before.disabled_at as "disabled_at!", before.disabled_reason as "disabled_reason!""#,
        ids
    )
    .fetch_all(conn)
    .await
}
