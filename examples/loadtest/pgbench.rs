//! The ceilings people trust: PostgreSQL's own `pgbench` running the hot paths' SQL against the
//! service's database, in the same run, at the same concurrency as the HTTP clients. It has no
//! client library to slow it down, so a path at 100 % of it sends less work to Postgres than the
//! SQL it runs (fewer round trips), not just the same work faster.
//!
//! The scripts are in `examples/loadtest/pgbench/`: `webhook.sql` is the fulfilment of a paid
//! one-time order statement by statement, as `src/fulfillment.rs` sends it through `src/store/`
//! (the naive SQL: one round trip each, the long-poll `pg_notify` in the transaction);
//! `status.sql` is `/order-status`'s primary-key select. Each transaction's latency comes from
//! pgbench's own log (`-l`), so its percentiles are exact like the HTTP runs'.

use std::{path::PathBuf, process::Command, time::Duration};

use uuid::Uuid;

use crate::{measure::Run, service::Service};

const WEBHOOK_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/loadtest/pgbench/webhook.sql");
const STATUS_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/loadtest/pgbench/status.sql");

/// Whether `pgbench` can be run here; the run says so and goes on without these ceilings if not.
pub fn available() -> bool {
    Command::new("pgbench")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success())
}

/// The orders the pgbench ceilings work on: pending like the API's, one per event, their ids and
/// owners derived from n (`md5(run || '_' || n)`, `pgbench-user-n`) so `status.sql` can name them.
pub struct Orders {
    run: String,
    count: usize,
}

/// Writes `count` pending orders for `webhook.sql` (rounded up so every client pair delivers the
/// same number of events).
pub async fn orders(service: &Service, count: usize, clients: usize) -> Orders {
    let pairs = clients / 2;
    let count = count.div_ceil(pairs) * pairs;
    let run = Uuid::new_v4().simple().to_string();
    sqlx::query(
        "insert into orders (id, user_id, plan_id, status, amount, currency, credits, stripe_checkout_session_id)
         select md5($1 || '_' || i)::uuid, 'pgbench-user-' || i, 'credits_100', 'pending', 500, 'usd', 100,
                'cs_pgbench_' || $1 || '_' || i
         from generate_series(0, $2 - 1) as i",
    )
    .bind(&run)
    .bind(count as i64)
    .execute(&service.db)
    .await
    .expect("the pgbench ceiling's orders");
    Orders { run, count }
}

/// `webhook.sql` over the orders: clients 2j and 2j+1 deliver the same events in step, so every
/// event arrives twice and the copies race, as in the HTTP run. `clients` must be even.
pub fn webhook(service: &Service, orders: &Orders, clients: usize) -> Result<Run, String> {
    assert!(
        clients >= 2 && clients.is_multiple_of(2),
        "the webhook ceiling pairs its clients"
    );
    let per_client = orders.count / (clients / 2);
    let defines = [
        ("run", orders.run.clone()),
        ("pairs", (clients / 2).to_string()),
        ("k", "0".to_owned()),
    ];
    run(
        service,
        WEBHOOK_SCRIPT,
        clients,
        Length::Transactions(per_client),
        &defines,
    )
}

/// `status.sql` over the same orders (paid by then) for `duration`.
pub fn status(service: &Service, orders: &Orders, clients: usize, duration: Duration) -> Result<Run, String> {
    let defines = [
        ("run", orders.run.clone()),
        ("clients", clients.to_string()),
        ("count", orders.count.to_string()),
        ("k", "0".to_owned()),
    ];
    run(service, STATUS_SCRIPT, clients, Length::Time(duration), &defines)
}

/// Whether every pgbench order was paid once with its 100 credits: the ceiling did the work.
pub async fn check(service: &Service, orders: &Orders) -> Result<(), String> {
    let (paid, credits): (i64, i64) = sqlx::query_as(
        "with ours as (select id, status from orders where stripe_checkout_session_id like 'cs_pgbench_' || $1 || '_%')
         select (select count(*) from ours where status = 'paid'),
                (select coalesce(sum(delta), 0) from credit_ledger where order_id in (select id from ours))::bigint",
    )
    .bind(&orders.run)
    .fetch_one(&service.db)
    .await
    .map_err(|err| err.to_string())?;
    let n = orders.count as i64;
    match paid == n && credits == 100 * n {
        true => Ok(()),
        false => Err(format!("{paid} of {n} orders paid, {credits} credits for {n} x 100")),
    }
}

enum Length {
    Transactions(usize),
    Time(Duration),
}

fn run(
    service: &Service,
    script: &str,
    clients: usize,
    length: Length,
    defines: &[(&str, String)],
) -> Result<Run, String> {
    let logs = log_dir();
    let mut command = Command::new("pgbench");
    command
        .args(["--no-vacuum", "--protocol=prepared", "--log"])
        .arg(format!("--log-prefix={}/tx", logs.display()))
        .arg(format!("--client={clients}"))
        // As many threads as the load generator has cores: pgbench's own CPU stays small.
        .arg(format!("--jobs={}", threads().min(clients)))
        .arg(format!("--file={script}"));
    match length {
        Length::Transactions(count) => command.arg(format!("--transactions={count}")),
        Length::Time(duration) => command.arg(format!("--time={}", duration.as_secs().max(1))),
    };
    for (name, value) in defines {
        command.arg(format!("--define={name}={value}"));
    }
    command.arg(&service.database_url);
    let out = command
        .output()
        .map_err(|err| format!("pgbench did not start: {err}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let result = match out.status.success() {
        false => Err(format!(
            "pgbench failed: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .take(3)
                .collect::<Vec<_>>()
                .join("; ")
        )),
        true => read_run(&stdout, &logs),
    };
    let _ = std::fs::remove_dir_all(&logs);
    result
}

fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn log_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("loadtest-pgbench-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("a directory for pgbench's logs");
    dir
}

/// The run's rate from pgbench's summary (`tps = … (without initial connection time)`), every
/// transaction's latency from its log lines (`client tx latency_us script epoch us`), and its
/// failures (`number of failed transactions: n`).
fn read_run(stdout: &str, logs: &std::path::Path) -> Result<Run, String> {
    let field = |prefix: &str| {
        stdout
            .lines()
            .find_map(|line| line.strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().next())
            .ok_or_else(|| format!("pgbench printed no {prefix:?}: {stdout}"))
    };
    let tps: f64 = field("tps = ")?.parse().map_err(|_| "pgbench's tps".to_owned())?;
    let failed: usize = field("number of failed transactions: ")?
        .parse()
        .map_err(|_| "pgbench's failures".to_owned())?;
    let mut latencies = Vec::new();
    for entry in std::fs::read_dir(logs).map_err(|err| err.to_string())? {
        let text =
            std::fs::read_to_string(entry.map_err(|err| err.to_string())?.path()).map_err(|err| err.to_string())?;
        for line in text.lines() {
            let micros = line.split_whitespace().nth(2).and_then(|us| us.parse::<u64>().ok());
            latencies.push(Duration::from_micros(
                micros.ok_or_else(|| format!("a pgbench log line: {line}"))?,
            ));
        }
    }
    if latencies.is_empty() {
        return Err("pgbench logged no transactions".to_owned());
    }
    // The rate is pgbench's own (it excludes connecting); the run's length follows from it.
    let elapsed = Duration::from_secs_f64(latencies.len() as f64 / tps);
    Ok(Run::from_latencies(elapsed, failed, latencies))
}
