//! Notifications sent after the transactions they tell of have committed (`crate::wakeups`), not
//! a table: one statement for a whole batch, in a transaction of its own that writes nothing, so
//! it holds the notification lock for no WAL flush.

use sqlx::PgPool;

/// Sends `pg_notify(channels[i], payloads[i])` for every pair, delivered when this statement's own
/// transaction ends (at once).
pub async fn notify_all(db: &PgPool, channels: &[String], payloads: &[String]) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "select pg_notify(channel, payload) from unnest($1::text[], $2::text[]) as sent(channel, payload)",
        channels,
        payloads
    )
    .fetch_all(db)
    .await?;
    Ok(())
}
