//! The load benchmark: `cargo run --release --example loadtest` (see docs/performance.md).
//!
//! Starts the service in this process against a fresh database and the Stripe emulator, opens N
//! orders through the API, delivers every order's signed `checkout.session.completed` twice from C
//! concurrent senders, checks that each order granted exactly 100 credits, polls order status from
//! P concurrent clients for T seconds, then measures the same SQL directly against Postgres (the
//! ceilings) and prints one table. Settings come from the environment: N, C, P, T (seconds).

mod ceilings;
mod measure;
mod service;
mod traffic;

use std::{collections::HashMap, sync::Arc, time::Duration};

use measure::{Run, peak_rss_mib};
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
            .unwrap_or_else(|| panic!("{name} must be a positive whole number, not {value:?}")),
    }
}

#[tokio::main]
async fn main() {
    let settings = Settings {
        orders: setting("N", 2000) as usize,
        senders: setting("C", 32) as usize,
        pollers: setting("P", 64) as usize,
        poll_for: Duration::from_secs(setting("T", 10)),
    };
    let service = service::start().await;
    let http = traffic::http_client(settings.senders.max(settings.pollers));
    eprintln!(
        "opening {} checkouts, service pool {}, logs in {}",
        settings.orders,
        service.pool_size,
        service::LOG_FILE
    );

    let orders = traffic::open_checkouts(&service, &http, settings.orders, settings.senders).await;
    let events = traffic::pay_all(&service, &orders);
    eprintln!("delivering {} signed events, each twice", events.len());
    let (webhooks, outcomes) = traffic::deliver_each_twice(&service, &http, events, settings.senders).await;
    let credits = check_credits(&service, &orders).await;

    let orders = Arc::new(orders);
    eprintln!("polling order status for {:?}", settings.poll_for);
    let (statuses, wrong_answers) =
        traffic::poll_status(&service, &http, orders.clone(), settings.pollers, settings.poll_for).await;
    let peak_rss = peak_rss_mib();

    eprintln!("measuring the ceilings");
    let status_ceiling = ceilings::status_lookup(&service, orders, settings.pollers, settings.poll_for).await;
    let webhook_ceiling = ceilings::webhook_sql(&service, settings.orders, settings.senders).await;

    let fulfilled = outcomes.fulfilled.load(std::sync::atomic::Ordering::Relaxed);
    let duplicates = outcomes.duplicate.load(std::sync::atomic::Ordering::Relaxed);
    print_report(
        &settings,
        &service,
        [&webhooks, &webhook_ceiling, &statuses, &status_ceiling],
        peak_rss,
    );
    println!(
        "checks: credits {credits}; outcomes {fulfilled} fulfilled + {duplicates} duplicate of {} deliveries; \
         status answers not 'paid': {wrong_answers}; ceiling errors: {} webhook, {} status",
        webhooks.requests(),
        webhook_ceiling.failed,
        status_ceiling.failed,
    );
    service.drop_database().await;
}

/// Exactly 100 credits per order: in total, per order and per user (each user has two orders).
async fn check_credits(service: &service::Service, orders: &[Order]) -> String {
    let (rows, total): (i64, i64) =
        sqlx::query_as("select count(*), coalesce(sum(delta), 0)::bigint from credit_ledger")
            .fetch_one(&service.db)
            .await
            .unwrap();
    let per_user: HashMap<String, i64> =
        sqlx::query_as::<_, (String, i64)>("select user_id, sum(delta)::bigint from credit_ledger group by user_id")
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
    if rows == n && total == 100 * n && per_user == expected {
        format!(
            "exact ({n} orders x 100 = {total}, {} users each as expected)",
            expected.len()
        )
    } else {
        let wrong_users = expected
            .iter()
            .filter(|(user, credits)| per_user.get(*user) != Some(credits))
            .count();
        format!("WRONG: {rows} ledger rows, {total} credits for {n} orders, {wrong_users} users off")
    }
}

fn print_report(settings: &Settings, service: &service::Service, runs: [&Run; 4], peak_rss: f64) {
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
    let row = |name: &str, run: &Run, ceiling: Option<&Run>, failures: &str| {
        let share = ceiling.map_or("".to_owned(), |c| {
            format!("{:.0} %", 100.0 * run.per_second() / c.per_second())
        });
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
        &webhooks.failed.to_string(),
    );
    row("ceiling: the webhook's SQL, direct", webhook_ceiling, None, "-");
    row(
        "POST /order-status",
        statuses,
        Some(status_ceiling),
        &statuses.failed.to_string(),
    );
    row("ceiling: primary-key status select, direct", status_ceiling, None, "-");
    println!();
    println!(
        "peak RSS (VmHWM) after the HTTP load: {peak_rss:.1} MiB. The service, the load generator and the \
         Stripe emulator share this one process, so this is an upper bound for the service."
    );
}
