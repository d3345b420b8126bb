//! `SEED=large`: the database as a service that has run for a while holds it, before any
//! scenario runs: 1,000,000 paid orders of 100,000 users, their grants and accounts, 10,000,000
//! ledger rows and 2,000,000 processed events, all older than the drift check's window (so no job
//! turns to Stripe for them). Written with set-based SQL, in minutes: the rows are what the
//! service's own paths leave (one purchase row and grant per order, usage rows, each event once),
//! written directly because a million checkouts through the API would take hours. Then one
//! "heavy" user gets 10,000 ledger rows through the API itself (100 grants, 9,900 debits of 1-3 credits), whose
//! `GET /entitlements` and balance are measured, and the hot paths' query plans are shown.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use hyper::header::AUTHORIZATION;
use serde_json::json;

use crate::{
    connections::Connections,
    credits,
    measure::{Run, Until, drive},
    service::{API_KEY, Service},
    traffic::token_for,
};

pub const SEED_ORDERS: i64 = 1_000_000;
pub const SEED_USERS: i64 = 100_000;
pub const SEED_LEDGER_ROWS: i64 = 10_000_000;
pub const SEED_EVENTS: i64 = 2_000_000;
pub const HEAVY_USER: &str = "seed-heavy-user";
/// One grant, one ledger row: the heavy user's reads are compared with this user's.
pub const LIGHT_USER: &str = "seed-light-user";
/// Callers of the heavy user's reads: few, so the p99 is the read's own and not a queue's (at
/// P = 64 on two cores, latency is mostly waiting: 64 / throughput).
pub const READ_CALLERS: usize = 8;
const HEAVY_GRANTS: usize = 100;
const HEAVY_GRANT_CREDITS: i64 = 1_000;
const HEAVY_DEBITS: usize = 9_900;

pub struct Seeded {
    pub took: Duration,
    pub orders: i64,
    pub ledger_rows: i64,
    pub events: i64,
    pub heavy_ledger_rows: i64,
}

/// Which databases the run measures (`SEED`): `empty`, `large` (seeded) or `both` (the default:
/// empty first, then seeded, for the comparison).
pub fn databases() -> Vec<bool> {
    match std::env::var("SEED").as_deref() {
        Ok("both") | Err(_) => vec![false, true],
        Ok("large") => vec![true],
        Ok("" | "none" | "empty") => vec![false],
        Ok(other) => {
            eprintln!("loadtest: SEED is both (the default), empty or large, not {other:?}");
            std::process::exit(2)
        }
    }
}

/// The bulk rows, directly; triggers are off for it (`session_replication_role = replica`: no
/// outbox messages for history, no foreign-key checks row by row), so the rows are made
/// consistent here: every grant's user has an account whose totals are its grants'.
pub async fn bulk(service: &Service) -> Duration {
    let started = Instant::now();
    let mut conn = service.db.acquire().await.expect("a connection for seeding");
    let statements = [
        "set session_replication_role = replica".to_owned(),
        // Paid 40 to 400 days ago: outside `entitle verify`'s default window of 30 days.
        format!(
            "insert into orders (id, user_id, plan_id, status, amount, currency, credits,
                                 stripe_checkout_session_id, stripe_payment_intent_id,
                                 created_at, paid_at, updated_at, amount_paid)
             select gen_random_uuid(), 'seed-user-' || (i % {SEED_USERS}), 'credits_100', 'paid', 500, 'usd', 100,
                    'cs_seed_' || i, 'pi_seed_' || i, t, t, t, 500
             from generate_series(1, {SEED_ORDERS}) i,
                  lateral (select now() - interval '40 days' - (i % 360) * interval '1 day' as t) x"
        ),
        // One purchase grant per order; nine in ten are spent.
        "insert into credit_grants (user_id, source, order_id, granted, remaining, first_remaining, created_at)
         select user_id, 'purchase', id, 100, case when hashtext(id::text) % 10 = 0 then 100 else 0 end, 100, paid_at
         from orders where user_id like 'seed-user-%'"
            .to_owned(),
        "insert into credit_accounts (user_id, available, version, updated_at)
         select user_id, sum(remaining), count(*), max(created_at) from credit_grants
         where user_id like 'seed-user-%' group by user_id"
            .to_owned(),
        // The purchase row of each order, and usage rows for the rest of the ten million.
        "insert into credit_ledger (user_id, order_id, kind, delta, grant_id, stripe_event_id, created_at)
         select g.user_id, g.order_id, 'purchase', 100, g.id, 'evt_seed_' || g.order_id, g.created_at
         from credit_grants g where g.user_id like 'seed-user-%'"
            .to_owned(),
        format!(
            "insert into credit_ledger (user_id, kind, delta, created_at)
             select 'seed-user-' || (i % {SEED_USERS}), 'usage', -1, now() - interval '40 days' - (i % 360) * interval '1 day'
             from generate_series(1, {SEED_LEDGER_ROWS} - {SEED_ORDERS}) i"
        ),
        // Each order's checkout.session.completed, and as many other events without an order.
        "insert into processed_webhook_events (event_id, event_type, outcome, order_id, received_at, event_created)
         select 'evt_seed_' || id, 'checkout.session.completed', 'fulfilled', id, paid_at, paid_at
         from orders where user_id like 'seed-user-%'"
            .to_owned(),
        format!(
            "insert into processed_webhook_events (event_id, event_type, outcome, received_at, event_created)
             select 'evt_seed_other_' || i, 'invoice.paid', 'ignored', t, t
             from generate_series(1, {SEED_EVENTS} - {SEED_ORDERS}) i,
                  lateral (select now() - interval '40 days' - (i % 360) * interval '1 day' as t) x"
        ),
        "set session_replication_role = origin".to_owned(),
        "vacuum (analyze) orders, credit_grants, credit_accounts, credit_ledger, processed_webhook_events".to_owned(),
    ];
    for statement in &statements {
        let step = Instant::now();
        sqlx::raw_sql(statement)
            .execute(&mut *conn)
            .await
            .unwrap_or_else(|err| panic!("seeding failed on {statement}: {err}"));
        eprintln!(
            "         seeded in {:.1}s: {}",
            step.elapsed().as_secs_f64(),
            statement.split_whitespace().take(4).collect::<Vec<_>>().join(" ")
        );
    }
    started.elapsed()
}

/// The heavy user's 10,000 ledger rows, through the API: 100 grants, then 9,900 debits.
pub async fn heavy_user(http: Arc<Connections>, workers: usize) {
    let authorization = Arc::new(format!("Bearer {API_KEY}"));
    let (h, a) = (http.clone(), authorization.clone());
    let grants = drive(workers, Until::Count(HEAVY_GRANTS), move |i| {
        let (http, authorization) = (h.clone(), a.clone());
        async move {
            let body = json!({
                "userId": HEAVY_USER, "credits": HEAVY_GRANT_CREDITS, "reason": "load test",
                "idempotencyKey": format!("seed-heavy-grant-{i}"),
            });
            http.post_json(
                "/v1/grants",
                &[(AUTHORIZATION, &authorization)],
                body.to_string().into(),
            )
            .await
            .is_some_and(|(status, _)| status.is_success())
        }
    })
    .await;
    assert_eq!(grants.failed, 0, "the heavy user's grants failed");
    let light = json!({
        "userId": LIGHT_USER, "credits": HEAVY_GRANT_CREDITS, "reason": "load test", "idempotencyKey": "seed-light-grant",
    });
    let answer = http
        .post_json(
            "/v1/grants",
            &[(AUTHORIZATION, &authorization)],
            light.to_string().into(),
        )
        .await;
    assert!(
        answer.is_some_and(|(status, _)| status.is_success()),
        "the light user's grant failed"
    );
    // The credits scenario's own driver: 1, 2 or 3 credits each, 9,900 of them well within the grants.
    let (debits, _) = credits::usage(
        http,
        vec![HEAVY_USER.to_owned()],
        "seed-heavy-debit",
        workers,
        Until::Count(HEAVY_DEBITS),
        false,
    )
    .await;
    assert_eq!(debits.failed, 0, "the heavy user's debits failed");
}

pub struct HeavyReads {
    pub entitlements: Run,
    pub balance: Run,
    /// The same two reads of the light user.
    pub light_entitlements: Run,
    pub light_balance: Run,
}

/// `GET /entitlements` (the user's token) and `GET /v1/users/{id}/balance` (the API key) of the
/// heavy user and of the light one, `READ_CALLERS` at a time for `duration` each.
pub async fn heavy_reads(http: Arc<Connections>, duration: Duration) -> HeavyReads {
    let (entitlements, balance) = reads(http.clone(), HEAVY_USER, duration).await;
    let (light_entitlements, light_balance) = reads(http, LIGHT_USER, duration).await;
    HeavyReads {
        entitlements,
        balance,
        light_entitlements,
        light_balance,
    }
}

async fn reads(http: Arc<Connections>, user: &str, duration: Duration) -> (Run, Run) {
    let callers = READ_CALLERS;
    let token = Arc::new(format!("Bearer {}", token_for(user)));
    let h = http.clone();
    let entitlements = drive(callers, Until::Elapsed(duration), move |_| {
        let (http, token) = (h.clone(), token.clone());
        async move {
            http.get("/entitlements", &[(AUTHORIZATION, &token)])
                .await
                .is_some_and(|(status, _)| status.is_success())
        }
    })
    .await;
    let key = Arc::new(format!("Bearer {API_KEY}"));
    let path = Arc::new(format!("/v1/users/{user}/balance"));
    let balance = drive(callers, Until::Elapsed(duration), move |_| {
        let (http, key, path) = (http.clone(), key.clone(), path.clone());
        async move {
            http.get(&path, &[(AUTHORIZATION, &key)])
                .await
                .is_some_and(|(status, _)| status.is_success())
        }
    })
    .await;
    (entitlements, balance)
}

/// What was seeded, counted back from the tables.
pub async fn counted(service: &Service, took: Duration) -> Seeded {
    let count = |sql: &'static str| {
        let db = service.db.clone();
        async move { sqlx::query_scalar::<_, i64>(sql).fetch_one(&db).await.unwrap() }
    };
    Seeded {
        took,
        orders: count("select count(*) from orders").await,
        ledger_rows: count("select count(*) from credit_ledger").await,
        events: count("select count(*) from processed_webhook_events").await,
        heavy_ledger_rows: sqlx::query_scalar("select count(*) from credit_ledger where user_id = $1")
            .bind(HEAVY_USER)
            .fetch_one(&service.db)
            .await
            .unwrap(),
    }
}

/// One hot path's plan on the seeded tables.
pub struct Plan {
    pub path: &'static str,
    pub plan: String,
}

impl Plan {
    /// A sequential scan of any table: on these sizes, a hot path must not have one.
    pub fn scans_a_table(&self) -> bool {
        self.plan.contains("Seq Scan")
    }
}

/// The plans of the hot paths' statements on the seeded tables: each copied from `src/store/` (the
/// statement a path sends, with seeded values for its parameters; keep them in step).
pub async fn plans(service: &Service) -> Vec<Plan> {
    let order: (uuid::Uuid, String, String) = sqlx::query_as(
        "select id, user_id, stripe_checkout_session_id from orders where user_id = 'seed-user-4242' limit 1",
    )
    .fetch_one(&service.db)
    .await
    .unwrap();
    let (id, user, session) = (order.0.to_string(), order.1, order.2);
    let statements: Vec<(&'static str, String)> = vec![
        (
            "POST /order-status, a batch of lookups (store::orders)",
            format!(
                "select o.user_id, o.id, o.status, o.plan_id, o.amount, o.currency, o.created_at, o.paid_at
                 from unnest(array['{id}'::uuid, gen_random_uuid()], array['{user}', 'someone']) as asked (id, user_id)
                 join orders o on o.id = asked.id and o.user_id = asked.user_id"
            ),
        ),
        (
            "POST /payment-webhook: the event claimed (store::processed_webhook_events)",
            "insert into processed_webhook_events (event_id, event_type, outcome) values ('evt_seed_plan', 'checkout.session.completed', 'processing') on conflict (event_id) do nothing".to_owned(),
        ),
        (
            "POST /payment-webhook: the order by its session (store::orders)",
            format!("select id, user_id, status from orders where stripe_checkout_session_id = '{session}' for no key update"),
        ),
        (
            "POST /payment-webhook: the purchase row (credit_ledger_one_purchase_per_order)",
            format!("select 1 from credit_ledger where order_id = '{id}' and kind = 'purchase'"),
        ),
        (
            "GET /v1/users/{id}/balance, POST /v1/check (store::credit_ledger::balances)",
            format!(
                "select coalesce(a.available, 0), coalesce(a.reserved, 0), coalesce(a.overdrawn, 0), coalesce(a.version, 0)
                 from unnest(array['{HEAVY_USER}']) with ordinality as asked (user_id, n)
                 left join credit_accounts a on a.user_id = asked.user_id order by asked.n"
            ),
        ),
        (
            "balance: the heavy user's spendable grants (credit_grants_spendable)",
            format!(
                "select id, remaining, expires_at from credit_grants where user_id = '{HEAVY_USER}' and remaining > 0
                 order by expires_at nulls last, created_at"
            ),
        ),
        (
            "GET /entitlements (store::entitlements)",
            format!("select key, status, current_period_end, cancel_at_period_end from entitlements where user_id = '{HEAVY_USER}'"),
        ),
        (
            "the latest ledger rows of a user (credit_ledger_user_latest)",
            format!("select id, kind, delta from credit_ledger where user_id = '{HEAVY_USER}' order by id desc limit 50"),
        ),
    ];
    let mut conn = service.db.acquire().await.unwrap();
    let mut plans = Vec::new();
    for (path, sql) in statements {
        let rows: Vec<String> = sqlx::query_scalar(&format!("explain (costs off) {sql}"))
            .fetch_all(&mut *conn)
            .await
            .unwrap_or_else(|err| panic!("explain of {path}: {err}"));
        plans.push(Plan {
            path,
            plan: rows.join("\n"),
        });
    }
    plans
}
