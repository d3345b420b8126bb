//! Starts Entitle in this process exactly as `tests/api/helpers.rs` does: a fresh database, the
//! Stripe emulator on its own port, the real startup path on port 0, production's log level.

use std::{
    fs::File,
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
};

use entitle::{
    config::{Config, LogFormat},
    startup::Application,
    stripe_emulator::StripeEmulator,
};
use sqlx::{Connection, PgConnection, PgPool, postgres::PgPoolOptions};
use uuid::Uuid;

pub const WEBHOOK_SECRET: &str = "whsec_loadtest_secret";
pub const JWT_SECRET: &str = "loadtest-jwt-secret-that-is-long-enough-for-hs256";
/// The app backend's key for the `/v1/` credits API (`ENTITLE_API_KEYS`, at least 32 characters).
pub const API_KEY: &str = "ek_loadtest_key_that_is_long_enough_0123456789";
/// The service logs at production's level to this file, so its cost is part of the measurement.
pub const LOG_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/target/loadtest.log");
const CHILD_LOG_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/target/loadtest-service.log");

pub struct Service {
    /// The first process's base URL, for the setup steps' requests.
    pub address: String,
    /// Every service process's address, for the measured phases' connections.
    pub addresses: Vec<std::net::SocketAddr>,
    pub emulator: StripeEmulator,
    pub database_url: String,
    pub database_name: String,
    pub pool_size: u32,
    /// For the load generator's own checks; not used by the service.
    pub db: PgPool,
    pub process: ServiceProcess,
    /// The second and later processes of a run with several instances on the one database.
    pub others: Vec<Child>,
}

/// Where the service runs: in a child process (this same executable, the default), so its memory
/// is read on its own, or, with `SERVICE_PROCESS=same`, in this process beside the load generator.
pub enum ServiceProcess {
    ThisOne,
    Child(Child),
}

impl ServiceProcess {
    /// The `/proc` directory to read the service's memory from.
    pub fn proc_dir(&self) -> String {
        match self {
            Self::ThisOne => "/proc/self".to_owned(),
            Self::Child(child) => format!("/proc/{}", child.id()),
        }
    }
}

/// Set in the child's environment; the child then only serves (see `serve_as_child`).
pub const CHILD_ROLE: &str = "LOADTEST_SERVICE_CHILD";

fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// `app_webhook`: the URL the outbox sends the app webhooks to, if any. `instances` service
/// processes share the database and the emulator (more than one needs child processes).
pub async fn start(app_webhook: Option<&str>, instances: usize) -> Service {
    log_like_production(LOG_FILE);
    let database_name = format!("entitle_loadtest_{}", Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&format!("{}/postgres", admin_url()))
        .await
        .expect("PostgreSQL must be reachable at TEST_DATABASE_URL (default postgres://postgres@127.0.0.1:5432)");
    sqlx::query(&format!("create database {database_name}"))
        .execute(&mut admin)
        .await
        .expect("can create the load test database");
    let database_url = format!("{}/{database_name}", admin_url());

    let emulator_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let emulator_base = format!("http://{}", emulator_listener.local_addr().unwrap());
    let emulator = StripeEmulator::new(&emulator_base);
    tokio::spawn(axum::serve(emulator_listener, emulator.router()).into_future());

    let config = config(&database_url, &emulator_base, app_webhook, instances);
    let pool_size = config.database_max_connections;
    let (port, process) = if std::env::var("SERVICE_PROCESS").is_ok_and(|v| v == "same") {
        assert_eq!(instances, 1, "SERVICE_PROCESS=same runs one instance");
        let app = Application::build(config).await.expect("the application starts");
        let port = app.port();
        tokio::spawn(app.run_until_stopped());
        (port, ServiceProcess::ThisOne)
    } else {
        spawn_child(&database_url, &emulator_base, app_webhook, instances)
    };
    // One after another, so the first has run the migrations before the next starts.
    let mut ports = vec![port];
    let mut others = Vec::new();
    for _ in 1..instances {
        let (port, process) = spawn_child(&database_url, &emulator_base, app_webhook, instances);
        ports.push(port);
        if let ServiceProcess::Child(child) = process {
            others.push(child);
        }
    }

    // Two connections leave Postgres's max_connections to the service and the ceilings.
    let db = PgPoolOptions::new()
        .max_connections(2)
        .connect(&database_url)
        .await
        .unwrap();
    Service {
        address: format!("http://127.0.0.1:{port}"),
        addresses: ports
            .iter()
            .map(|port| std::net::SocketAddr::from(([127, 0, 0, 1], *port)))
            .collect(),
        emulator,
        database_url,
        database_name,
        pool_size,
        db,
        process,
        others,
    }
}

/// The real configuration rules (and defaults, such as the pool size) apply, but for the checkout
/// session rate; only DATABASE_MAX_CONNECTIONS and OUTBOX_CONCURRENCY may come from the environment,
/// to compare settings. Several instances split the default pool between them (at least 4 each),
/// as an operator shares one database's connection budget: their pools and the ceilings' then
/// fit Postgres's default max_connections of 100.
fn config(database_url: &str, emulator_base: &str, app_webhook: Option<&str>, instances: usize) -> Config {
    let pool_size = std::env::var("DATABASE_MAX_CONNECTIONS").ok();
    let outbox_concurrency = std::env::var("OUTBOX_CONCURRENCY").ok();
    let plans_file = concat!(env!("CARGO_MANIFEST_DIR"), "/plans.toml");
    Config::from_lookup(|name| match name {
        "DATABASE_URL" => Some(database_url.to_owned()),
        "DATABASE_MAX_CONNECTIONS" => pool_size.clone(),
        "OUTBOX_CONCURRENCY" => outbox_concurrency.clone(),
        "BIND_ADDR" => Some("127.0.0.1:0".into()),
        "STRIPE_SECRET_KEY" => Some("sk_test_loadtest".into()),
        "STRIPE_API_BASE" => Some(emulator_base.to_owned()),
        "STRIPE_WEBHOOK_SECRET" => Some(WEBHOOK_SECRET.into()),
        "AUTH_JWT_SECRET" => Some(JWT_SECRET.into()),
        "ENTITLE_API_KEYS" => Some(API_KEY.into()),
        "PLANS_FILE" => Some(plans_file.into()),
        // The run opens its checkouts as fast as it can, to measure the service, not the limiter
        // that keeps real buyers from spending the Stripe rate limit.
        "CHECKOUT_SESSIONS_PER_SECOND" => Some("1000".into()),
        "CHECKOUT_SESSIONS_BURST" => Some("10000".into()),
        "APP_WEBHOOK_URL" => app_webhook.map(str::to_owned),
        "APP_WEBHOOK_SECRET" => app_webhook.map(|_| crate::receiver::SECRET.to_owned()),
        _ => None,
    })
    .map(|mut config| {
        if pool_size.is_none() && instances > 1 {
            config.database_max_connections = (config.database_max_connections / instances as u32).max(4);
        }
        config
    })
    .expect("a valid configuration")
}

/// Starts this executable again as the service alone and reads the port it prints.
fn spawn_child(
    database_url: &str,
    emulator_base: &str,
    app_webhook: Option<&str>,
    instances: usize,
) -> (u16, ServiceProcess) {
    let mut command = Command::new(std::env::current_exe().expect("the load test's own path"));
    if let Some(url) = app_webhook {
        command.env("LOADTEST_APP_WEBHOOK_URL", url);
    }
    let mut child = command
        .env(CHILD_ROLE, "1")
        .env("LOADTEST_INSTANCES", instances.to_string())
        .env("LOADTEST_DATABASE_URL", database_url)
        .env("LOADTEST_STRIPE_API_BASE", emulator_base)
        // The child exits when this pipe closes, i.e. when this process ends for any reason.
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("can start the service process");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("the service process prints its port");
    let port = line.trim().parse().expect("the service process printed its port");
    (port, ServiceProcess::Child(child))
}

/// The child's whole life: serve until the parent goes away.
pub async fn serve_as_child() {
    log_like_production(CHILD_LOG_FILE);
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is set by the parent"));
    let app_webhook = std::env::var("LOADTEST_APP_WEBHOOK_URL").ok();
    let config = config(
        &var("LOADTEST_DATABASE_URL"),
        &var("LOADTEST_STRIPE_API_BASE"),
        app_webhook.as_deref(),
        var("LOADTEST_INSTANCES")
            .parse()
            .expect("LOADTEST_INSTANCES is a count"),
    );
    let app = Application::build(config).await.expect("the application starts");
    println!("{}", app.port());
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
    app.run_until_stopped().await.expect("the service runs");
}

impl Service {
    /// The service's processes, for their CPU time.
    pub fn pids(&self) -> Vec<u32> {
        let first = match &self.process {
            ServiceProcess::ThisOne => std::process::id(),
            ServiceProcess::Child(child) => child.id(),
        };
        std::iter::once(first)
            .chain(self.others.iter().map(Child::id))
            .collect()
    }

    pub async fn drop_database(self) {
        let mut children = self.others;
        if let ServiceProcess::Child(child) = self.process {
            children.push(child);
        }
        for mut child in children {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.db.close().await;
        let mut admin = PgConnection::connect(&format!("{}/postgres", admin_url()))
            .await
            .unwrap();
        let dropped = sqlx::query(&format!("drop database {} with (force)", self.database_name))
            .execute(&mut admin)
            .await;
        if let Err(err) = dropped {
            eprintln!("could not drop {}: {err}", self.database_name);
        }
    }
}

/// Logged as `main.rs` logs (`telemetry`: its filter, or RUST_LOG, and a line per request),
/// written to a file. The guard lives as long as the process; the first pass sets it up for all.
fn log_like_production(path: &'static str) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let file = File::create(path).unwrap_or_else(|err| panic!("cannot write {path}: {err}"));
        std::mem::forget(entitle::telemetry::init(LogFormat::Text, file));
    });
}
