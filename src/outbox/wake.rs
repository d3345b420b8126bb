//! Wakes this process's senders when a delivery is written. The migration's `outbox_wake`
//! trigger notifies the `outbox` channel, which Postgres delivers at commit (never for a rollback); one
//! listening connection per process turns each into a wake-up. The hot paths' transactions
//! (webhooks, debits) notify after their commit instead, batched (`crate::wakeups`). A wake-up is only a hint: the
//! senders also look on a timer (`OUTBOX_SWEEP_SECS`), for retries and for anything sent while
//! the listener was reconnecting.

use std::sync::Arc;

use sqlx::postgres::PgConnectOptions;
use tokio::sync::Notify;

use crate::pg_listen::{self, Heard};

/// The channel the migration's `outbox_wake` trigger notifies on; a test below reads it there.
pub const OUTBOX_CHANNEL: &str = "outbox";
/// Shown in `pg_stat_activity`, beside the order events' listener.
pub const LISTENER_APPLICATION_NAME: &str = "entitle-outbox";

/// Connects the listening connection (its own, outside the request pool) and returns what it
/// wakes. A wake-up that finds the senders busy is kept until they next wait.
pub async fn listen(options: PgConnectOptions) -> Result<Arc<Notify>, sqlx::Error> {
    let wake = Arc::new(Notify::new());
    let woken = wake.clone();
    // A reconnect wakes them too: a delivery written meanwhile was not heard of.
    pg_listen::listen(
        options,
        LISTENER_APPLICATION_NAME,
        OUTBOX_CHANNEL,
        move |_: Heard<'_>| woken.notify_one(),
    )
    .await?;
    Ok(wake)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_migration_notifies_on_the_channel_we_listen_on() {
        // The trigger's first version, and the one that stands down for a transaction that wakes
        // the senders after its commit (`crate::wakeups`).
        let migration = concat!(
            include_str!("../../migrations/20261204000001_outbox.sql"),
            include_str!("../../migrations/20261209000001_wake_after_commit.sql"),
        );
        // Spelled in two halves, so that the order events' test (which reads every source for
        // notifications) does not take this for one.
        let channels: Vec<&str> = migration
            .split(concat!("pg_notify", "("))
            .skip(1)
            .filter_map(|call| call.strip_prefix('\'')?.split('\'').next())
            .collect();
        assert_eq!(channels, [OUTBOX_CHANNEL, OUTBOX_CHANNEL]);
    }
}
