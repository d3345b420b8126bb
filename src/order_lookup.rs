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

use crate::{db, orders::OrderView};

/// The most lookups one query answers.
const MAX_BATCH: usize = 64;
/// Batches in flight at once. With more, batches get smaller and Postgres does more wake-ups for
/// the same rows; with fewer, a slow query holds everyone up.
const READERS: usize = 2;
/// Lookups waiting beyond this make new requests wait to enqueue (backpressure, not memory).
const QUEUE_CAPACITY: usize = 4096;

const COLUMNS: &str = "o.id, o.status, o.plan_id, o.amount, o.currency, o.created_at, o.paid_at, o.amount_refunded";

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

#[derive(sqlx::FromRow)]
struct OwnedOrder {
    user_id: String,
    #[sqlx(flatten)]
    order: OrderView,
}

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
        self.find_one("o.id = $1", order_id, user_id).await
    }

    /// The order opened with this Checkout Session if it belongs to `user_id`.
    pub async fn find_by_session(&self, session_id: &str, user_id: &str) -> Result<Option<OrderView>, sqlx::Error> {
        self.find_one("o.stripe_checkout_session_id = $1", session_id, user_id)
            .await
    }

    async fn find_one<K>(&self, key_matches: &str, key: K, user_id: &str) -> Result<Option<OrderView>, sqlx::Error>
    where
        K: for<'q> sqlx::Encode<'q, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Copy + Send,
    {
        let sql = format!("select {COLUMNS} from orders o where {key_matches} and o.user_id = $2");
        db::retry_idempotent(&self.db, || {
            sqlx::query_as(&sql).bind(key).bind(user_id).fetch_optional(&self.db)
        })
        .await
    }
}

async fn answer_lookups(db: PgPool, waiting: Arc<Mutex<mpsc::Receiver<Lookup>>>) {
    let query = format!(
        "select o.user_id, {COLUMNS}
         from unnest($1::uuid[], $2::text[]) as asked (id, user_id)
         join orders o on o.id = asked.id and o.user_id = asked.user_id"
    );
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        // The reader holding the lock takes everything queued while the other reader's query ran.
        if waiting.lock().await.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return; // every sender is gone: the app has stopped
        }
        let order_ids: Vec<Uuid> = batch.iter().map(|lookup| lookup.order_id).collect();
        let user_ids: Vec<&str> = batch.iter().map(|lookup| lookup.user_id.as_str()).collect();
        let rows: Result<Vec<OwnedOrder>, _> = db::retry_idempotent(&db, || {
            sqlx::query_as(&query).bind(&order_ids).bind(&user_ids).fetch_all(&db)
        })
        .await;
        drop(user_ids);
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
