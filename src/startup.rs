//! Turns a configuration into a running server: database pool, migrations, catalog, listener.
//! Tests use the same path with port 0, so what they exercise is what production runs.

use std::time::Duration;

use sqlx::{
    PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};
use tokio::net::TcpListener;

use crate::{
    app::{AppState, router},
    catalog::{load_plans_file, sync_catalog},
    config::Config,
    order_events::OrderEvents,
    stripe::build_client,
};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot connect to the database at DATABASE_URL: {0}")]
    Database(#[source] sqlx::Error),
    #[error("cannot listen for order status changes: {0}")]
    Listen(#[source] sqlx::Error),
    #[error("cannot apply database migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(transparent)]
    Catalog(#[from] crate::catalog::CatalogError),
    #[error("cannot build the Stripe client: {0}")]
    Stripe(#[from] stripe::StripeError),
    #[error("cannot listen on BIND_ADDR: {0}")]
    Bind(#[source] std::io::Error),
}

pub struct Application {
    listener: TcpListener,
    state: AppState,
}

impl Application {
    pub async fn build(config: Config) -> Result<Self, StartupError> {
        let db = connect(&config).await?;
        sqlx::migrate!("./migrations").run(&db).await?;
        let plans = load_plans_file(&config.plans_file)?;
        sync_catalog(&db, &plans).await?;
        let stripe = build_client(&config)?;
        let order_events = OrderEvents::listen(connect_options(&config)?)
            .await
            .map_err(StartupError::Listen)?;
        let listener = TcpListener::bind(config.bind_addr).await.map_err(StartupError::Bind)?;
        Ok(Self {
            listener,
            state: AppState::new(db, config, stripe, order_events),
        })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|addr| addr.port()).unwrap_or_default()
    }

    pub fn db(&self) -> &PgPool {
        &self.state.db
    }

    /// Serves until SIGTERM or ctrl-c, then lets requests in flight finish.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        tracing::info!(addr = %self.listener.local_addr()?, "entitle listening");
        axum::serve(self.listener, router(self.state))
            .with_graceful_shutdown(shutdown_signal())
            .await
    }
}

fn connect_options(config: &Config) -> Result<PgConnectOptions, StartupError> {
    config.database_url.expose().parse().map_err(StartupError::Database)
}

async fn connect(config: &Config) -> Result<PgPool, StartupError> {
    PgPoolOptions::new()
        .max_connections(config.database_max_connections)
        // A request waiting longer than this for a connection gets a 503 rather than hanging.
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(connect_options(config)?)
        .await
        .map_err(StartupError::Database)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        if let Ok(mut signal) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            signal.recv().await;
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}
