//! What Postgres allows for each hot path, measured from this process with the same driver and the
//! same concurrency but without the service: the webhook transaction's statements (the store's own
//! functions, called in the order `src/fulfillment.rs` calls them, so the two cannot drift) and the
//! status lookup by primary key.
//!
//! Each ceiling gets one connection per worker, so the service's pool size is something the ratio
//! can reveal rather than something the ceiling shares. Its connections are closed when it ends.

use std::{sync::Arc, time::Duration};

use entitle::{
    outcome::Outcome,
    store::{orders, payment_facts, processed_events},
};
use sqlx::{PgPool, postgres::PgPoolOptions};
use uuid::Uuid;

use crate::{
    measure::{Run, Until, drive},
    service::Service,
    traffic::Order,
};

async fn pool(service: &Service, connections: usize) -> PgPool {
    let pool = PgPoolOptions::new()
        .max_connections(connections as u32)
        .min_connections(connections as u32)
        // No ping per acquire: the ceiling is the SQL alone, as in the service under load, whose pool
        // pings only a connection that sat idle (src/db.rs).
        .test_before_acquire(false)
        .connect(&service.database_url)
        .await
        .expect("a ceiling pool: the service's pool plus C (or P) connections must fit Postgres's max_connections");
    // Open every connection before the clock starts, as the service's warm pool is.
    let warm: Vec<_> = futures::future::join_all((0..connections).map(|_| pool.acquire())).await;
    drop(warm);
    pool
}

/// `count` fresh pending orders, each delivered twice: the same mix of first deliveries and
/// duplicates as the HTTP run.
pub async fn webhook_sql(service: &Service, count: usize, workers: usize) -> Run {
    let run_id = Uuid::new_v4().simple().to_string();
    sqlx::query(
        "insert into orders (id, user_id, plan_id, status, amount, currency, credits, stripe_checkout_session_id)
         select gen_random_uuid(), 'ceiling-user-' || i, 'credits_100', 'pending', 500, 'usd', 100,
                'cs_ceiling_' || $1 || '_' || i
         from generate_series(0, $2 - 1) as i",
    )
    .bind(&run_id)
    .bind(count as i64)
    .execute(&service.db)
    .await
    .expect("ceiling orders");
    let pool = pool(service, workers).await;
    let run_id = Arc::new(run_id);
    let connections = pool.clone();
    let run = drive(workers, Until::Count(count * 2), move |i| {
        let (pool, run_id) = (connections.clone(), run_id.clone());
        async move {
            let n = i / 2;
            let event_id = format!("evt_ceiling_{run_id}_{n}");
            let session_id = format!("cs_ceiling_{run_id}_{n}");
            apply_completed_event(&pool, &event_id, &session_id).await.is_ok()
        }
    })
    .await;
    pool.close().await;
    run
}

/// The fulfilment transaction of a paid one-time order, statement for statement: the claim, the
/// payment intent's lock, the order's lock, the update to paid, the purchase, the look for a
/// reversal that came first, the outcome.
async fn apply_completed_event(pool: &PgPool, event_id: &str, session_id: &str) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    if !processed_events::claim(&mut tx, event_id, "checkout.session.completed").await? {
        return tx.commit().await;
    }
    let payment_intent = format!("pi_{session_id}");
    payment_facts::lock(&mut tx, "payment", &payment_intent).await?;
    let order = orders::lock_by_session(&mut tx, session_id)
        .await?
        .ok_or(sqlx::Error::RowNotFound)?;
    let ids = orders::StripeIds {
        session_id,
        payment_intent: Some(&payment_intent),
        subscription: None,
        customer: None,
    };
    orders::mark_paid(&mut tx, order.id, &ids).await?;
    entitle::credits::grant_purchase(&mut tx, &order.user_id, order.id, order.credits, None, event_id).await?;
    payment_facts::any_facts_for(&mut tx, &payment_intent).await?;
    processed_events::record_outcome(&mut tx, event_id, Outcome::Fulfilled, Some(order.id)).await?;
    tx.commit().await
}

/// The owner-scoped primary-key lookup `/order-status` runs, on the same orders.
pub async fn status_lookup(service: &Service, orders: Arc<Vec<Order>>, workers: usize, duration: Duration) -> Run {
    let pool = pool(service, workers).await;
    let connections = pool.clone();
    let run = drive(workers, Until::Elapsed(duration), move |i| {
        let (pool, orders) = (connections.clone(), orders.clone());
        async move {
            let order = &orders[i % orders.len()];
            type Row = (Uuid, String, String, i64, String, chrono::DateTime<chrono::Utc>, Option<chrono::DateTime<chrono::Utc>>);
            sqlx::query_as::<_, Row>(
                "select id, status, plan_id, amount, currency, created_at, paid_at, amount_refunded from orders where id = $1 and user_id = $2",
            )
            .bind(order.id)
            .bind(&order.user_id)
            .fetch_optional(&pool)
            .await
            .is_ok_and(|row| row.is_some())
        }
    })
    .await;
    pool.close().await;
    run
}
