//! The load benchmark: `cargo run --release --example loadtest` (see docs/performance.md).
//!
//! Starts the service in its own process (this executable again; `SERVICE_PROCESS=same` keeps it in
//! this one) against a fresh database and the Stripe emulator, then runs the scenarios
//! (`SCENARIOS`, a comma-separated subset of `orders,check,usage,one-user`; all by default), each
//! hot path next to the same SQL run directly against Postgres (its ceiling), and prints one table
//! of the paths and one of the targets:
//!
//! - `orders`: opens N orders through the API, delivers every order's signed
//!   `checkout.session.completed` twice from C concurrent senders, checks that each order granted
//!   exactly 100 credits, polls order status from P concurrent clients for T seconds;
//! - `check`: P callers ask `POST /v1/check` for 1 credit of U users (granted through the API) for
//!   T seconds, beside the credit account's primary-key select and the check's own balance read;
//! - `usage`: C callers spend 1-3 credits per `POST /v1/usage` spread over U users for T seconds,
//!   beside the `credit_spend` statement itself over U other users; then every user's API balance,
//!   ledger sum and spends are checked against the 200s;
//! - `one-user`: C callers spend one user's B credits until they run out (about 5 % of the requests
//!   get 402), beside the same statement on another user with B credits; then the 200s must form
//!   one serial history that never overspent.
//!
//! With the orders scenario the app webhooks are on (`OUTBOX=off` turns them off): the outbox sends
//! every `order.paid` and `entitlements.updated` to a receiver in this process, which times each
//! message from its writing transaction to its arrival, while the backlog is sampled.
//!
//! Each hot path's ceiling is taken twice: by the same statements sent from Rust (sqlx, the
//! store's own functions, `ceilings.rs`) and, for the webhook and the status select, by
//! PostgreSQL's `pgbench` running the naive SQL (`pgbench.rs`, `pgbench/*.sql`), the yardstick the
//! targets use.
//!
//! One command runs every pass: by default the empty database with one service process, the same
//! on a seeded database (1,000,000 orders, 10,000,000 ledger rows, 2,000,000 processed events and
//! a user with 10,000 ledger rows, whose entitlements and balance reads are measured after the
//! scenarios, and the hot paths' query plans printed; `seed.rs`), then two and three service
//! processes on the empty database. Each pass prints its paths and checks; the end prints the
//! passes side by side, the seeded against the empty, the process counts with the CPU each used,
//! and every target.
//!
//! Settings come from the environment: N, C, P, T (seconds), U, B, SCENARIOS, OUTBOX, SEED
//! (`both`, `empty` or `large`), INSTANCES (default `1,2,3`). A failed correctness check (wrong
//! credits, a wrong answer, a ceiling error) fails the run; a missed performance target is printed
//! as `MISS` but does not, since the machine is shared.

mod ceilings;
mod connections;
mod cpu;
mod credits;
mod dbstats;
mod measure;
mod pgbench;
mod receiver;
mod seed;
mod service;
mod summary;
mod traffic;

use std::{
    collections::HashMap,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use measure::{Run, Until, peak_rss_mib, reset_peak_rss, rss_mib};
use traffic::Order;

struct Settings {
    orders: usize,
    senders: usize,
    pollers: usize,
    poll_for: Duration,
    users: usize,
    one_user_balance: i64,
    scenarios: Scenarios,
}

#[derive(Clone, Copy)]
struct Scenarios {
    orders: bool,
    check: bool,
    usage: bool,
    one_user: bool,
}

impl Scenarios {
    const NAMES: &str = "orders,check,usage,one-user";

    fn from_env() -> Self {
        let list = std::env::var("SCENARIOS").unwrap_or_else(|_| Self::NAMES.to_owned());
        let mut scenarios = Self {
            orders: false,
            check: false,
            usage: false,
            one_user: false,
        };
        for name in list.split(',').map(str::trim).filter(|name| !name.is_empty()) {
            match name {
                "orders" => scenarios.orders = true,
                "check" => scenarios.check = true,
                "usage" => scenarios.usage = true,
                "one-user" => scenarios.one_user = true,
                "all" => {
                    scenarios = Self {
                        orders: true,
                        check: true,
                        usage: true,
                        one_user: true,
                    }
                }
                _ => {
                    eprintln!(
                        "loadtest: SCENARIOS is a comma-separated subset of {}, not {list:?}",
                        Self::NAMES
                    );
                    std::process::exit(2)
                }
            }
        }
        if !(scenarios.orders || scenarios.check || scenarios.usage || scenarios.one_user) {
            eprintln!("loadtest: SCENARIOS names none of {}", Self::NAMES);
            std::process::exit(2)
        }
        scenarios
    }

    fn names(self) -> String {
        let all = [
            (self.orders, "orders"),
            (self.check, "check"),
            (self.usage, "usage"),
            (self.one_user, "one-user"),
        ];
        all.iter()
            .filter(|(on, _)| *on)
            .map(|(_, name)| *name)
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn setting(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Err(_) => default,
        Ok(value) => value
            .trim()
            .trim_end_matches('s')
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .unwrap_or_else(|| {
                eprintln!("loadtest: {name} must be a positive whole number, not {value:?}");
                std::process::exit(2)
            }),
    }
}

/// Many small, short-lived allocations per request from both runtime threads: mimalloc's per-thread
/// free lists serve them at a fraction of glibc malloc's cost (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// What the orders scenario measured.
struct OrdersResult {
    webhooks: Run,
    webhooks_cpu: cpu::Used,
    webhooks_db: dbstats::PerRequest,
    webhook_ceiling: Run,
    statuses: Run,
    statuses_cpu: cpu::Used,
    statuses_db: dbstats::PerRequest,
    status_ceiling: Run,
    /// The same paths' ceilings taken by pgbench; none without pgbench on this machine.
    pgbench: Option<PgbenchCeilings>,
    credits: String,
    outbox: Option<OutboxResult>,
    fulfilled: usize,
    duplicates: usize,
    wrong_answers: usize,
}

/// pgbench's runs of the naive fulfilment SQL and the status select, and whether its orders were
/// each paid once with their credits.
struct PgbenchCeilings {
    webhook: Result<Run, String>,
    status: Result<Run, String>,
    paid: Result<(), String>,
}

impl PgbenchCeilings {
    fn errors(&self) -> Vec<&str> {
        [
            self.webhook.as_ref().err(),
            self.status.as_ref().err(),
            self.paid.as_ref().err(),
        ]
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect()
    }
}

/// How the outbox kept up with the webhook burst.
struct OutboxResult {
    written: usize,
    seen: usize,
    requests: usize,
    /// Largest number of pending deliveries sampled during the burst.
    max_pending: i64,
    /// How long after the burst's last answer the backlog was empty; none if not within a minute.
    drained_after: Option<Duration>,
    /// Commit to first arrival per message, sorted.
    latencies: Vec<Duration>,
}

impl OutboxResult {
    fn percentile_ms(&self, q: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let rank = ((self.latencies.len() as f64 * q).ceil() as usize).clamp(1, self.latencies.len());
        self.latencies[rank - 1].as_secs_f64() * 1000.0
    }
}

struct CheckResult {
    checks: Run,
    checks_cpu: cpu::Used,
    checks_db: dbstats::PerRequest,
    account_ceiling: Run,
    balance_ceiling: Run,
    not_allowed: usize,
}

struct UsageResult {
    usage: Run,
    usage_cpu: cpu::Used,
    usage_db: dbstats::PerRequest,
    ceiling: Run,
    ceiling_refused: usize,
    totals: Result<String, String>,
}

struct OneUserResult {
    usage: Run,
    ceiling: Run,
    ok: usize,
    refused: usize,
    ceiling_spent: usize,
    ceiling_refused: usize,
    totals: Result<String, String>,
}

/// One pass of the command: a fresh database (empty or seeded) and this many service processes.
#[derive(Clone, Copy)]
struct Pass {
    seeded: bool,
    instances: usize,
}

impl Pass {
    fn name(self) -> String {
        let data = if self.seeded {
            "seeded database"
        } else {
            "empty database"
        };
        let processes = if self.instances == 1 { "process" } else { "processes" };
        format!("{data}, {} service {processes}", self.instances)
    }

    /// The databases `SEED` asks for with the first of `INSTANCES` (default `1,2,3`), then the
    /// other instance counts on the first database.
    fn from_env() -> Vec<Self> {
        let list = std::env::var("INSTANCES").unwrap_or_else(|_| "1,2,3".to_owned());
        let instances: Vec<usize> = list
            .split(',')
            .map(|n| n.trim().parse().ok().filter(|n| (1..=8).contains(n)))
            .collect::<Option<_>>()
            .unwrap_or_else(|| {
                eprintln!("loadtest: INSTANCES is a comma-separated list of 1 to 8, not {list:?}");
                std::process::exit(2)
            });
        let databases = seed::databases();
        let mut passes: Vec<Self> = databases
            .iter()
            .map(|&seeded| Self {
                seeded,
                instances: instances[0],
            })
            .collect();
        passes.extend(instances[1..].iter().map(|&instances| Self {
            seeded: databases[0],
            instances,
        }));
        passes
    }
}

#[tokio::main]
async fn main() {
    let settings = Settings {
        orders: setting("N", 2000) as usize,
        senders: setting("C", 32) as usize,
        pollers: setting("P", 64) as usize,
        poll_for: Duration::from_secs(setting("T", 10)),
        users: setting("U", 1000) as usize,
        one_user_balance: setting("B", 20_000) as i64,
        scenarios: Scenarios::from_env(),
    };
    let passes = Pass::from_env();
    let mut results = Vec::new();
    let mut failures = 0;
    for (i, pass) in passes.iter().enumerate() {
        eprintln!("== pass {} of {}: {}", i + 1, passes.len(), pass.name());
        let result = run(&settings, *pass).await;
        let report = Report::of(&settings, &result);
        println!();
        println!("## Pass {} of {}: {}", i + 1, passes.len(), pass.name());
        report.print_paths();
        failures += report.print_checks();
        report.print_plans();
        results.push(result);
    }
    let reports: Vec<Report> = results.iter().map(|result| Report::of(&settings, result)).collect();
    summary::print(&reports);
    // A ceiling that failed measures nothing, and wrong credits are a correctness bug: neither may
    // pass as a result.
    if failures > 0 {
        eprintln!("loadtest: {failures} checks failed (see the lines above)");
        std::process::exit(1);
    }
}

/// Everything one pass measured.
struct PassResult {
    pass: Pass,
    pool_size: u32,
    service_alone: bool,
    orders: Option<OrdersResult>,
    check: Option<CheckResult>,
    usage: Option<UsageResult>,
    one_user: Option<OneUserResult>,
    memory: Memory,
    seeded: Option<seed::Seeded>,
    heavy: Option<seed::HeavyReads>,
    plans: Vec<seed::Plan>,
}

async fn run(settings: &Settings, pass: Pass) -> PassResult {
    let scenarios = settings.scenarios;
    let started = Instant::now();
    let outbox_on = scenarios.orders && std::env::var("OUTBOX").map_or(true, |v| v != "off");
    let receiver = receiver::Receiver::default();
    let app_webhook = match outbox_on {
        true => Some(receiver.start().await),
        false => None,
    };
    let service = service::start(app_webhook.as_deref(), pass.instances).await;
    let proc_dir = service.process.proc_dir();
    let progress = |step: &str| {
        eprintln!(
            "[{:>5.1}s, service RSS {:.0} MiB] {step}",
            started.elapsed().as_secs_f64(),
            rss_mib(&proc_dir)
        );
    };
    let http = traffic::http_client(settings.senders.max(settings.pollers));
    progress(&format!(
        "service up ({} process(es), pool {} each, logs in {}); scenarios {}",
        pass.instances,
        service.pool_size,
        service.log_files(),
        scenarios.names()
    ));
    let service_pids = service.pids();
    let connections = Arc::new(connections::Connections::to_all(service.addresses.clone()));
    let seeded = match pass.seeded {
        true => {
            progress("seeding the database's history");
            let took = seed::bulk(&service).await;
            progress("the heavy user's 10,000 ledger rows, through the API");
            seed::heavy_user(connections.clone(), settings.senders).await;
            Some(seed::counted(&service, took).await)
        }
        false => None,
    };

    // Setup, before the memory window: the orders and their payments, the credits' grants.
    let paid_orders = if scenarios.orders {
        progress(&format!("opening {} checkouts", settings.orders));
        let orders = traffic::open_checkouts(&service, &http, settings.orders, settings.senders).await;
        let events = traffic::pay_all(&service, &orders);
        let pgbench_orders = match (pgbench::available(), settings.senders.is_multiple_of(2)) {
            (true, true) => Some(pgbench::orders(&service, settings.orders, settings.senders).await),
            (false, _) => {
                progress(
                    "pgbench is not on PATH: its ceilings are left out (it comes with the PostgreSQL server package)",
                );
                None
            }
            (true, false) => {
                progress("C is odd: pgbench's webhook ceiling pairs its clients, so its ceilings are left out");
                None
            }
        };
        Some((orders, events, pgbench_orders))
    } else {
        None
    };
    let spread_users: Vec<String> = (0..settings.users).map(credits::spread_user).collect();
    let ceiling_users: Arc<Vec<String>> = Arc::new(
        (0..settings.users)
            .map(|i| format!("ceiling-credit-user-{i}"))
            .collect(),
    );
    let ceiling_one_user = Arc::new(vec!["ceiling-credit-one-user".to_owned()]);
    if scenarios.check || scenarios.usage {
        progress(&format!(
            "granting {} users {} credits each through POST /v1/grants",
            settings.users,
            credits::SPREAD_GRANT
        ));
        credits::seed_grants(
            &service,
            &http,
            spread_users.clone(),
            credits::SPREAD_GRANT,
            settings.senders,
        )
        .await;
    }
    if scenarios.usage {
        ceilings::seed_grants(&service, ceiling_users.clone(), credits::SPREAD_GRANT, settings.senders).await;
    }
    if scenarios.one_user {
        let one = vec![credits::ONE_USER.to_owned()];
        credits::seed_grants(&service, &http, one, settings.one_user_balance, 1).await;
        ceilings::seed_grants(&service, ceiling_one_user.clone(), settings.one_user_balance, 1).await;
    }

    // Each hot path is measured right next to its ceiling, so both see the same machine.
    let memory = Memory::start(&proc_dir);
    let orders = match paid_orders {
        None => None,
        Some((orders, events, pgbench_orders)) => {
            progress("ceiling: the webhook's SQL, direct");
            let webhook_ceiling = ceilings::webhook_sql(&service, settings.orders, settings.senders).await;
            // The ceiling's SQL wrote messages too: they are delivered before the next run starts.
            let (_, drained) = drain_outbox(&service.db).await;
            if !drained {
                progress("the ceiling's outbox messages were not all delivered within a minute");
            }
            let pgbench_webhook = match &pgbench_orders {
                Some(pgbench_orders) => {
                    progress("ceiling: the naive fulfilment SQL, pgbench");
                    // pgbench blocks this thread; the runtime's others go on serving the outbox's receiver.
                    let run =
                        tokio::task::block_in_place(|| pgbench::webhook(&service, pgbench_orders, settings.senders));
                    let (_, drained) = drain_outbox(&service.db).await;
                    if !drained {
                        progress("pgbench's outbox messages were not all delivered within a minute");
                    }
                    Some(run)
                }
                None => None,
            };
            progress("delivering every signed event twice");
            let burst_started = receiver::Receiver::now();
            let requests_before = receiver.requests();
            let sampler = outbox_on.then(|| sample_backlog(service.db.clone()));
            let db_meter = dbstats::Meter::start(&service.db).await;
            let meter = cpu::Meter::start(&service_pids);
            let (webhooks, outcomes) = traffic::deliver_each_twice(connections.clone(), events, settings.senders).await;
            let webhooks_cpu = meter.stop();
            let webhooks_db = db_meter.stop(webhooks.requests()).await;
            let outbox = match sampler {
                None => None,
                Some(sampler) => {
                    let (drain, drained) = drain_outbox(&service.db).await;
                    sampler.abort();
                    let max_pending = sampler.await_max().await;
                    let (written, latencies) = receiver.latencies(&service.db, burst_started).await;
                    Some(OutboxResult {
                        written,
                        seen: latencies.len(),
                        requests: receiver.requests() - requests_before,
                        max_pending,
                        drained_after: drained.then_some(drain),
                        latencies,
                    })
                }
            };
            let credits = check_credits(&service, &orders).await;
            progress(&format!("polling order status for {:?}", settings.poll_for));
            let orders = Arc::new(orders);
            let db_meter = dbstats::Meter::start(&service.db).await;
            let meter = cpu::Meter::start(&service_pids);
            let (statuses, wrong_answers) =
                traffic::poll_status(connections.clone(), orders.clone(), settings.pollers, settings.poll_for).await;
            let statuses_cpu = meter.stop();
            let statuses_db = db_meter.stop(statuses.requests()).await;
            progress("ceiling: the primary-key status select, direct");
            let status_ceiling = ceilings::status_lookup(&service, orders, settings.pollers, settings.poll_for).await;
            let pgbench = match (pgbench_orders, pgbench_webhook) {
                (Some(pgbench_orders), Some(webhook)) => {
                    progress("ceiling: the primary-key status select, pgbench");
                    let status = tokio::task::block_in_place(|| {
                        pgbench::status(&service, &pgbench_orders, settings.pollers, settings.poll_for)
                    });
                    let paid = pgbench::check(&service, &pgbench_orders).await;
                    Some(PgbenchCeilings { webhook, status, paid })
                }
                _ => None,
            };
            Some(OrdersResult {
                webhooks,
                webhooks_cpu,
                webhooks_db,
                webhook_ceiling,
                statuses,
                statuses_cpu,
                statuses_db,
                status_ceiling,
                pgbench,
                credits,
                outbox,
                fulfilled: outcomes.fulfilled.load(Ordering::Relaxed),
                duplicates: outcomes.duplicate.load(Ordering::Relaxed),
                wrong_answers,
            })
        }
    };
    let check = if scenarios.check {
        progress(&format!(
            "POST /v1/check from {} callers for {:?}",
            settings.pollers, settings.poll_for
        ));
        let db_meter = dbstats::Meter::start(&service.db).await;
        let meter = cpu::Meter::start(&service_pids);
        let (checks, not_allowed) =
            credits::check(connections.clone(), settings.users, settings.pollers, settings.poll_for).await;
        let checks_cpu = meter.stop();
        let checks_db = db_meter.stop(checks.requests()).await;
        let users = Arc::new(spread_users.clone());
        progress("ceiling: the credit account's primary-key select, direct");
        let account_ceiling =
            ceilings::account_lookup(&service, users.clone(), settings.pollers, settings.poll_for).await;
        progress("ceiling: the check's balance read, direct");
        let balance_ceiling = ceilings::check_sql(&service, users, settings.pollers, settings.poll_for).await;
        Some(CheckResult {
            checks,
            checks_cpu,
            checks_db,
            account_ceiling,
            balance_ceiling,
            not_allowed,
        })
    } else {
        None
    };
    let usage = if scenarios.usage {
        progress(&format!("ceiling: credit_spend over {} users, direct", settings.users));
        let until = Until::Elapsed(settings.poll_for);
        let (ceiling, spends) = ceilings::spend_sql(
            &service,
            ceiling_users.clone(),
            "usage-ceiling",
            settings.senders,
            until,
        )
        .await;
        progress(&format!(
            "POST /v1/usage over {} users from {} callers for {:?}",
            settings.users, settings.senders, settings.poll_for
        ));
        let db_meter = dbstats::Meter::start(&service.db).await;
        let meter = cpu::Meter::start(&service_pids);
        let (usage, debits) = credits::usage(
            connections.clone(),
            spread_users.clone(),
            "usage-spread",
            settings.senders,
            until,
            false,
        )
        .await;
        let usage_cpu = meter.stop();
        let usage_db = db_meter.stop(usage.requests()).await;
        progress("checking every user's balance, ledger and spends against the 200s");
        let totals = credits::verify(
            &service,
            &http,
            &spread_users,
            credits::SPREAD_GRANT,
            &debits,
            settings.senders,
        )
        .await;
        Some(UsageResult {
            usage,
            usage_cpu,
            usage_db,
            ceiling,
            ceiling_refused: spends.refused.load(Ordering::Relaxed),
            totals,
        })
    } else {
        None
    };
    let one_user = if scenarios.one_user {
        // About 5 % more asked for than the balance holds (debits average 2 credits).
        let requests = (settings.one_user_balance as usize * 21).div_ceil(40) + 1;
        let until = Until::Count(requests);
        progress(&format!(
            "ceiling: credit_spend on one user with {} credits, direct",
            settings.one_user_balance
        ));
        let (ceiling, spends) = ceilings::spend_sql(
            &service,
            ceiling_one_user.clone(),
            "one-user-ceiling",
            settings.senders,
            until,
        )
        .await;
        progress(&format!(
            "POST /v1/usage on one user from {} callers, {requests} requests",
            settings.senders
        ));
        let one = vec![credits::ONE_USER.to_owned()];
        let (usage, debits) = credits::usage(
            connections.clone(),
            one.clone(),
            "one-user",
            settings.senders,
            until,
            true,
        )
        .await;
        let totals = match credits::verify(&service, &http, &one, settings.one_user_balance, &debits, 1).await {
            Ok(_) => credits::verify_serial(settings.one_user_balance, &debits),
            Err(err) => Err(err),
        };
        Some(OneUserResult {
            usage,
            ceiling,
            ok: debits.total_ok(),
            refused: debits.refused.load(Ordering::Relaxed),
            ceiling_spent: spends.spent.load(Ordering::Relaxed),
            ceiling_refused: spends.refused.load(Ordering::Relaxed),
            totals,
        })
    } else {
        None
    };
    let heavy = match &seeded {
        Some(_) => {
            progress("the heavy user's GET /entitlements and balance");
            Some(seed::heavy_reads(connections.clone(), settings.poll_for / 2).await)
        }
        None => None,
    };
    let memory = memory.finish(&proc_dir);
    let plans = match &seeded {
        Some(_) => seed::plans(&service).await,
        None => Vec::new(),
    };
    progress("done");

    let result = PassResult {
        pass,
        pool_size: service.pool_size,
        service_alone: matches!(service.process, service::ServiceProcess::Child(_)),
        orders,
        check,
        usage,
        one_user,
        memory,
        seeded,
        heavy,
        plans,
    };
    service.drop_database().await;
    result
}

/// Peak RSS of the service's process over the load phases, after setup (the emulator's sessions,
/// the signed events, the credits' grants) is already resident.
struct Memory {
    before_load: f64,
    peak_is_of_load_only: bool,
    peak: f64,
}

impl Memory {
    fn start(proc_dir: &str) -> Self {
        Self {
            peak_is_of_load_only: reset_peak_rss(proc_dir),
            before_load: rss_mib(proc_dir),
            peak: f64::NAN,
        }
    }

    fn finish(self, proc_dir: &str) -> Self {
        Self {
            peak: peak_rss_mib(proc_dir),
            ..self
        }
    }
}

/// Exactly 100 credits per order: in total, per order and per user (each user has two orders).
/// Only the API's orders count; the webhook ceiling grants its own orders in the same tables.
async fn check_credits(service: &service::Service, orders: &[Order]) -> String {
    let order_ids: Vec<_> = orders.iter().map(|order| order.id).collect();
    let (rows, distinct_orders, total): (i64, i64, i64) = sqlx::query_as(
        "select count(*), count(distinct order_id), coalesce(sum(delta), 0)::bigint
         from credit_ledger where order_id = any($1)",
    )
    .bind(&order_ids)
    .fetch_one(&service.db)
    .await
    .unwrap();
    let per_user: HashMap<String, i64> = sqlx::query_as::<_, (String, i64)>(
        "select user_id, sum(delta)::bigint from credit_ledger where order_id = any($1) group by user_id",
    )
    .bind(&order_ids)
    .fetch_all(&service.db)
    .await
    .unwrap()
    .into_iter()
    .collect();
    let mut expected: HashMap<String, i64> = HashMap::new();
    for order in orders {
        *expected.entry(order.user_id.clone()).or_default() += 100;
    }
    let n = orders.len() as i64;
    if rows == n && distinct_orders == n && total == 100 * n && per_user == expected {
        format!(
            "exact ({n} orders x 100 = {total}, {} users each as expected)",
            expected.len()
        )
    } else {
        let wrong_users = expected
            .iter()
            .filter(|(user, credits)| per_user.get(*user) != Some(credits))
            .count();
        format!(
            "WRONG: {rows} ledger rows over {distinct_orders} orders, {total} credits for {n} orders, {wrong_users} users off"
        )
    }
}

/// Everything a pass measured, for the printed parts.
struct Report<'a> {
    settings: &'a Settings,
    pass: Pass,
    pool_size: u32,
    service_alone: bool,
    orders: Option<&'a OrdersResult>,
    check: Option<&'a CheckResult>,
    usage: Option<&'a UsageResult>,
    one_user: Option<&'a OneUserResult>,
    memory: &'a Memory,
    seeded: Option<&'a seed::Seeded>,
    heavy: Option<&'a seed::HeavyReads>,
    plans: &'a [seed::Plan],
}

impl<'a> Report<'a> {
    fn of(settings: &'a Settings, result: &'a PassResult) -> Self {
        Self {
            settings,
            pass: result.pass,
            pool_size: result.pool_size,
            service_alone: result.service_alone,
            orders: result.orders.as_ref(),
            check: result.check.as_ref(),
            usage: result.usage.as_ref(),
            one_user: result.one_user.as_ref(),
            memory: &result.memory,
            seeded: result.seeded.as_ref(),
            heavy: result.heavy.as_ref(),
            plans: &result.plans,
        }
    }
}

fn share(run: &Run, ceiling: &Run) -> f64 {
    100.0 * run.per_second() / ceiling.per_second()
}

impl Report<'_> {
    fn print_paths(&self) {
        let settings = self.settings;
        let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
        println!();
        println!(
            "Entitle load test: N={} orders, C={} senders, P={} pollers, T={}s, U={} credit users, B={} credits \
             for one user; scenarios {}; service pool {}; {cpus} CPUs",
            settings.orders,
            settings.senders,
            settings.pollers,
            settings.poll_for.as_secs(),
            settings.users,
            settings.one_user_balance,
            settings.scenarios.names(),
            self.pool_size,
        );
        println!();
        println!("| path | requests | req/s | p50 ms | p99 ms | non-2xx | % of ceiling |");
        println!("|---|---:|---:|---:|---:|---:|---:|");
        let row = |name: &str, run: &Run, failures: String, share: String| {
            println!(
                "| {name} | {} | {:.0} | {:.2} | {:.2} | {failures} | {share} |",
                run.requests(),
                run.per_second(),
                run.percentile_ms(0.50),
                run.percentile_ms(0.99),
            );
        };
        let measured = |name: &str, run: &Run, ceiling: &Run| {
            row(
                name,
                run,
                run.failed.to_string(),
                format!("{:.0} %", share(run, ceiling)),
            );
        };
        let ceiling = |name: &str, run: &Run| row(name, run, format!("({} errors)", run.failed), String::new());
        if let Some(o) = self.orders {
            // Against pgbench where it ran (the targets' yardstick), else against the sqlx runs.
            let pgbench = o.pgbench.as_ref();
            let webhook_yardstick = pgbench
                .and_then(|p| p.webhook.as_ref().ok())
                .unwrap_or(&o.webhook_ceiling);
            let status_yardstick = pgbench
                .and_then(|p| p.status.as_ref().ok())
                .unwrap_or(&o.status_ceiling);
            // A path, its pgbench ceiling (the yardstick) and the same SQL from Rust.
            let path_and_ceilings =
                |path: &str, run: &Run, yardstick: &Run, pgbench: Option<&Run>, sqlx: &Run, what: &str| {
                    measured(path, run, yardstick);
                    if let Some(pgbench) = pgbench {
                        ceiling(&format!("ceiling: {what}, pgbench"), pgbench);
                    }
                    row(
                        &format!("ceiling: {what} from Rust (sqlx), direct"),
                        sqlx,
                        format!("({} errors)", sqlx.failed),
                        format!("(path: {:.0} % of it)", share(run, sqlx)),
                    );
                };
            path_and_ceilings(
                "POST /payment-webhook (each event twice)",
                &o.webhooks,
                webhook_yardstick,
                pgbench.and_then(|p| p.webhook.as_ref().ok()),
                &o.webhook_ceiling,
                "the naive fulfilment SQL",
            );
            path_and_ceilings(
                "POST /order-status",
                &o.statuses,
                status_yardstick,
                pgbench.and_then(|p| p.status.as_ref().ok()),
                &o.status_ceiling,
                "primary-key status select",
            );
        }
        if let Some(outbox) = self.orders.and_then(|o| o.outbox.as_ref()) {
            println!();
            println!(
                "outbox, during the webhook burst: {} messages written, {} arrived ({} requests); commit to arrival \
                 p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; pending deliveries at most {}; {}.",
                outbox.written,
                outbox.seen,
                outbox.requests,
                outbox.percentile_ms(0.5),
                outbox.percentile_ms(0.99),
                outbox.percentile_ms(1.0),
                outbox.max_pending,
                match outbox.drained_after {
                    Some(after) => format!(
                        "empty {:.0} ms after the burst's last answer",
                        after.as_secs_f64() * 1000.0
                    ),
                    None => "NOT empty a minute after the burst".to_owned(),
                }
            );
        }
        if let Some(c) = self.check {
            let users = settings.users;
            measured(
                &format!("POST /v1/check (1 credit, {users} users)"),
                &c.checks,
                &c.account_ceiling,
            );
            ceiling("ceiling: primary-key credit account select, direct", &c.account_ceiling);
            row(
                "ceiling: the check's balance read, direct",
                &c.balance_ceiling,
                format!("({} errors)", c.balance_ceiling.failed),
                format!("(check: {:.0} % of it)", share(&c.checks, &c.balance_ceiling)),
            );
        }
        if let Some(u) = self.usage {
            let users = settings.users;
            measured(&format!("POST /v1/usage ({users} users)"), &u.usage, &u.ceiling);
            ceiling(
                &format!("ceiling: credit_spend, direct ({users} other users)"),
                &u.ceiling,
            );
        }
        if let Some(one) = self.one_user {
            row(
                "POST /v1/usage (one user, until it runs out)",
                &one.usage,
                format!("{} (+{} x 402)", one.usage.failed, one.refused),
                format!("{:.0} %", share(&one.usage, &one.ceiling)),
            );
            row(
                "ceiling: credit_spend on one user, direct",
                &one.ceiling,
                format!("({} errors, {} refused)", one.ceiling.failed, one.ceiling_refused),
                String::new(),
            );
        }
        if let Some(heavy) = self.heavy {
            let errors = |run: &Run| run.failed.to_string();
            let callers = seed::READ_CALLERS;
            let reads = [
                (
                    "GET /entitlements",
                    "a user with 10,000 ledger rows",
                    &heavy.entitlements,
                ),
                ("GET /entitlements", "a user with 1", &heavy.light_entitlements),
                (
                    "GET /v1/users/{id}/balance",
                    "a user with 10,000 ledger rows",
                    &heavy.balance,
                ),
                ("GET /v1/users/{id}/balance", "a user with 1", &heavy.light_balance),
            ];
            for (path, whose, run) in reads {
                row(
                    &format!("{path} (seeded; {whose}; {callers} callers)"),
                    run,
                    errors(run),
                    String::new(),
                );
            }
        }
        if let Some(seeded) = self.seeded {
            println!();
            println!(
                "seeded before the scenarios (SEED=large) in {:.0} s: {} orders, {} ledger rows ({} of them the heavy \
                 user's), {} processed events",
                seeded.took.as_secs_f64(),
                seeded.orders,
                seeded.ledger_rows,
                seeded.heavy_ledger_rows,
                seeded.events
            );
        }
        println!();
        let memory = self.memory;
        let window = if memory.peak_is_of_load_only {
            "during the load phases"
        } else {
            "over the whole run (this kernel cannot reset VmHWM)"
        };
        let whose = match (self.service_alone, self.pass.instances) {
            (false, _) => {
                "One process holds the service, the load generator and the Stripe emulator with every \
                 session, so this bounds the service from above (without SERVICE_PROCESS=same it is measured alone)."
            }
            (true, 1) => "The service ran in its own process: this is the service alone.",
            (true, _) => "The first of the service's processes, alone.",
        };
        println!(
            "peak RSS (VmHWM) {window}: {:.1} MiB, from {:.1} MiB before it. {whose}",
            memory.peak, memory.before_load,
        );
    }

    /// Every target of the issues this pass measured, met or missed.
    fn targets(&self) -> Vec<summary::Target> {
        let mut targets = Vec::new();
        let mut target = |name: &str, measured: String, met: bool| {
            targets.push(summary::Target {
                name: name.to_owned(),
                measured,
                met,
            });
        };
        let p99 = |run: &Run| run.percentile_ms(0.99);
        if let Some(o) = self.orders {
            let webhook_ceiling = o.pgbench.as_ref().and_then(|p| p.webhook.as_ref().ok());
            let s = webhook_ceiling.map(|ceiling| share(&o.webhooks, ceiling));
            target(
                "webhooks >= 100 % of the naive fulfilment SQL's pgbench ceiling",
                s.map_or("no pgbench ceiling".to_owned(), |s| {
                    format!("{s:.0} % ({:.0} req/s)", o.webhooks.per_second())
                }),
                s.is_some_and(|s| s >= 100.0),
            );
            let p = p99(&o.webhooks);
            target("webhook p99 < 15 ms at C senders", format!("{p:.2} ms"), p < 15.0);
            let status_ceiling = o.pgbench.as_ref().and_then(|p| p.status.as_ref().ok());
            let s = status_ceiling.map(|ceiling| share(&o.statuses, ceiling));
            target(
                "order-status >= 80 % of the primary-key select's pgbench ceiling",
                s.map_or("no pgbench ceiling".to_owned(), |s| {
                    format!("{s:.0} % ({:.0} req/s)", o.statuses.per_second())
                }),
                s.is_some_and(|s| s >= 80.0),
            );
            let p = p99(&o.statuses);
            target("order-status p99 < 5 ms at P pollers", format!("{p:.2} ms"), p < 5.0);
            if let Some(outbox) = &o.outbox {
                let p = outbox.percentile_ms(0.99);
                target(
                    "outbox commit to receiver p99 < 500 ms at the webhook rate",
                    format!("{p:.1} ms"),
                    p < 500.0,
                );
                // Keeping up: what was pending when the burst ended goes within a second.
                let drained = outbox.drained_after.map(|d| d.as_secs_f64() * 1000.0);
                target(
                    "outbox backlog does not grow: empty within 1 s of the burst",
                    drained.map_or("not within a minute".to_owned(), |ms| format!("{ms:.0} ms")),
                    drained.is_some_and(|ms| ms < 1000.0),
                );
            }
        }
        if let Some(c) = self.check {
            let s = share(&c.checks, &c.account_ceiling);
            let of_read = share(&c.checks, &c.balance_ceiling);
            target(
                "check >= 80 % of the primary-key select ceiling",
                format!(
                    "{s:.0} % ({:.0} req/s; {of_read:.0} % of its own balance read)",
                    c.checks.per_second()
                ),
                s >= 80.0,
            );
            let p = p99(&c.checks);
            target("check p99 < 3 ms at P callers", format!("{p:.2} ms"), p < 3.0);
        }
        if let Some(u) = self.usage {
            let s = share(&u.usage, &u.ceiling);
            target(
                "usage over U users >= 70 % of its SQL's ceiling",
                format!("{s:.0} % ({:.0} req/s)", u.usage.per_second()),
                s >= 70.0,
            );
            let p = p99(&u.usage);
            target("usage p99 < 20 ms at C callers", format!("{p:.2} ms"), p < 20.0);
            let exact = u.totals.is_ok() && u.usage.failed == 0;
            let said = if exact { "exact" } else { "WRONG (see checks)" };
            target("usage totals exact, zero non-2xx", said.to_owned(), exact);
        }
        if let Some(one) = self.one_user {
            let debits = one.ok as f64 / one.usage.elapsed.as_secs_f64();
            target(
                "one user: >= 1,000 debits/s at C callers",
                format!(
                    "{debits:.0} 200s/s ({:.0} answers/s with the 402s; p99 {:.2} ms)",
                    one.usage.per_second(),
                    p99(&one.usage)
                ),
                debits >= 1000.0,
            );
            let exact = one.totals.is_ok() && one.usage.failed == 0;
            let said = if exact {
                "none overspent, serial"
            } else {
                "WRONG (see checks)"
            };
            target("one user: nothing overspent, spent = the 200s", said.to_owned(), exact);
        }
        if let Some(heavy) = self.heavy {
            let (e, b) = (p99(&heavy.entitlements), p99(&heavy.balance));
            target(
                "seeded: GET /entitlements of a user with 10,000 ledger rows, p99 < 5 ms (8 callers)",
                format!("{e:.2} ms"),
                e < 5.0,
            );
            target(
                "seeded: the same user's balance, p99 < 5 ms (8 callers)",
                format!("{b:.2} ms"),
                b < 5.0,
            );
        }
        if !self.plans.is_empty() {
            let scanning: Vec<&str> = self
                .plans
                .iter()
                .filter(|p| p.scans_a_table())
                .map(|p| p.path)
                .collect();
            target(
                "seeded: no sequential scan in a hot path's plan",
                match scanning.is_empty() {
                    true => format!("{} plans, none", self.plans.len()),
                    false => format!("in {}", scanning.join("; ")),
                },
                scanning.is_empty(),
            );
        }
        let peak = self.memory.peak;
        let limit = 50e6 / (1024.0 * 1024.0);
        target("peak RSS < 50 MB", format!("{peak:.1} MiB"), peak < limit);
        targets
    }

    /// The correctness checks, one line each; returns how many failed.
    fn print_checks(&self) -> usize {
        println!();
        let mut failures = 0;
        let mut check = |line: String, ok: bool| {
            println!("checks: {line}");
            if !ok {
                failures += 1;
            }
        };
        if let Some(o) = self.orders {
            check(
                format!(
                    "orders: credits {}; outcomes {} fulfilled + {} duplicate of {} deliveries; status answers \
                     not 'paid': {}; ceiling errors: {} webhook, {} status{}{}",
                    o.credits,
                    o.fulfilled,
                    o.duplicates,
                    o.webhooks.requests(),
                    o.wrong_answers,
                    o.webhook_ceiling.failed,
                    o.status_ceiling.failed,
                    o.outbox.as_ref().map_or(String::new(), |outbox| format!(
                        "; outbox: {} of {} messages arrived",
                        outbox.seen, outbox.written
                    )),
                    match &o.pgbench {
                        None => "; pgbench: not installed".to_owned(),
                        Some(p) if p.errors().is_empty() => {
                            "; pgbench: every order paid once with 100 credits, no failed transactions".to_owned()
                        }
                        Some(p) => format!("; pgbench: {}", p.errors().join("; ")),
                    },
                ),
                !o.credits.starts_with("WRONG")
                    // Half the deliveries first, half duplicates: anything else means something
                    // applied the events before the burst, which then measured something else.
                    && o.fulfilled * 2 == o.webhooks.requests()
                    && o.duplicates * 2 == o.webhooks.requests()
                    && o.pgbench.as_ref().is_none_or(|p| p.errors().is_empty())
                    && o.wrong_answers == 0
                    && o.outbox.as_ref().is_none_or(|outbox| outbox.seen == outbox.written)
                    && o.webhook_ceiling.failed == 0
                    && o.status_ceiling.failed == 0,
            );
        }
        if let Some(c) = self.check {
            check(
                format!(
                    "check: answers not 'allowed': {}; ceiling errors: {} account select, {} balance read",
                    c.not_allowed, c.account_ceiling.failed, c.balance_ceiling.failed
                ),
                c.not_allowed == 0 && c.account_ceiling.failed == 0 && c.balance_ceiling.failed == 0,
            );
        }
        if let Some(u) = self.usage {
            let totals = u.totals.as_ref().unwrap_or_else(|err| err);
            check(
                format!(
                    "usage: {totals}; non-2xx {}; ceiling errors {}, ceiling refusals {}",
                    u.usage.failed, u.ceiling.failed, u.ceiling_refused
                ),
                u.totals.is_ok() && u.usage.failed == 0 && u.ceiling.failed == 0 && u.ceiling_refused == 0,
            );
        }
        if let Some(one) = self.one_user {
            let totals = one.totals.as_ref().unwrap_or_else(|err| err);
            check(
                format!(
                    "one user: {totals}; other failures {}; ceiling: {} spent, {} refused, {} errors",
                    one.usage.failed, one.ceiling_spent, one.ceiling_refused, one.ceiling.failed
                ),
                one.totals.is_ok() && one.usage.failed == 0 && one.ceiling.failed == 0 && one.ceiling_refused > 0,
            );
        }
        failures
    }
}

/// Waits until no outbox delivery is pending, for up to a minute; answers how long it took and
/// whether it emptied.
async fn drain_outbox(db: &sqlx::PgPool) -> (Duration, bool) {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        if receiver::pending(db).await == 0 {
            return (started.elapsed(), true);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (started.elapsed(), false)
}

/// Samples the pending deliveries every 50 ms until aborted; answers the largest seen (through
/// a shared cell, since an aborted task returns nothing).
fn sample_backlog(db: sqlx::PgPool) -> BacklogSampler {
    let max = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let task = tokio::spawn({
        let max = max.clone();
        async move {
            loop {
                max.fetch_max(receiver::pending(&db).await, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    BacklogSampler { task, max }
}

struct BacklogSampler {
    task: tokio::task::JoinHandle<()>,
    max: Arc<std::sync::atomic::AtomicI64>,
}

impl BacklogSampler {
    fn abort(&self) {
        self.task.abort();
    }

    async fn await_max(self) -> i64 {
        let _ = self.task.await;
        self.max.load(Ordering::Relaxed)
    }
}

impl Report<'_> {
    /// The hot paths' plans on the seeded tables (`SEED=large`), for docs/performance.md.
    fn print_plans(&self) {
        if self.plans.is_empty() {
            return;
        }
        println!();
        println!("query plans on the seeded tables:");
        for plan in self.plans {
            println!();
            println!("{}:", plan.path);
            println!("```");
            println!("{}", plan.plan);
            println!("```");
        }
    }
}
