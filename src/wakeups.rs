//! Wake-ups sent after a commit instead of inside it.
//!
//! A transaction that calls `pg_notify` takes one database-wide lock before it commits and keeps
//! it through its WAL flush, so notifying transactions commit one at a time, each with an fsync of
//! its own. Every fulfilment notified twice (the order's long-polls, the outbox's senders) and
//! every debit once, and that lock set their ceiling (docs/performance.md). The hot paths instead
//! begin with [`db::begin_waking_after_commit`](crate::db::begin_waking_after_commit), which tells
//! the SQL not to notify, and hand what changed to [`Wakeups::after_commit`] once committed:
//!
//! - this process's own waiters are woken at once, in memory;
//! - the other instances hear of it through one `pg_notify` statement per batch, sent by a task
//!   of its own from a transaction that writes nothing (no flush under the lock). Whatever commits
//!   while one batch is in flight goes in the next, so a burst costs a few statements, not one
//!   per commit.
//!
//! A wake-up was only ever a hint: long-polls re-read on a timer and the outbox sweeps, so one
//! lost between the commit and the batch (the process dies, the statement fails) delays a waiter
//! on another instance, never loses a change.

use std::sync::{Arc, Mutex};

use sqlx::PgPool;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::{order_events::ORDER_STATUS_CHANNEL, order_events::OrderEvents, outbox::wake::OUTBOX_CHANNEL, store};

/// Orders held for one batch at most. Far above what commits during one round trip; past it the
/// rest are dropped with a warning (their waiters elsewhere fall back on their re-read).
const MAX_BATCH_ORDERS: usize = 10_000;

#[derive(Clone)]
pub struct Wakeups(Arc<Shared>);

struct Shared {
    pending: Mutex<Pending>,
    /// Tells the sending task there is something to send.
    ready: Notify,
    orders: OrderEvents,
    /// This process's outbox senders, when it runs them.
    outbox: Option<Arc<Notify>>,
}

#[derive(Default)]
struct Pending {
    orders: Vec<Uuid>,
    outbox: bool,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.orders.is_empty() && !self.outbox
    }
}

impl Wakeups {
    /// Starts the task that sends the batches on `db`.
    pub fn start(db: PgPool, orders: OrderEvents, outbox: Option<Arc<Notify>>) -> Self {
        let wakeups = Self(Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            ready: Notify::new(),
            orders,
            outbox,
        }));
        tokio::spawn(wakeups.clone().send_batches(db));
        wakeups
    }

    /// What a committed transaction changed: `order`'s status (its long-polls re-read), and, when
    /// `outbox`, the outbox deliveries it may have written.
    pub fn after_commit(&self, order: Option<Uuid>, outbox: bool) {
        if let Some(order_id) = order {
            self.0.orders.wake(order_id);
        }
        if outbox && let Some(senders) = &self.0.outbox {
            senders.notify_one();
        }
        {
            let mut pending = self.lock();
            if let Some(order_id) = order {
                if pending.orders.len() < MAX_BATCH_ORDERS {
                    pending.orders.push(order_id);
                } else {
                    tracing::warn!(%order_id, "too many wake-ups waiting to be sent; this one is dropped");
                }
            }
            pending.outbox |= outbox;
        }
        self.0.ready.notify_one();
    }

    async fn send_batches(self, db: PgPool) {
        loop {
            self.0.ready.notified().await;
            let batch = std::mem::take(&mut *self.lock());
            if batch.is_empty() {
                continue;
            }
            let (mut channels, mut payloads) = (Vec::new(), Vec::new());
            for order_id in batch.orders {
                channels.push(ORDER_STATUS_CHANNEL.to_owned());
                payloads.push(order_id.to_string());
            }
            if batch.outbox {
                channels.push(OUTBOX_CHANNEL.to_owned());
                payloads.push(String::new());
            }
            if let Err(err) = store::notifications::notify_all(&db, &channels, &payloads).await {
                // The other instances' waiters re-read on their timers; nothing else is lost.
                tracing::warn!(error = %err, wakeups = channels.len(), "could not send wake-ups to other instances");
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.0.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
