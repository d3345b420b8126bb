//! Starts Entitle in this process exactly as `tests/api/helpers.rs` does: a fresh database, the
//! Stripe emulator on its own port, the real startup path on port 0, production's log level.

use std::{fs::File, sync::Mutex};

use entitle::{config::Config, startup::Application, stripe_emulator::StripeEmulator};
use sqlx::{Connection, PgConnection, PgPool, postgres::PgPoolOptions};
use tracing_subscriber::EnvFilter;
use uuid::Uuid;

pub const WEBHOOK_SECRET: &str = "whsec_loadtest_secret";
pub const JWT_SECRET: &str = "loadtest-jwt-secret-that-is-long-enough-for-hs256";
/// The service logs at production's level to this file, so its cost is part of the measurement.
pub const LOG_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/target/loadtest.log");

pub struct Service {
    pub address: String,
    pub emulator: StripeEmulator,
    pub database_url: String,
    pub database_name: String,
    pub pool_size: u32,
    /// For the load generator's own checks; not used by the service.
    pub db: PgPool,
}

fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

pub async fn start() -> Service {
    log_like_production();
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

    // The real configuration rules (and defaults, such as the pool size) apply; only
    // DATABASE_MAX_CONNECTIONS may come from the environment, to compare pool sizes.
    let pool_size = std::env::var("DATABASE_MAX_CONNECTIONS").ok();
    let plans_file = concat!(env!("CARGO_MANIFEST_DIR"), "/plans.toml");
    let config = Config::from_lookup(|name| match name {
        "DATABASE_URL" => Some(database_url.clone()),
        "DATABASE_MAX_CONNECTIONS" => pool_size.clone(),
        "BIND_ADDR" => Some("127.0.0.1:0".into()),
        "STRIPE_SECRET_KEY" => Some("sk_test_loadtest".into()),
        "STRIPE_API_BASE" => Some(emulator_base.clone()),
        "STRIPE_WEBHOOK_SECRET" => Some(WEBHOOK_SECRET.into()),
        "AUTH_JWT_SECRET" => Some(JWT_SECRET.into()),
        "PLANS_FILE" => Some(plans_file.into()),
        _ => None,
    })
    .expect("a valid configuration");
    let pool_size = config.database_max_connections;
    let app = Application::build(config).await.expect("the application starts");
    let address = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());

    // Two connections leave Postgres's max_connections to the service and the ceilings.
    let db = PgPoolOptions::new()
        .max_connections(2)
        .connect(&database_url)
        .await
        .unwrap();
    Service {
        address,
        emulator,
        database_url,
        database_name,
        pool_size,
        db,
    }
}

impl Service {
    pub async fn drop_database(self) {
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

/// `entitle=info,tower_http=info` (or RUST_LOG), as `main.rs` sets it, written to a file.
fn log_like_production() {
    let file = File::create(LOG_FILE).expect("can write target/loadtest.log");
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("entitle=info,tower_http=info")),
        )
        .with_ansi(false)
        .with_writer(Mutex::new(file))
        .init();
}
