//! The load benchmark: `cargo run --release --example loadtest` (see docs/performance.md).
//!
//! Starts the service in its own process (this executable again; `SERVICE_PROCESS=same` keeps it in
//! this one) against a fresh database and the Stripe emulator, opens N
//! orders through the API, delivers every order's signed `checkout.session.completed` twice from C
//! concurrent senders, checks that each order granted exactly 100 credits, polls order status from
//! P concurrent clients for T seconds, then measures the same SQL directly against Postgres (the
//! ceilings) and prints one table. Settings come from the environment: N, C, P, T (seconds).

mod ceilings;
mod connections;
mod measure;
mod service;
mod traffic;

use std::{
    collections::HashMap,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use measure::{Run, peak_rss_mib, reset_peak_rss, rss_mib};
use traffic::Order;

struct Settings {
    orders: usize,
    senders: usize,
    pollers: usize,
    poll_for: Duration,
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

#[tokio::main]
async fn main() {
    if std::env::var_os(service::CHILD_ROLE).is_some() {
        return service::serve_as_child().await;
    }
    let settings = Settings {
        orders: setting("N", 2000) as usize,
        senders: setting("C", 32) as usize,
        pollers: setting("P", 64) as usize,
        poll_for: Duration::from_secs(setting("T", 10)),
    };
    let started = Instant::now();
    let service = service::start().await;
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
        "service up (pool {}, logs in {}); opening {} checkouts",
        service.pool_size,
        service::LOG_FILE,
        settings.orders
    ));
    let orders = traffic::open_checkouts(&service, &http, settings.orders, settings.senders).await;
    let events = traffic::pay_all(&service, &orders);
    let service_address = service
        .address
        .trim_start_matches("http://")
        .parse()
        .expect("the service's address");
    let connections = Arc::new(connections::Connections::to(service_address));

    // Each hot path is measured right next to its ceiling, so both see the same machine.
    progress("ceiling: the webhook's SQL, direct");
    let memory = Memory::start(&proc_dir);
    let webhook_ceiling = ceilings::webhook_sql(&service, settings.orders, settings.senders).await;
    progress("delivering every signed event twice");
    let (webhooks, outcomes) = traffic::deliver_each_twice(connections.clone(), events, settings.senders).await;
    let credits = check_credits(&service, &orders).await;
    progress(&format!("polling order status for {:?}", settings.poll_for));
    let orders = Arc::new(orders);
    let (statuses, wrong_answers) =
        traffic::poll_status(connections.clone(), orders.clone(), settings.pollers, settings.poll_for).await;
    let memory = memory.finish(&proc_dir);
    progress("ceiling: the primary-key status select, direct");
    let status_ceiling = ceilings::status_lookup(&service, orders, settings.pollers, settings.poll_for).await;
    progress("done");

    print_report(
        &settings,
        &service,
        [&webhooks, &webhook_ceiling, &statuses, &status_ceiling],
        &memory,
    );
    let fulfilled = outcomes.fulfilled.load(Ordering::Relaxed);
    let duplicates = outcomes.duplicate.load(Ordering::Relaxed);
    println!(
        "checks: credits {credits}; outcomes {fulfilled} fulfilled + {duplicates} duplicate of {} deliveries; \
         status answers not 'paid': {wrong_answers}; ceiling errors: {} webhook, {} status",
        webhooks.requests(),
        webhook_ceiling.failed,
        status_ceiling.failed,
    );
    service.drop_database().await;
    // A ceiling that failed measures nothing, and wrong credits are a correctness bug: neither may
    // pass as a result.
    if credits.starts_with("WRONG") || wrong_answers > 0 || webhook_ceiling.failed > 0 || status_ceiling.failed > 0 {
        eprintln!("loadtest: checks failed (see the line above)");
        std::process::exit(1);
    }
}

/// Peak RSS of the service's process over the load phases, after setup (the emulator's sessions,
/// the signed events) is already resident.
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

fn print_report(settings: &Settings, service: &service::Service, runs: [&Run; 4], memory: &Memory) {
    let [webhooks, webhook_ceiling, statuses, status_ceiling] = runs;
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!();
    println!(
        "Entitle load test: N={} orders, C={} senders, P={} pollers, T={}s; service pool {}; {cpus} CPUs",
        settings.orders,
        settings.senders,
        settings.pollers,
        settings.poll_for.as_secs(),
        service.pool_size,
    );
    println!();
    println!("| path | requests | req/s | p50 ms | p99 ms | non-2xx | % of ceiling |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let row = |name: &str, run: &Run, ceiling: Option<&Run>| {
        let (failures, share) = match ceiling {
            Some(c) => (
                run.failed.to_string(),
                format!("{:.0} %", 100.0 * run.per_second() / c.per_second()),
            ),
            None => (format!("({} errors)", run.failed), "".to_owned()),
        };
        println!(
            "| {name} | {} | {:.0} | {:.2} | {:.2} | {failures} | {share} |",
            run.requests(),
            run.per_second(),
            run.percentile_ms(0.50),
            run.percentile_ms(0.99),
        );
    };
    row(
        "POST /payment-webhook (each event twice)",
        webhooks,
        Some(webhook_ceiling),
    );
    row("ceiling: the webhook's SQL, direct", webhook_ceiling, None);
    row("POST /order-status", statuses, Some(status_ceiling));
    row("ceiling: primary-key status select, direct", status_ceiling, None);
    println!();
    let window = if memory.peak_is_of_load_only {
        "during the webhook and status load"
    } else {
        "over the whole run (this kernel cannot reset VmHWM)"
    };
    let whose = match service.process {
        service::ServiceProcess::ThisOne => {
            "One process holds the service, the load generator and the Stripe emulator with every \
             session, so this bounds the service from above (without SERVICE_PROCESS=same it is measured alone)."
        }
        service::ServiceProcess::Child(_) => "The service ran in its own process: this is the service alone.",
    };
    println!(
        "peak RSS (VmHWM) {window}: {:.1} MiB, from {:.1} MiB before it. {whose}",
        memory.peak, memory.before_load,
    );
}
