//! Reads that many requests make at once, answered in batches: the owner-scoped order lookup
//! behind every `/order-status` poll, and the balance read behind every `/v1/check`.
//!
//! Under load such a read costs Postgres far more in round trips and process wake-ups than in the
//! index lookup itself. So reads that arrive while a query is running queue up and share the next
//! one (a query over `unnest($1)`). A read on a quiet service is still one query; under load one
//! query answers up to `MAX_BATCH`, and the pool's connections stay free for the writes.
//!
//! If a batch fails (a connection that died with a database restart, say), each of its reads is
//! told so and runs alone instead, so a request fails only with an error of its own.

use std::{future::Future, sync::Arc};

use tokio::sync::{Mutex, mpsc, oneshot};

/// The most reads one query answers.
const MAX_BATCH: usize = 64;
/// Batches in flight at once. With more, batches get smaller and Postgres does more wake-ups for
/// the same rows; with fewer, a slow query holds everyone up.
const READERS: usize = 2;
/// Reads waiting beyond this make new requests wait to enqueue (backpressure, not memory).
const QUEUE_CAPACITY: usize = 4096;

/// A batched read from keys `K` to answers `V`.
pub struct Batched<K, V> {
    queue: mpsc::Sender<Ask<K, V>>,
}

impl<K, V> Clone for Batched<K, V> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
        }
    }
}

struct Ask<K, V> {
    key: K,
    /// `None`: the batch failed.
    reply: oneshot::Sender<Option<V>>,
}

impl<K: Send + 'static, V: Send + 'static> Batched<K, V> {
    /// Starts the readers; they stop when the last clone is dropped. `read` answers a batch of
    /// keys with one answer per key, in the keys' order.
    pub fn start<F, Fut>(read: F) -> Self
    where
        F: Fn(Vec<K>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<V>, sqlx::Error>> + Send + 'static,
    {
        let (queue, waiting) = mpsc::channel(QUEUE_CAPACITY);
        let waiting = Arc::new(Mutex::new(waiting));
        for _ in 0..READERS {
            tokio::spawn(answer(read.clone(), waiting.clone()));
        }
        Self { queue }
    }

    /// The answer for `key`, or `None` when its batch failed or the readers are gone: the caller
    /// then reads alone, so that any error is its own.
    pub async fn ask(&self, key: K) -> Option<V> {
        let (reply, answer) = oneshot::channel();
        self.queue.send(Ask { key, reply }).await.ok()?;
        answer.await.ok().flatten()
    }
}

async fn answer<K, V, F, Fut>(read: F, waiting: Arc<Mutex<mpsc::Receiver<Ask<K, V>>>>)
where
    F: Fn(Vec<K>) -> Fut,
    Fut: Future<Output = Result<Vec<V>, sqlx::Error>>,
{
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        // The reader holding the lock takes everything queued while the other reader's query ran.
        if waiting.lock().await.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return; // every sender is gone: the app has stopped
        }
        let (keys, replies): (Vec<K>, Vec<_>) = batch.drain(..).map(|ask| (ask.key, ask.reply)).unzip();
        let asked = keys.len();
        match read(keys).await {
            Ok(answers) if answers.len() == asked => {
                for (reply, answer) in replies.into_iter().zip(answers) {
                    let _ = reply.send(Some(answer)); // the request may have given up
                }
            }
            Ok(answers) => {
                tracing::error!(
                    asked,
                    answered = answers.len(),
                    "a batched read answered the wrong number of keys"
                );
                replies.into_iter().for_each(|reply| drop(reply.send(None)));
            }
            Err(error) => {
                tracing::warn!(%error, reads = asked, "a batched read failed; each runs alone");
                replies.into_iter().for_each(|reply| drop(reply.send(None)));
            }
        }
    }
}
