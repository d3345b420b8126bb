//! `outbox_messages`: one row per change the app must hear of, written by the migration's
//! triggers; here only its body is fixed, by the first attempt to send it.

use sqlx::PgPool;
use uuid::Uuid;

/// Stores each body as its message's, unless an attempt already stored one; returns the bodies
/// stored (by message id), which every attempt to every endpoint sends. One statement for a batch.
pub async fn fix_bodies(db: &PgPool, ids: &[Uuid], bodies: &[String]) -> Result<Vec<(Uuid, String)>, sqlx::Error> {
    let stored = sqlx::query!(
        r#"update outbox_messages m set body = coalesce(m.body, built.body)
           from unnest($1::uuid[], $2::text[]) as built (id, body)
           where m.id = built.id
           returning m.id, m.body as "body!""#,
        ids,
        bodies
    )
    .fetch_all(db)
    .await?;
    Ok(stored.into_iter().map(|row| (row.id, row.body)).collect())
}
