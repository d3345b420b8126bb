//! A LISTEN connection that stays up for as long as the process runs: its own one-connection pool
//! (outside the request pool, named in `pg_stat_activity`), reconnecting after the database
//! restarts. A notification sent while it was down is lost, so a reconnect is reported as
//! `Heard::MayHaveMissed` and the listener's user wakes whoever might have waited for one.
//! Used by the order events (long-polls) and the outbox (its senders).

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgNotification, PgPoolOptions};

/// How long to wait before trying again when the connection cannot be re-established.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

pub enum Heard<'a> {
    Notification(&'a PgNotification),
    /// The connection was lost and is back: anything sent meanwhile was not heard.
    MayHaveMissed,
}

/// Connects and listens on `channel` (an error here is the caller's to report at startup), then
/// hands every notification, and every reconnect, to `on`, for ever, on a task of its own.
pub async fn listen(
    options: PgConnectOptions,
    application_name: &str,
    channel: &'static str,
    mut on: impl FnMut(Heard<'_>) + Send + 'static,
) -> Result<(), sqlx::Error> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .max_lifetime(None)
        .idle_timeout(None)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(options.application_name(application_name));
    let mut listener = start(&pool, channel).await?;
    tokio::spawn(async move {
        loop {
            match listener.try_recv().await {
                Ok(Some(notification)) => on(Heard::Notification(&notification)),
                Ok(None) => {
                    tracing::warn!(channel, "listening connection lost and re-established");
                    on(Heard::MayHaveMissed);
                }
                Err(err) => {
                    tracing::error!(channel, error = ?err, "listening connection failed; reconnecting");
                    drop(listener);
                    listener = reconnect(&pool, channel).await;
                    tracing::info!(channel, "listening again");
                    on(Heard::MayHaveMissed);
                }
            }
        }
    });
    Ok(())
}

async fn start(pool: &sqlx::PgPool, channel: &str) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(channel).await?;
    Ok(listener)
}

async fn reconnect(pool: &sqlx::PgPool, channel: &str) -> PgListener {
    loop {
        tokio::time::sleep(RECONNECT_DELAY).await;
        match start(pool, channel).await {
            Ok(listener) => return listener,
            Err(err) => tracing::error!(channel, error = ?err, "cannot listen yet; retrying"),
        }
    }
}
