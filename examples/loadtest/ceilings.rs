//! What Postgres allows for each hot path, measured from this process with the same driver and the
//! same concurrency but without the service: the statements the webhook transaction runs (mirrored
//! from `src/fulfillment.rs`; keep them in step) and the status lookup by primary key.
//!
//! Each ceiling gets one connection per worker, so the service's pool size is something the ratio
//! can reveal rather than something the ceiling shares. Its connections are closed when it ends.

use std::{sync::Arc, time::Duration};

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
        "insert into orders (id, user_id, plan_id, status, amount, currency, stripe_checkout_session_id)
         select gen_random_uuid(), 'ceiling-user-' || i, 'credits_100', 'pending', 500, 'usd',
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

/// The fulfilment transaction of a paid one-time order, statement for statement.
async fn apply_completed_event(pool: &PgPool, event_id: &str, session_id: &str) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let claimed = sqlx::query(
        "insert into processed_webhook_events (event_id, event_type, outcome)
         values ($1, $2, 'processing')
         on conflict (event_id) do nothing",
    )
    .bind(event_id)
    .bind("checkout.session.completed")
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if !claimed {
        return tx.commit().await;
    }
    type Row = (Uuid, String, String, i64, String, Option<String>, i64, Option<String>);
    let (order_id, user_id, _status, _amount, _currency, _session, credits, _entitlement): Row = sqlx::query_as(
        "select o.id, o.user_id, o.status, o.amount, o.currency, o.stripe_checkout_session_id,
                p.credits, p.entitlement
         from orders o join plans p on p.id = o.plan_id
         where o.stripe_checkout_session_id = $1 for no key update of o",
    )
    .bind(session_id)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query(
        "update orders set status = 'paid', paid_at = now(), updated_at = now(),
             stripe_checkout_session_id = coalesce(stripe_checkout_session_id, $2),
             stripe_payment_intent_id = coalesce(stripe_payment_intent_id, $3),
             stripe_subscription_id = coalesce(stripe_subscription_id, $4),
             stripe_customer_id = coalesce(stripe_customer_id, $5)
         where id = $1
         returning pg_notify('order_status', id::text)",
    )
    .bind(order_id)
    .bind(session_id)
    .bind(Some("pi_ceiling"))
    .bind(None::<&str>)
    .bind(None::<&str>)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "insert into credit_ledger (user_id, order_id, kind, delta, stripe_event_id)
         values ($1, $2, 'purchase', $3, $4)
         on conflict do nothing",
    )
    .bind(&user_id)
    .bind(order_id)
    .bind(credits)
    .bind(event_id)
    .execute(&mut *tx)
    .await?;
    sqlx::query("update processed_webhook_events set outcome = $2, order_id = $3 where event_id = $1")
        .bind(event_id)
        .bind("fulfilled")
        .bind(order_id)
        .execute(&mut *tx)
        .await?;
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
