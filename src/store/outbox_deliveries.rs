//! `outbox_deliveries`: one message to one endpoint, written by the migration's triggers. Here
//! senders claim what is due under a lease (`for update skip locked`, so senders in any number
//! of instances never take the same row), and record each result only under the lease it was
//! sent with.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::outbox_endpoints::EndpointKind;
use crate::outbox::payload::EventType;

#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    /// Given up on: its endpoint was disabled, or it kept failing for too long.
    Abandoned,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Abandoned => "abandoned",
        }
    }
}

/// A due delivery, locked until the claiming transaction ends.
pub struct Due {
    pub id: Uuid,
    pub endpoint_id: Uuid,
    /// Its endpoint's failures in a row: more than none means it is being retried.
    pub endpoint_failures: i32,
    /// It was leased before and no result was recorded under that lease (a recorded result
    /// clears it): an attempt of it may still say `sending`.
    pub leased_before: bool,
}

/// Up to `limit` deliveries that may be sent now, oldest due first: pending, not leased by a
/// live sender, to a configured endpoint of one of `kinds` (those this process can send) that is
/// neither disabled nor backing off. Rows another sender holds are skipped, not waited for.
pub async fn lock_due(conn: &mut PgConnection, kinds: &[String], limit: i64) -> Result<Vec<Due>, sqlx::Error> {
    sqlx::query_as!(
        Due,
        "select d.id, d.endpoint_id, e.consecutive_failures as endpoint_failures,
                d.lease_token is not null as \"leased_before!\"
         from outbox_deliveries d
         join outbox_endpoints e on e.id = d.endpoint_id
         where d.status = 'pending' and d.next_attempt_at <= now()
           and (d.leased_until is null or d.leased_until <= now())
           and e.configured and e.disabled_at is null and (e.retry_at is null or e.retry_at <= now())
           and e.kind = any($2)
         order by d.next_attempt_at, d.id
         limit $1
         for update of d skip locked",
        limit,
        kinds
    )
    .fetch_all(conn)
    .await
}

/// A delivery leased to a sender, with what sending it needs.
pub struct Leased {
    pub delivery_id: Uuid,
    /// This attempt's number (1 for the first).
    pub attempt: i32,
    /// Seconds since it was last made pending: the give-up clock.
    pub queued_for_secs: f64,
    pub message_id: Uuid,
    pub message_type: EventType,
    pub user_id: String,
    /// The order an `order.*` message (or the order's confirmation) is about.
    pub order_id: Option<Uuid>,
    pub data: Option<Value>,
    pub body: Option<String>,
    pub message_created_at: DateTime<Utc>,
    pub endpoint_id: Uuid,
    pub endpoint_kind: EndpointKind,
    pub url: String,
    pub endpoint_failures: i32,
}

/// Leases the deliveries to `token` for `lease_secs` and counts the attempt about to be made.
pub async fn lease(
    conn: &mut PgConnection,
    ids: &[Uuid],
    token: Uuid,
    lease_secs: f64,
) -> Result<Vec<Leased>, sqlx::Error> {
    sqlx::query_as!(
        Leased,
        r#"update outbox_deliveries d
           set lease_token = $2, leased_until = now() + make_interval(secs => $3), attempts = d.attempts + 1,
               updated_at = now()
           from outbox_messages m, outbox_endpoints e
           where d.id = any($1) and m.id = d.message_id and e.id = d.endpoint_id
           returning d.id as delivery_id, d.attempts as attempt,
                     extract(epoch from now() - d.queued_at)::float8 as "queued_for_secs!",
                     m.id as message_id, m.type as "message_type: EventType", m.user_id, m.order_id, m.data,
                     m.body, m.created_at as message_created_at, e.id as endpoint_id,
                     e.kind as "endpoint_kind: EndpointKind", e.url,
                     e.consecutive_failures as endpoint_failures"#,
        ids,
        token,
        lease_secs
    )
    .fetch_all(conn)
    .await
}

/// A 2xx (or the SMTP server's 250) that came back for one delivery.
pub struct Arrived {
    pub id: Uuid,
    pub token: Uuid,
    pub status: i32,
}

/// Records a batch of arrivals in one statement. Recorded even if a delivery was abandoned
/// meanwhile (it did arrive), but only under its lease: the ids returned are those still under
/// the lease they were sent with (another sender may have taken the others since).
pub async fn mark_delivered(conn: &mut PgConnection, arrived: &[Arrived]) -> Result<Vec<Uuid>, sqlx::Error> {
    let ids: Vec<Uuid> = arrived.iter().map(|a| a.id).collect();
    let tokens: Vec<Uuid> = arrived.iter().map(|a| a.token).collect();
    let statuses: Vec<i32> = arrived.iter().map(|a| a.status).collect();
    sqlx::query_scalar!(
        "update outbox_deliveries d
         set status = 'delivered', delivered_at = now(), last_response = a.status, last_error = null,
             lease_token = null, leased_until = null, updated_at = now()
         from unnest($1::uuid[], $2::uuid[], $3::int4[]) as a (id, token, status)
         where d.id = a.id and d.lease_token = a.token
         returning d.id",
        &ids,
        &tokens,
        &statuses
    )
    .fetch_all(conn)
    .await
}

/// Why an attempt did not deliver.
pub struct Failure<'a> {
    pub response: Option<i32>,
    pub error: &'a str,
}

/// Due again in `retry_in_secs`; false when the lease is no longer ours or it is no longer pending.
pub async fn retry_later(
    conn: &mut PgConnection,
    id: Uuid,
    token: Uuid,
    retry_in_secs: f64,
    failure: &Failure<'_>,
) -> Result<bool, sqlx::Error> {
    let scheduled = sqlx::query!(
        "update outbox_deliveries
         set next_attempt_at = now() + make_interval(secs => $3), last_response = $4, last_error = $5,
             lease_token = null, leased_until = null, updated_at = now()
         where id = $1 and lease_token = $2 and status = 'pending'",
        id,
        token,
        retry_in_secs,
        failure.response,
        failure.error
    )
    .execute(conn)
    .await?
    .rows_affected();
    Ok(scheduled == 1)
}

/// Given up on, under its lease.
pub async fn abandon(
    conn: &mut PgConnection,
    id: Uuid,
    token: Uuid,
    failure: &Failure<'_>,
) -> Result<bool, sqlx::Error> {
    let abandoned = sqlx::query!(
        "update outbox_deliveries
         set status = 'abandoned', last_response = $3, last_error = $4, lease_token = null, leased_until = null,
             updated_at = now()
         where id = $1 and lease_token = $2 and status = 'pending'",
        id,
        token,
        failure.response,
        failure.error
    )
    .execute(conn)
    .await?
    .rows_affected();
    Ok(abandoned == 1)
}

/// Every pending delivery to a disabled endpoint is given up on. Leases are left as they are, so
/// one in flight that does arrive is still recorded as delivered.
pub async fn abandon_pending_to(conn: &mut PgConnection, endpoint_id: Uuid, reason: &str) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query!(
        "update outbox_deliveries set status = 'abandoned', last_error = $2, updated_at = now()
         where endpoint_id = $1 and status = 'pending'",
        endpoint_id,
        reason
    )
    .execute(conn)
    .await?
    .rows_affected())
}

/// A delivery as `entitle deliveries` shows it.
pub struct Listed {
    pub delivery_id: Uuid,
    pub message_id: Uuid,
    pub message_type: EventType,
    pub user_id: String,
    pub endpoint_kind: EndpointKind,
    pub url: String,
    pub status: DeliveryStatus,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub leased_until: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub last_response: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// Which deliveries `latest` lists: only the failed ones (given up on, or pending after a failed
/// attempt) when `failed_only`; only one user's messages, or one order's, when given.
#[derive(Default)]
pub struct Filter<'a> {
    pub failed_only: bool,
    pub user_id: Option<&'a str>,
    pub order_id: Option<Uuid>,
}

/// The latest deliveries that pass `filter`, newest first.
pub async fn latest(db: &PgPool, filter: &Filter<'_>, limit: i64) -> Result<Vec<Listed>, sqlx::Error> {
    sqlx::query_as!(
        Listed,
        r#"select d.id as delivery_id, m.id as message_id, m.type as "message_type: EventType", m.user_id,
                  e.kind as "endpoint_kind: EndpointKind", e.url,
                  d.status as "status: DeliveryStatus", d.attempts, d.next_attempt_at, d.leased_until,
                  d.delivered_at, d.last_response, d.last_error, d.created_at
           from outbox_deliveries d
           join outbox_messages m on m.id = d.message_id
           join outbox_endpoints e on e.id = d.endpoint_id
           where (not $1 or d.status = 'abandoned' or (d.status = 'pending' and d.last_error is not null))
             and ($2::text is null or m.user_id = $2)
             and ($4::uuid is null or m.order_id = $4)
           order by d.created_at desc, d.id
           limit $3"#,
        filter.failed_only,
        filter.user_id,
        limit,
        filter.order_id
    )
    .fetch_all(db)
    .await
}

/// What to send again: one delivery, every delivery of one message, or those written since a time.
pub enum Redelivery {
    Delivery(Uuid),
    Message(Uuid),
    WrittenSince(DateTime<Utc>),
}

/// A delivery made pending again, with where it goes.
pub struct Requeued {
    pub was: DeliveryStatus,
    pub endpoint_id: Uuid,
    pub endpoint_kind: EndpointKind,
    pub url: String,
    pub endpoint_configured: bool,
    pub endpoint_disabled: bool,
}

/// Makes the deliveries pending and due now, whatever they were; their give-up clock starts again.
pub async fn requeue(conn: &mut PgConnection, what: &Redelivery) -> Result<Vec<Requeued>, sqlx::Error> {
    let (delivery, message, since) = match what {
        Redelivery::Delivery(id) => (Some(*id), None, None),
        Redelivery::Message(id) => (None, Some(*id), None),
        Redelivery::WrittenSince(at) => (None, None, Some(*at)),
    };
    sqlx::query_as!(
        Requeued,
        r#"update outbox_deliveries d
           set status = 'pending', next_attempt_at = now(), queued_at = now(), updated_at = now()
           from outbox_deliveries before, outbox_endpoints e
           where before.id = d.id and e.id = d.endpoint_id
             and (d.id = $1 or d.message_id = $2 or d.created_at >= $3)
           returning before.status as "was: DeliveryStatus", e.id as endpoint_id,
                     e.kind as "endpoint_kind: EndpointKind", e.url,
                     e.configured as endpoint_configured, e.disabled_at is not null as "endpoint_disabled!""#,
        delivery,
        message,
        since
    )
    .fetch_all(conn)
    .await
}

/// How far behind the senders are, over every instance: what `/metrics` reports.
pub struct Backlog {
    pub pending: i64,
    /// Seconds since the oldest pending delivery was made pending; none when nothing is.
    pub oldest_age_secs: Option<f64>,
}

pub async fn backlog(pool: &PgPool) -> Result<Backlog, sqlx::Error> {
    // Both from the partial index of pending deliveries, however many were ever delivered.
    sqlx::query_as!(
        Backlog,
        r#"select count(*) as "pending!",
                  extract(epoch from now() - min(queued_at))::float8 as oldest_age_secs
           from outbox_deliveries where status = 'pending'"#
    )
    .fetch_one(pool)
    .await
}
