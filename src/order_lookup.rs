//! Owner-scoped order lookups, the read behind every `/order-status` poll. Those by order id are
//! answered in batches (`batched`: at a launch thousands of return pages poll at once); those by
//! Checkout Session id (a return page that only has the session id from the redirect) one at a
//! time. Ownership stays in the SQL: a row comes back only for the pair (order id, user id) that
//! asked, so someone else's order is still "not found".

use sqlx::PgPool;
use uuid::Uuid;

use crate::{batched::Batched, db, orders::OrderView, store::orders};

#[derive(Clone)]
pub struct OrderLookup {
    db: PgPool,
    by_id: Batched<(Uuid, String), Option<OrderView>>,
}

impl OrderLookup {
    /// Starts the batch readers; they stop when the last `OrderLookup` clone is dropped.
    pub fn start(db: PgPool) -> Self {
        let pool = db.clone();
        let by_id = Batched::start(move |asked: Vec<(Uuid, String)>| {
            let db = pool.clone();
            async move {
                let (order_ids, user_ids): (Vec<Uuid>, Vec<String>) = asked.iter().cloned().unzip();
                let rows = db::retry_idempotent(&db, || orders::find_owned_batch(&db, &order_ids, &user_ids)).await?;
                Ok(asked
                    .iter()
                    .map(|(order_id, user_id)| {
                        rows.iter()
                            .find(|row| row.order.order_id == *order_id && row.user_id == *user_id)
                            .map(|row| row.order.clone())
                    })
                    .collect())
            }
        });
        Self { db, by_id }
    }

    /// The order with this id if it belongs to `user_id`.
    pub async fn find(&self, order_id: Uuid, user_id: &str) -> Result<Option<OrderView>, sqlx::Error> {
        if let Some(found) = self.by_id.ask((order_id, user_id.to_owned())).await {
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
