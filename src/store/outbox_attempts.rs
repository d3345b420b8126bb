//! `outbox_attempts`: every attempt to send a delivery, kept: started as `sending` in the
//! transaction that leases the delivery, finished with what came back.

use sqlx::PgConnection;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum AttemptStatus {
    Sending,
    Delivered,
    Failed,
    /// Its lease ran out with no result: the sender stopped (or lost the database) mid-send.
    Interrupted,
}

/// Attempts of these deliveries still `sending` lost their sender: the deliveries are being
/// claimed again, which only happens once their lease ran out.
pub async fn interrupt_unfinished(conn: &mut PgConnection, delivery_ids: &[Uuid]) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update outbox_attempts
         set status = 'interrupted', finished_at = now(),
             error = 'no result was recorded before the lease ran out (the sender stopped or lost the database)'
         where delivery_id = any($1) and status = 'sending'",
        delivery_ids
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub struct Started {
    pub id: i64,
    pub delivery_id: Uuid,
}

/// One attempt per delivery, made under `token` by `sender`.
pub async fn start(
    conn: &mut PgConnection,
    delivery_ids: &[Uuid],
    token: Uuid,
    sender: &str,
) -> Result<Vec<Started>, sqlx::Error> {
    sqlx::query_as!(
        Started,
        "insert into outbox_attempts (delivery_id, lease_token, sender)
         select id, $2, $3 from unnest($1::uuid[]) as d (id)
         returning id, delivery_id",
        delivery_ids,
        token,
        sender
    )
    .fetch_all(conn)
    .await
}

/// What one attempt came to.
pub struct Finished<'a> {
    pub status: AttemptStatus,
    pub latency_ms: i32,
    pub response_status: Option<i32>,
    pub error: Option<&'a str>,
}

pub async fn finish(conn: &mut PgConnection, id: i64, finished: &Finished<'_>) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update outbox_attempts
         set status = $2, finished_at = now(), latency_ms = $3, response_status = $4, error = $5
         where id = $1",
        id,
        finished.status as AttemptStatus,
        finished.latency_ms,
        finished.response_status,
        finished.error
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Attempts that delivered, with their latencies and response statuses, in one statement.
pub async fn finish_delivered(
    conn: &mut PgConnection,
    ids: &[i64],
    latencies_ms: &[i32],
    statuses: &[i32],
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update outbox_attempts t
         set status = 'delivered', finished_at = now(), latency_ms = f.latency_ms, response_status = f.status,
             error = null
         from unnest($1::int8[], $2::int4[], $3::int4[]) as f (id, latency_ms, status)
         where t.id = f.id",
        ids,
        latencies_ms,
        statuses
    )
    .execute(conn)
    .await?;
    Ok(())
}
