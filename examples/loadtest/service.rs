//! Starts Entitle for a pass: a fresh database, the Stripe emulator on its own port in this
//! process, and the production binary (`entitle serve`, built by cargo if needed) in one or more
//! processes of its own, configured through its environment alone and logging at production's
//! level to `target/loadtest-service-<n>.log`. `SERVICE_PROCESS=same` runs the real startup path
//! in this process instead, as `tests/api/helpers.rs` does.

use std::{
    fs::File,
    path::{Path, PathBuf},
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
/// With `SERVICE_PROCESS=same` the service logs at production's level to this file, so its cost
/// is part of the measurement.
pub const LOG_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/target/loadtest.log");

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
    pub others: Vec<ChildGuard>,
}

/// Where the service runs: in a process of its own (the production binary, the default), so its
/// memory is read on its own, or, with `SERVICE_PROCESS=same`, in this process beside the load
/// generator.
pub enum ServiceProcess {
    ThisOne,
    Child(ChildGuard),
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

fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// `app_webhook`: the URL the outbox sends the app webhooks to, if any. `instances` service
/// processes share the database and the emulator (more than one needs child processes).
pub async fn start(app_webhook: Option<&str>, instances: usize) -> Service {
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

    let settings = settings(&database_url, &emulator_base, app_webhook, instances);
    let pool_size = config(&settings).database_max_connections;
    let mut ports = Vec::new();
    let mut others = Vec::new();
    let process = if std::env::var("SERVICE_PROCESS").is_ok_and(|v| v == "same") {
        assert_eq!(instances, 1, "SERVICE_PROCESS=same runs one instance");
        log_like_production(LOG_FILE);
        let app = Application::build(config(&settings))
            .await
            .expect("the application starts");
        ports.push(app.port());
        tokio::spawn(app.run_until_stopped());
        ServiceProcess::ThisOne
    } else {
        let binary = service_binary();
        // One after another, so the first has run the migrations before the next starts.
        for n in 1..=instances {
            let (port, child) = spawn_child(&binary, &settings, n).await;
            ports.push(port);
            others.push(child);
        }
        ServiceProcess::Child(others.remove(0))
    };
    let port = ports[0];

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

/// The service's settings, as its environment would give them: the real configuration rules (and
/// defaults, such as the pool size) apply, but for the checkout session rate; only
/// DATABASE_MAX_CONNECTIONS and OUTBOX_CONCURRENCY may come from this process's environment, to
/// compare settings. Several instances split the default pool between them (at least 4 each), as
/// an operator shares one database's connection budget: their pools and the ceilings' then fit
/// Postgres's default max_connections of 100.
fn settings(
    database_url: &str,
    emulator_base: &str,
    app_webhook: Option<&str>,
    instances: usize,
) -> Vec<(&'static str, String)> {
    let plans_file = concat!(env!("CARGO_MANIFEST_DIR"), "/plans.toml");
    let mut settings = vec![
        ("DATABASE_URL", database_url.to_owned()),
        ("BIND_ADDR", "127.0.0.1:0".to_owned()),
        ("STRIPE_SECRET_KEY", "sk_test_loadtest".to_owned()),
        ("STRIPE_API_BASE", emulator_base.to_owned()),
        ("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET.to_owned()),
        ("AUTH_JWT_SECRET", JWT_SECRET.to_owned()),
        ("ENTITLE_API_KEYS", API_KEY.to_owned()),
        ("PLANS_FILE", plans_file.to_owned()),
        // The run opens its checkouts as fast as it can, to measure the service, not the limiter
        // that keeps real buyers from spending the Stripe rate limit.
        ("CHECKOUT_SESSIONS_PER_SECOND", "1000".to_owned()),
        ("CHECKOUT_SESSIONS_BURST", "10000".to_owned()),
        // The reconciler applies any paid session's event it finds not yet processed. A pass whose
        // checkouts open near its 5-minute tick (the seeded one, after minutes of seeding) had it
        // apply all 2,000 before the burst, which then measured 4,000 duplicates (2026-12-08);
        // the run measures the webhook, so the tick is kept out of it.
        ("RECONCILE_EVERY_SECS", "86400".to_owned()),
    ];
    if let Some(url) = app_webhook {
        settings.push(("APP_WEBHOOK_URL", url.to_owned()));
        settings.push(("APP_WEBHOOK_SECRET", crate::receiver::SECRET.to_owned()));
    }
    if let Ok(concurrency) = std::env::var("OUTBOX_CONCURRENCY") {
        settings.push(("OUTBOX_CONCURRENCY", concurrency));
    }
    let pool = match std::env::var("DATABASE_MAX_CONNECTIONS") {
        Ok(pool) => Some(pool),
        Err(_) if instances > 1 => {
            let default = config(&settings).database_max_connections;
            Some((default / instances as u32).max(4).to_string())
        }
        Err(_) => None,
    };
    if let Some(pool) = pool {
        settings.push(("DATABASE_MAX_CONNECTIONS", pool));
    }
    settings
}

fn config(settings: &[(&'static str, String)]) -> Config {
    Config::from_lookup(|name| {
        settings
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.clone())
    })
    .expect("a valid configuration")
}

/// The production binary, `target/<profile>/entitle` beside this example, built first (cargo
/// does nothing if it is current): what runs in production is what is measured, its memory above
/// all, not this example's own executable with the emulator and the load generator linked in.
fn service_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the load test's own path");
    // target/<profile>/examples/loadtest → target/<profile>/entitle
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the load test runs from target/<profile>/examples")
        .to_owned();
    let mut build = Command::new(env!("CARGO"));
    build.args(["build", "--quiet", "--bin", "entitle"]);
    // `cargo run` gave this process the package's variables (CARGO_PKG_NAME, CARGO_MANIFEST_DIR,
    // …). Some build scripts (ring's) rerun when one of those changes, so an inner cargo that saw
    // them would rebuild half the tree after every outer build and the other way round.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let set_by_cargo_run = [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
            "CARGO_PRIMARY_",
        ]
        .iter()
        .any(|prefix| name.starts_with(prefix))
            || name == "OUT_DIR";
        if set_by_cargo_run {
            build.env_remove(name.as_ref());
        }
    }
    if profile_dir.file_name().is_some_and(|name| name == "release") {
        build.arg("--release");
    }
    let built = build
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo builds the service's binary");
    assert!(built.success(), "cargo could not build the entitle binary");
    profile_dir.join("entitle")
}

/// Starts the production binary with `settings` as its whole environment (nothing of this
/// process's leaks in) on a free port, and waits until it answers `/healthz`.
async fn spawn_child(binary: &Path, settings: &[(&'static str, String)], n: usize) -> (u16, ChildGuard) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let log_path = format!("{}/target/loadtest-service-{n}.log", env!("CARGO_MANIFEST_DIR"));
    let log = File::create(&log_path).unwrap_or_else(|err| panic!("cannot write {log_path}: {err}"));
    let mut command = Command::new(binary);
    command.env_clear();
    for (name, value) in settings {
        command.env(name, value);
    }
    if let Ok(filter) = std::env::var("RUST_LOG") {
        command.env("RUST_LOG", filter);
    }
    let child = command
        .env("BIND_ADDR", format!("127.0.0.1:{port}"))
        .arg("serve")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("the log file"))
        .stderr(log)
        .spawn()
        .expect("can start the service's binary");
    let child = ChildGuard(child);
    let health = format!("http://127.0.0.1:{port}/healthz");
    let client = reqwest::Client::new();
    for _ in 0..600 {
        if client.get(&health).send().await.is_ok_and(|r| r.status().is_success()) {
            return (port, child);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the service did not answer /healthz within 30 s; see {log_path}");
}

/// A service process, stopped when the run lets go of it (a panicking run too).
pub struct ChildGuard(Child);

impl ChildGuard {
    pub fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Service {
    /// Where the service's processes write their logs.
    pub fn log_files(&self) -> String {
        match self.process {
            ServiceProcess::ThisOne => LOG_FILE.to_owned(),
            ServiceProcess::Child(_) => {
                format!("{}/target/loadtest-service-<n>.log", env!("CARGO_MANIFEST_DIR"))
            }
        }
    }

    /// The service's processes, for their CPU time.
    pub fn pids(&self) -> Vec<u32> {
        let first = match &self.process {
            ServiceProcess::ThisOne => std::process::id(),
            ServiceProcess::Child(child) => child.id(),
        };
        std::iter::once(first)
            .chain(self.others.iter().map(ChildGuard::id))
            .collect()
    }

    pub async fn drop_database(self) {
        // Stopped (dropped) before their database goes.
        drop(self.others);
        drop(self.process);
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
