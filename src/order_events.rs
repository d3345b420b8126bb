//! Tells waiting requests that an order's status changed. A transaction that changes one sends
//! `pg_notify('order_status', <order id>)`, which Postgres delivers only at commit; one listening
//! connection per process receives it and wakes the requests waiting on that order, in memory.
//! The webhook's fulfilment instead wakes this process's waiters itself once it has committed,
//! and the other processes' through a batched notification (`crate::wakeups`).
//!
//! Notifications are a wake-up call, never the answer: a woken request re-reads the row. Anything
//! sent while the listener is reconnecting is lost, so a reconnect wakes every waiter, and waiters
//! also re-read on a timer of their own (see `routes::order_status`).

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
    },
};

use sqlx::postgres::PgConnectOptions;
use tokio::sync::watch;
use uuid::Uuid;

use crate::pg_listen::{self, Heard};

/// The channel every status change notifies on; the payload is the order id. The SQL in
/// `fulfillment` and `lifecycle::reversals` names it as the literal `pg_notify('order_status', …)`,
/// and a test below keeps the two from drifting apart.
pub const ORDER_STATUS_CHANNEL: &str = "order_status";
/// Shown in `pg_stat_activity`, so an operator (or a test) can find the listening connection.
pub const LISTENER_APPLICATION_NAME: &str = "entitle-order-events";

/// Order id → a channel every request waiting on that order subscribes to. An entry lives only
/// while someone waits, so the map is as large as the number of waiting requests.
#[derive(Clone, Default)]
pub struct OrderEvents {
    waiters: Arc<Mutex<HashMap<Uuid, watch::Sender<()>>>>,
    /// Set when the process begins to shut down: waiters answer with what the row says now, so a
    /// graceful shutdown is not held up for the rest of every long-poll.
    stopping: Arc<AtomicBool>,
}

impl OrderEvents {
    /// Connects the listening connection (its own, outside the request pool) and keeps it
    /// listening for as long as the process runs.
    pub async fn listen(options: PgConnectOptions) -> Result<Self, sqlx::Error> {
        let events = Self::default();
        let heard = events.clone();
        pg_listen::listen(
            options,
            LISTENER_APPLICATION_NAME,
            ORDER_STATUS_CHANNEL,
            move |what| match what {
                Heard::Notification(notification) => match Uuid::parse_str(notification.payload()) {
                    Ok(order_id) => heard.wake(order_id),
                    Err(_) => tracing::warn!(
                        payload = notification.payload(),
                        "order_status payload is not an order id"
                    ),
                },
                Heard::MayHaveMissed => heard.wake_everyone(),
            },
        )
        .await?;
        Ok(events)
    }

    /// Subscribe before reading the row: a change committed after the read then still wakes us.
    pub fn watch(&self, order_id: Uuid) -> OrderWatch {
        let changed = self
            .lock()
            .entry(order_id)
            .or_insert_with(|| watch::channel(()).0)
            .subscribe();
        OrderWatch {
            order_id,
            changed,
            events: self.clone(),
        }
    }

    /// Ends every wait, now and from now on; called when shutdown begins.
    pub fn release_all(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.wake_everyone();
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    pub(crate) fn wake(&self, order_id: Uuid) {
        if let Some(sender) = self.lock().get(&order_id) {
            sender.send_replace(());
        }
    }

    fn wake_everyone(&self) {
        for sender in self.lock().values() {
            sender.send_replace(());
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Uuid, watch::Sender<()>>> {
        self.waiters.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One request's interest in one order; dropping it unsubscribes.
pub struct OrderWatch {
    order_id: Uuid,
    changed: watch::Receiver<()>,
    events: OrderEvents,
}

impl OrderWatch {
    /// Resolves after the next notification for this order (or a listener reconnect). Wakes may
    /// be spurious; callers re-read the row and decide.
    pub async fn changed(&mut self) {
        if self.changed.changed().await.is_err() {
            // Cannot happen while we are subscribed (the map keeps the sender); wait for the
            // caller's timer rather than spin.
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for OrderWatch {
    fn drop(&mut self) {
        let mut waiters = self.events.lock();
        // Our own receiver is still alive here, so 1 means nobody else is waiting on this order.
        if waiters
            .get(&self.order_id)
            .is_some_and(|sender| sender.receiver_count() <= 1)
        {
            waiters.remove(&self.order_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// The channel of each `pg_notify(` in `source`; `None` for one whose channel is not a literal.
    fn notified_channels(source: &str) -> Vec<Option<&str>> {
        source
            .split("pg_notify(")
            .skip(1)
            .map(|call| call.strip_prefix('\'')?.split('\'').next())
            .collect()
    }

    /// Every file under `dir` (recursively) whose name ends with `suffix`.
    fn files(dir: &std::path::Path, suffix: &str) -> Vec<std::path::PathBuf> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                found.extend(files(&path, suffix));
            } else if path.to_string_lossy().ends_with(suffix) {
                found.push(path);
            }
        }
        found
    }

    #[test]
    fn every_status_notification_in_the_sql_names_the_channel_we_listen_on() {
        // Wherever the SQL lives: the sources, and the checked queries' offline data.
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut sources = files(&root.join("src"), ".rs");
        sources.extend(files(&root.join(".sqlx"), ".json"));
        let mut notifications = 0;
        for path in sources.iter().filter(|p| !p.ends_with("order_events.rs")) {
            let source = std::fs::read_to_string(path).unwrap();
            // The after-commit batch (`store::notifications`, `crate::wakeups`) sends whatever
            // channels it is handed; the wake-ups' own test checks what it sends.
            if source.contains("as sent(channel, payload)") {
                continue;
            }
            let channels = notified_channels(&source);
            notifications += channels.len();
            assert!(
                channels.iter().all(|channel| *channel == Some(ORDER_STATUS_CHANNEL)),
                "{} notifies on {channels:?}, but the listener listens on {ORDER_STATUS_CHANNEL:?}",
                path.display()
            );
        }
        assert!(notifications >= 3, "the status changes' notifications were not found");
    }

    #[tokio::test]
    async fn a_wake_reaches_every_watcher_of_that_order_and_no_other() {
        let events = OrderEvents::default();
        let order = Uuid::new_v4();
        let mut first = events.watch(order);
        let mut second = events.watch(order);
        let mut other = events.watch(Uuid::new_v4());

        events.wake(order);

        let quick = Duration::from_millis(100);
        assert!(tokio::time::timeout(quick, first.changed()).await.is_ok());
        assert!(tokio::time::timeout(quick, second.changed()).await.is_ok());
        assert!(tokio::time::timeout(quick, other.changed()).await.is_err());
    }

    #[tokio::test]
    async fn at_shutdown_every_watcher_is_released_and_says_so() {
        let events = OrderEvents::default();
        let mut waiting = events.watch(Uuid::new_v4());
        assert!(!events.is_stopping());

        events.release_all();

        assert!(
            tokio::time::timeout(Duration::from_millis(100), waiting.changed())
                .await
                .is_ok()
        );
        assert!(events.is_stopping());
    }

    #[tokio::test]
    async fn the_entry_is_removed_when_the_last_watcher_leaves() {
        let events = OrderEvents::default();
        let order = Uuid::new_v4();
        let first = events.watch(order);
        let second = events.watch(order);
        drop(first);
        assert!(events.lock().contains_key(&order));
        drop(second);
        assert!(events.lock().is_empty());
    }
}
