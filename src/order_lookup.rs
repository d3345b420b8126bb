//! Owner-scoped order lookups, the read behind every `/order-status` poll. Those by order id are
//! answered in batches; those by Checkout Session id (a return page that only has the session id
//! from the redirect) one at a time.
//!
//! At a launch thousands of return pages poll at once, and each lookup costs Postgres far more in
//! round trips and process wake-ups than in the index lookup itself. So lookups that arrive while a
//! query is running queue up and share the next one (`join unnest($1, $2)`). A lookup on a quiet
//! service is still one query; under load one query answers up to `MAX_BATCH`, and the pool's
//! connections stay free for webhooks. Ownership stays in the SQL: a row comes back only for the
//! pair (order id, user id) that asked, so someone else's order is still "not found".
//!
//! If a batch fails (a connection that died with a database restart, say), each of its lookups
//! runs alone on the pool instead, so a request fails only with an error of its own.

use std::sync::Arc;

use sqlx::PgPool;
use tokio::sync::{Mutex, mpsc, oneshot};
use uuid::Uuid;

use crate::{db, orders::OrderView, store::orders};

/// The most lookups one query answers.
const MAX_BATCH: usize = 64;
/// Batches in flight at once. With more, batches get smaller and Postgres does more wake-ups for
/// the same rows; with fewer, a slow query holds everyone up.
const READERS: usize = 2;
/// Lookups waiting beyond this make new requests wait to enqueue (backpressure, not memory).
const QUEUE_CAPACITY: usize = 4096;

#[derive(Clone)]
pub struct OrderLookup {
    db: PgPool,
    queue: mpsc::Sender<Lookup>,
}

struct Lookup {
    order_id: Uuid,
    user_id: String,
    reply: oneshot::Sender<Result<Option<OrderView>, BatchFailed>>,
}

struct BatchFailed;

impl OrderLookup {
    /// Starts the readers; they stop when the last `OrderLookup` clone is dropped.
    pub fn start(db: PgPool) -> Self {
        let (queue, waiting) = mpsc::channel(QUEUE_CAPACITY);
        let waiting = Arc::new(Mutex::new(waiting));
        for _ in 0..READERS {
            tokio::spawn(answer_lookups(db.clone(), waiting.clone()));
        }
        Self { db, queue }
    }

    /// The order with this id if it belongs to `user_id`.
    pub async fn find(&self, order_id: Uuid, user_id: &str) -> Result<Option<OrderView>, sqlx::Error> {
        let (reply, answer) = oneshot::channel();
        let lookup = Lookup {
            order_id,
            user_id: user_id.to_owned(),
            reply,
        };
        if self.queue.send(lookup).await.is_ok()
            && let Ok(Ok(found)) = answer.await
        {
            return Ok(found);
        }
        // The batch failed or the readers are gone: ask alone, so any error is this request's own.
        db::retry_idempotent(&self.db, || orders::find_owned(&self.db, order_id, user_id)).await
    }

    /// The order opened with this Checkout Session if it belongs to `user_id`.
    pub async fn find_by_session(&self, session_id: &str, user_id: &str) -> Result<Option<OrderView>, sqlx::Error> {
        db::retry_idempotent(&self.db, || {
            orders::find_owned_by_session(&self.db, session_id, user_id)
        })
        .await
    }
}

async fn answer_lookups(db: PgPool, waiting: Arc<Mutex<mpsc::Receiver<Lookup>>>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        // The reader holding the lock takes everything queued while the other reader's query ran.
        if waiting.lock().await.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return; // every sender is gone: the app has stopped
        }
        let order_ids: Vec<Uuid> = batch.iter().map(|lookup| lookup.order_id).collect();
        let user_ids: Vec<String> = batch.iter().map(|lookup| lookup.user_id.clone()).collect();
        let rows = db::retry_idempotent(&db, || orders::find_owned_batch(&db, &order_ids, &user_ids)).await;
        match rows {
            Ok(rows) => {
                for lookup in batch.drain(..) {
                    let found = rows
                        .iter()
                        .find(|row| row.order.order_id == lookup.order_id && row.user_id == lookup.user_id)
                        .map(|row| row.order.clone());
                    let _ = lookup.reply.send(Ok(found)); // the request may have given up
                }
            }
            Err(error) => {
                tracing::warn!(%error, lookups = batch.len(), "a batched order lookup failed; each runs alone");
                for lookup in batch.drain(..) {
                    let _ = lookup.reply.send(Err(BatchFailed));
                }
            }
        }
    }
}
