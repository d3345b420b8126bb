//! Turns a configuration into a running server: database (created if missing), migrations,
//! catalog, webhook endpoints, Stripe client (or the built-in emulator), listeners, outbox senders. Tests use the same path with
//! port 0, so what they exercise is what production runs.

use std::{net::SocketAddr, time::Duration};

use sqlx::{Connection, PgConnection, PgPool, postgres::PgConnectOptions};
use tokio::net::TcpListener;
use uuid::Uuid;

use crate::{
    catalog::{Plan, load_plans_file, sync_catalog},
    config::{Config, EmailDelivery, StripeBackend},
    jobs::{self, Job},
    mail::{MailError, Mailer},
    metrics::Metrics,
    order_events::OrderEvents,
    outbox::{self, dispatch::Outbox},
    reconcile::missed_events,
    service_mode::{ServiceModeError, ensure_service_mode},
    store,
    stripe::{StripeApi, build_client},
    stripe_emulator::{BookPrice, DeliveryConfig, StripeEmulator},
    wakeups::Wakeups,
    {app::router, state::AppState},
};

/// Where the emulator is mounted in emulator mode.
pub const EMULATOR_PATH: &str = "/stripe-emulator";

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(
        "no PostgreSQL answers at DATABASE_URL ({0}). Start one with `docker compose up -d postgres`, or set DATABASE_URL=postgres://user:password@host:5432/entitle"
    )]
    NoDatabase(String),
    #[error("cannot use the database at DATABASE_URL: {0}")]
    Database(#[source] sqlx::Error),
    #[error("cannot listen for order status changes: {0}")]
    Listen(#[source] sqlx::Error),
    #[error("cannot listen for outbox deliveries: {0}")]
    OutboxListen(#[source] sqlx::Error),
    #[error("cannot apply database migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(transparent)]
    Catalog(#[from] crate::catalog::CatalogError),
    #[error("cannot build the Stripe client: {0}")]
    Stripe(#[from] stripe::StripeError),
    #[error("cannot listen on BIND_ADDR: {0}")]
    Bind(#[source] std::io::Error),
    #[error(
        "cannot serve the Stripe emulator's API on STRIPE_EMULATOR_ADDR ({addr}): {source}. Set STRIPE_EMULATOR_ADDR to a free address (127.0.0.1:0 picks any port)"
    )]
    EmulatorBind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    ServiceMode(#[from] ServiceModeError),
    #[error("cannot set up the mailer for SMTP_URL: {0}")]
    Mail(#[source] MailError),
}

pub struct Application {
    listener: TcpListener,
    state: AppState,
    emulator: Option<StripeEmulator>,
    /// Where the emulator's API is also served at the root path (`STRIPE_EMULATOR_ADDR`), in emulator mode.
    emulator_listener: Option<TcpListener>,
    /// This process's outbox senders: none when neither webhooks nor emails are configured, or
    /// OUTBOX_CONCURRENCY is 0.
    outbox: Option<Outbox>,
    /// Names this process in `job_runs`; new at every start.
    instance_id: Uuid,
}

impl Application {
    pub async fn build(config: Config) -> Result<Self, StartupError> {
        let listener = TcpListener::bind(config.bind_addr).await.map_err(StartupError::Bind)?;
        Self::build_on(listener, config).await
    }

    /// Builds on a listener the caller bound, so it can know the port before the app is configured.
    pub async fn build_on(listener: TcpListener, config: Config) -> Result<Self, StartupError> {
        let db = connect(&config).await?;
        sqlx::migrate!("./migrations").run(&db).await?;
        // Before anything is served, or the emulator's `/dev/token` could sign anyone in on real data.
        check_service_mode(&db, &config).await?;
        let plans = load_plans_file(&config.plans_file)?;
        sync_catalog(&db, &plans).await?;
        let mailer = Mailer::from_config(&config.email).map_err(StartupError::Mail)?;
        // One email endpoint exactly when there is a mailer: without one, no confirmation
        // message is written at all.
        let email_endpoint = outbox::endpoints::email_endpoint_url(&config.email).filter(|_| mailer.is_some());
        outbox::endpoints::sync(&db, &config.app_webhooks, email_endpoint.as_deref())
            .await
            .map_err(StartupError::Database)?;

        let own_addr = listener.local_addr().map_err(StartupError::Bind)?;
        let metrics = Metrics::new();
        let stripe = stripe_client(&config, own_addr, metrics.clone())?;
        let emulator = config
            .stripe
            .is_emulator()
            .then(|| start_emulator(&config, own_addr, &plans));
        let emulator_listener =
            match &emulator {
                Some(_) => Some(TcpListener::bind(config.emulator_addr).await.map_err(|source| {
                    StartupError::EmulatorBind {
                        addr: config.emulator_addr,
                        source,
                    }
                })?),
                None => None,
            };
        let order_events = OrderEvents::listen(connect_options(&config)?)
            .await
            .map_err(StartupError::Listen)?;
        let has_endpoints = !config.app_webhooks.urls.is_empty() || mailer.is_some();
        let (outbox, outbox_wake) = match has_endpoints && config.outbox.concurrency > 0 {
            true => {
                let wake = outbox::wake::listen(connect_options(&config)?)
                    .await
                    .map_err(StartupError::OutboxListen)?;
                let outbox = Outbox::new(outbox_pool(&config)?, &config, wake.clone(), mailer.clone());
                (Some(outbox), Some(wake))
            }
            false => (None, None),
        };
        let wakeups = Wakeups::start(db.clone(), order_events.clone(), outbox_wake);
        Ok(Self {
            listener,
            state: AppState::new(db, config, stripe, order_events, wakeups, mailer, metrics),
            emulator,
            emulator_listener,
            outbox,
            instance_id: Uuid::new_v4(),
        })
    }

    /// How this process is named in `job_runs`.
    pub fn instance_id(&self) -> Uuid {
        self.instance_id
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|addr| addr.port()).unwrap_or_default()
    }

    /// The built-in Stripe emulator, in emulator mode.
    pub fn emulator(&self) -> Option<&StripeEmulator> {
        self.emulator.as_ref()
    }

    /// The port the emulator's own API listener is bound to, in emulator mode.
    pub fn emulator_api_port(&self) -> Option<u16> {
        let listener = self.emulator_listener.as_ref()?;
        listener.local_addr().ok().map(|addr| addr.port())
    }

    /// Where order confirmation emails go; `None` when they are off.
    pub fn mailer(&self) -> Option<&Mailer> {
        self.state.mailer.as_ref()
    }

    /// Serves until SIGTERM or ctrl-c, then lets requests in flight finish.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let addr = self.listener.local_addr()?;
        self.spawn_jobs();
        if let Some(outbox) = &self.outbox {
            tokio::spawn(outbox.clone().run());
        }
        let order_events = self.state.order_events.clone();
        let config = &self.state.config;
        // Long enough for a send in flight to get its answer and record it.
        let outbox_grace = config.outbox.send_timeout + Duration::from_secs(1);
        let api_key = config.api_key_generated.then(|| config.api_keys[0].expose().to_owned());
        let connection_limits = config.connection_limits;
        log_email_delivery(&config.email);
        log_admin_access(config);
        let mut app = router(self.state);
        if let Some(emulator) = &self.emulator {
            app = app.nest(EMULATOR_PATH, emulator.router());
            let api_addr = self.emulator_listener.as_ref().and_then(|l| l.local_addr().ok());
            if let Some(listener) = self.emulator_listener {
                tokio::spawn(axum::serve(listener, emulator.router()).into_future());
            }
            print_emulator_banner(addr, api_addr, api_key.as_deref());
        }
        tracing::info!(%addr, "entitle listening");
        let outbox = self.outbox;
        crate::serve::serve(self.listener, app, connection_limits, async move {
            shutdown_signal().await;
            // Long-polls answer now instead of holding the shutdown for up to 25 s.
            order_events.release_all();
        })
        .await?;
        if let Some(outbox) = outbox {
            outbox.stop(outbox_grace).await;
        }
        Ok(())
    }
}

impl Application {
    /// The periodic jobs, which run on one instance of the fleet at a time (see `jobs`).
    fn spawn_jobs(&self) {
        let state = &self.state;
        let (db, stripe, metrics) = (state.db.clone(), state.stripe.clone(), state.metrics.clone());
        let max_attempts = state.config.reconciler_max_attempts;
        tokio::spawn(jobs::run_every(
            state.db.clone(),
            self.instance_id,
            Job::Reconcile,
            state.config.jobs.reconcile_every,
            move || {
                let (db, stripe, metrics) = (db.clone(), stripe.clone(), metrics.clone());
                async move { missed_events::scheduled_run(&db, &stripe, &metrics, max_attempts).await }
            },
        ));
        let (db, stripe, metrics) = (state.db.clone(), state.stripe.clone(), state.metrics.clone());
        let drift_check = state.config.drift_check;
        tokio::spawn(jobs::run_every(
            state.db.clone(),
            self.instance_id,
            Job::Verify,
            state.config.jobs.verify_every,
            move || {
                let (db, stripe, metrics) = (db.clone(), stripe.clone(), metrics.clone());
                async move { crate::reconcile::drift::scheduled_run(&db, &stripe, &metrics, drift_check).await }
            },
        ));
        let db = state.db.clone();
        tokio::spawn(jobs::run_every(
            state.db.clone(),
            self.instance_id,
            Job::CreditSweep,
            state.config.jobs.credit_sweep_every,
            move || {
                let db = db.clone();
                async move { crate::credits::scheduled_sweep(&db).await }
            },
        ));
    }
}

/// The Stripe client for the configured backend. In emulator mode that is the emulator served by
/// the process listening at `own_addr`: this one, or, for an operator command, the running server.
pub fn stripe_client(
    config: &Config,
    own_addr: SocketAddr,
    metrics: Metrics,
) -> Result<StripeApi, stripe::StripeError> {
    let client = match &config.stripe {
        StripeBackend::Api { secret_key, api_base } => build_client(secret_key.expose(), api_base)?,
        StripeBackend::Emulator => build_client(
            "sk_test_emulator",
            &format!("http://{}{EMULATOR_PATH}", loopback_address(own_addr)),
        )?,
    };
    Ok(StripeApi::new(client, metrics))
}

fn start_emulator(config: &Config, own_addr: SocketAddr, plans: &[Plan]) -> StripeEmulator {
    let public_base = format!("{}{EMULATOR_PATH}", public_origin(own_addr));
    let emulator = StripeEmulator::new(public_base);
    // The Prices a plan names by `stripe_price` exist in the emulated account, priced as the plan is.
    for plan in plans {
        if let Some(id) = &plan.stripe_price {
            emulator.add_price(BookPrice {
                id: id.clone(),
                unit_amount: plan.amount,
                currency: plan.currency.clone(),
                interval: plan.interval.clone(),
                product_name: plan.name.clone(),
            });
        }
    }
    let mut delivery = DeliveryConfig::new(
        format!("http://{}/payment-webhook", loopback_address(own_addr)),
        config.webhook_secrets[0].clone(),
    );
    delivery.duplicate_rate = config.emulator_chaos.duplicate_rate;
    delivery.reorder = config.emulator_chaos.reorder;
    emulator.start_delivery(delivery);
    emulator.start_expiry_clock();
    emulator
}

/// How this process reaches itself: the bound address, with an unspecified IP replaced by loopback.
fn loopback_address(addr: SocketAddr) -> SocketAddr {
    match addr.ip().is_unspecified() {
        true => SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port()),
        false => addr,
    }
}

/// How a browser on this machine reaches the service: `localhost` for loopback or wildcard binds.
fn public_origin(addr: SocketAddr) -> String {
    if addr.ip().is_loopback() || addr.ip().is_unspecified() {
        format!("http://localhost:{}", addr.port())
    } else {
        format!("http://{addr}")
    }
}

fn print_emulator_banner(addr: SocketAddr, api_addr: Option<SocketAddr>, generated_api_key: Option<&str>) {
    let origin = public_origin(addr);
    let api = api_addr.map(loopback_address).map_or_else(String::new, |api| {
        format!(
            "\n  Its API is also at http://{api} (Stripe libraries: host {}, port {}, protocol http).",
            api.ip(),
            api.port()
        )
    });
    let line = "=".repeat(78);
    // Printed only when made up for this process in emulator mode, where nothing real is at stake.
    let api_key = generated_api_key
        .map(|key| {
            format!("\n  Server API (/v1/) key for this run: {key}\n  (set ENTITLE_API_KEYS to choose your own).")
        })
        .unwrap_or_default();
    tracing::warn!(
        "\n{line}\n  STRIPE EMULATOR MODE: no STRIPE_SECRET_KEY is set, so no real payment can happen.\n  Payments go to the built-in Stripe emulator at {origin}{EMULATOR_PATH},\n  which signs and delivers webhooks to this service.{api}\n  Open {origin}/ to try the shop,\n  and {origin}/dev/mail for the emails buyers get.\n  Set STRIPE_SECRET_KEY (and STRIPE_WEBHOOK_SECRET, AUTH_JWT_SECRET) to use real Stripe.{api_key}\n{line}"
    );
}

/// Said once, at startup, so an operator who finds `/admin` answering 403 learns why.
fn log_admin_access(config: &Config) {
    use crate::admin::access::AdminAccess;
    match AdminAccess::from_config(config) {
        AdminAccess::Closed => tracing::warn!(
            "the operator dashboard /admin is closed (403): ADMIN_TOKEN is not set and STRIPE_SECRET_KEY is a real key; set ADMIN_TOKEN (at least 32 characters) to open it"
        ),
        AdminAccess::Open => {
            tracing::info!("the operator dashboard /admin is open to anyone: emulator mode without ADMIN_TOKEN")
        }
        AdminAccess::Token(_) => tracing::info!("the operator dashboard /admin asks for ADMIN_TOKEN"),
    }
}

/// Said once, at startup, so an operator who expected emails learns why none leave. Names the
/// server, never the credentials.
fn log_email_delivery(email: &EmailDelivery) {
    match email {
        EmailDelivery::Off => {
            tracing::warn!("confirmation emails are off: SMTP_URL is not set (set it and EMAIL_FROM to send them)")
        }
        EmailDelivery::DevMailbox { from } => {
            tracing::info!(%from, "confirmation emails are kept in the dev mailbox at /dev/mail (SMTP_URL is not set)")
        }
        EmailDelivery::Smtp { server, from } => tracing::info!(
            host = %server.host,
            port = server.port,
            tls = ?server.tls,
            %from,
            "confirmation emails are sent through SMTP"
        ),
    }
}

/// Refuses a database recorded for another Stripe mode (see `service_mode`); the server and the
/// operator commands both call it, after connecting and before touching any data.
pub async fn check_service_mode(db: &PgPool, config: &Config) -> Result<(), StartupError> {
    let options = connect_options(config)?;
    let database = format!(
        "{}:{}/{}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or_default()
    );
    Ok(ensure_service_mode(db, config.stripe.mode(), database).await?)
}

/// Connects, creating the database first when the server is there but the database is not, so a
/// fresh machine needs no setup step.
fn connect_options(config: &Config) -> Result<PgConnectOptions, StartupError> {
    config.database_url.expose().parse().map_err(StartupError::Database)
}

/// The outbox's own connections: its claims and records never wait in the pool's queue behind
/// the requests (under a webhook burst that queue is long, and a sender waiting in it holds its
/// deliveries back: the backlog grew while the database still had room; docs/performance.md).
/// Its work is a few short statements at a time, so a few connections are enough.
fn outbox_pool(config: &Config) -> Result<PgPool, StartupError> {
    Ok(crate::db::pool_options(crate::config::OUTBOX_DATABASE_CONNECTIONS).connect_lazy_with(connect_options(config)?))
}

pub async fn connect(config: &Config) -> Result<PgPool, StartupError> {
    let options = connect_options(config)?;
    let pool_options = crate::db::pool_options(config.database_max_connections);
    match pool_options.clone().connect_with(options.clone()).await {
        Ok(pool) => Ok(pool),
        Err(err) if is_missing_database(&err) => {
            create_database(&options).await?;
            pool_options.connect_with(options).await.map_err(StartupError::Database)
        }
        Err(err) => Err(describe_connect_error(&options, err)),
    }
}

fn is_missing_database(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == "3D000")
}

fn describe_connect_error(options: &PgConnectOptions, err: sqlx::Error) -> StartupError {
    match err {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Tls(_) => {
            StartupError::NoDatabase(format!("{}:{}", options.get_host(), options.get_port()))
        }
        other => StartupError::Database(other),
    }
}

async fn create_database(options: &PgConnectOptions) -> Result<(), StartupError> {
    let name = options.get_database().unwrap_or("entitle").to_owned();
    let mut admin = PgConnection::connect_with(&options.clone().database("postgres"))
        .await
        .map_err(|err| describe_connect_error(options, err))?;
    match store::database::create(&mut admin, &name).await {
        Ok(_) => {
            tracing::info!(database = %name, "created the database");
            Ok(())
        }
        // Another instance created it at the same moment.
        Err(err)
            if err
                .as_database_error()
                .and_then(|e| e.code())
                .is_some_and(|c| c == "42P04") =>
        {
            Ok(())
        }
        Err(err) => Err(StartupError::Database(err)),
    }
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
