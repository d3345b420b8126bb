//! What Postgres allows for each hot path, measured from this process with the same driver and the
//! same concurrency but without the service: the webhook transaction's statements (the store's own
//! functions, called in the order `src/fulfillment.rs` calls them, so the two cannot drift), the
//! status lookup by primary key, and for the credits API the account's primary-key select, the
//! check's balance read and the debit's one `credit_spend` statement (the store's own functions).
//!
//! Each ceiling gets one connection per worker, so the service's pool size is something the ratio
//! can reveal rather than something the ceiling shares. Its connections are closed when it ends.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use entitle::{
    outcome::Outcome,
    store::{
        credit_ledger::{self, NewSpend, SpendKind, SpendOutcome},
        orders, payment_facts, processed_events,
    },
};
use sqlx::{PgPool, postgres::PgPoolOptions};
use uuid::Uuid;

use crate::{
    credits::debit_credits,
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
    if !processed_events::claim(
        &mut tx,
        event_id,
        "checkout.session.completed",
        chrono::Utc::now().timestamp(),
    )
    .await?
    {
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
        buyer_email: Some("customer@example.com"),
    };
    let charged = orders::PaidAmounts {
        paid: order.amount,
        discount: 0,
        tax: 0,
    };
    orders::mark_paid(&mut tx, order.id, &ids, &charged).await?;
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

/// Gives each user `credits` with the domain's own manual grant (the same `credit_grant` statement
/// `POST /v1/grants` runs), for the ceilings' users, which the service never sees.
pub async fn seed_grants(service: &Service, users: Arc<Vec<String>>, credits: i64, workers: usize) {
    let pool = pool(service, workers).await;
    let connections = pool.clone();
    let run = drive(workers, Until::Count(users.len()), move |i| {
        let (pool, users) = (connections.clone(), users.clone());
        async move {
            let request = entitle::credits::ManualGrantRequest {
                user_id: users[i].clone(),
                credits,
                idempotency_key: format!("loadtest-seed-{}", users[i]),
                expires_at: None,
                reason: Some("load test ceiling".into()),
            };
            entitle::credits::grant_manual(&pool, request).await.is_ok()
        }
    })
    .await;
    pool.close().await;
    assert_eq!(run.failed, 0, "some ceiling seed grants failed");
}

/// The credits tables' primary-key select: one user's account row, the users in turn.
pub async fn account_lookup(service: &Service, users: Arc<Vec<String>>, workers: usize, duration: Duration) -> Run {
    let pool = pool(service, workers).await;
    let connections = pool.clone();
    let run = drive(workers, Until::Elapsed(duration), move |i| {
        let (pool, users) = (connections.clone(), users.clone());
        async move {
            sqlx::query_as::<_, (String, i64, i64)>(
                "select user_id, overdrawn, version from credit_accounts where user_id = $1",
            )
            .bind(&users[i % users.len()])
            .fetch_optional(&pool)
            .await
            .is_ok_and(|row| row.is_some())
        }
    })
    .await;
    pool.close().await;
    run
}

/// What `POST /v1/check` with `credits` runs: the store's balance read, the users in turn.
pub async fn check_sql(service: &Service, users: Arc<Vec<String>>, workers: usize, duration: Duration) -> Run {
    let pool = pool(service, workers).await;
    let connections = pool.clone();
    let run = drive(workers, Until::Elapsed(duration), move |i| {
        let (pool, users) = (connections.clone(), users.clone());
        async move {
            credit_ledger::balance(&pool, &users[i % users.len()])
                .await
                .is_ok_and(|balance| !balance.due && balance.available >= 1)
        }
    })
    .await;
    pool.close().await;
    run
}

/// What the debits of a spend ceiling did.
#[derive(Default)]
pub struct Spends {
    pub spent: AtomicUsize,
    pub refused: AtomicUsize,
}

/// `POST /v1/usage`'s one statement (the store's `credit_spend` call), operation i for user
/// `i % users.len()` with its own key and `debit_credits(i)` credits, as the HTTP run sends them.
/// A refusal (not enough credits) is an answer, not an error.
pub async fn spend_sql(
    service: &Service,
    users: Arc<Vec<String>>,
    key_prefix: &'static str,
    workers: usize,
    until: Until,
) -> (Run, Arc<Spends>) {
    let pool = pool(service, workers).await;
    let spends = Arc::new(Spends::default());
    let (connections, counted) = (pool.clone(), spends.clone());
    let run = drive(workers, until, move |i| {
        let (pool, users, spends) = (connections.clone(), users.clone(), counted.clone());
        async move {
            let key = format!("{key_prefix}-{i}");
            // The service sends the SHA-256 of the request; any 64 hex digits cost the SQL the same.
            let hash = format!("{i:064x}");
            let spend = NewSpend {
                user_id: &users[i % users.len()],
                kind: SpendKind::Usage,
                idempotency_key: &key,
                request_hash: &hash,
                credits: debit_credits(i),
                expires_at: None,
                description: None,
                metadata: None,
            };
            let counter = match credit_ledger::spend(&pool, &spend).await.map(|answer| answer.outcome) {
                Ok(SpendOutcome::Spent) => &spends.spent,
                Ok(SpendOutcome::Insufficient) => &spends.refused,
                _ => return false,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            true
        }
    })
    .await;
    pool.close().await;
    (run, spends)
}
