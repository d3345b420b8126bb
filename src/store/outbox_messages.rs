//! `outbox_messages`: one row per change the app must hear of, written by the migration's
//! triggers; here only its body is fixed, by the first attempt to send it.

use sqlx::PgPool;
use uuid::Uuid;

/// Stores `body` as the message's, unless an attempt already stored one; returns the one stored,
/// which every attempt to every endpoint sends.
pub async fn fix_body(db: &PgPool, id: Uuid, body: &str) -> Result<String, sqlx::Error> {
    let stored = sqlx::query_scalar!(
        r#"update outbox_messages set body = $2 where id = $1 and body is null returning body as "body!""#,
        id,
        body
    )
    .fetch_optional(db)
    .await?;
    match stored {
        Some(body) => Ok(body),
        None => {
            sqlx::query_scalar!(r#"select body as "body!" from outbox_messages where id = $1"#, id)
                .fetch_one(db)
                .await
        }
    }
}
