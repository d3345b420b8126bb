//! Settings read once at startup from the environment (and `.env`, when present). Every value is
//! validated here, so a bad deployment stops with one line naming the variable instead of failing
//! on the first payment. Written by hand rather than with `envy` or `figment`: their errors name a
//! field and a type, not the rule broken ("must be a number from 1 to 1000"), and most variables
//! here have rules that depend on another (emulator mode, the key's mode).

use std::{fmt, net::SocketAddr, ops::RangeInclusive, path::PathBuf, time::Duration};

use lettre::message::Mailbox;
use uuid::Uuid;

use crate::{jwks::JwksSettings, outbox::signing::SigningKey};

/// Where a fresh machine's PostgreSQL is (trust auth for `postgres`); the database is created if missing.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/entitle";

/// A value that must never reach a log line: `Debug` and `Display` print a placeholder.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    pub database_url: Secret,
    pub database_max_connections: u32,
    pub bind_addr: SocketAddr,
    /// In emulator mode the emulator's API is also served here, at the root path, so official
    /// Stripe libraries (which take a host and port, not a base path) can reach it.
    pub emulator_addr: SocketAddr,
    /// The frontend origin, without a trailing slash.
    pub app_base_url: String,
    pub stripe: StripeBackend,
    /// Every secret a webhook signature may match; more than one while a secret is being rotated.
    pub webhook_secrets: Vec<Secret>,
    pub webhook_tolerance: Duration,
    /// `AUTH_JWT_SECRET`, the HS256 key of user tokens; none when only `AUTH_JWKS_URL` is used.
    pub jwt_secret: Option<Secret>,
    /// How user tokens from an identity provider are checked (`AUTH_JWKS_URL` and the rest).
    pub user_auth: UserAuth,
    /// The keys the app's backend calls `/v1/` with (`ENTITLE_API_KEYS`); more than one while a key
    /// is being rotated. None set means the server API refuses every call.
    pub api_keys: Vec<Secret>,
    /// Emulator mode made the one key up: the banner prints it so a newcomer can call the API.
    pub api_key_generated: bool,
    /// `METRICS_TOKEN`: when set, `/metrics` answers only `Authorization: Bearer <it>`.
    pub metrics_token: Option<Secret>,
    /// `ADMIN_TOKEN`: what the operator dashboard (`/admin`) asks for. Unset, it is open in
    /// emulator mode and closed (403) with a real Stripe key.
    pub admin_token: Option<Secret>,
    pub plans_file: PathBuf,
    /// `AUTOMATIC_TAX=true`: every Checkout Session asks Stripe Tax to compute and add tax
    /// (`automatic_tax[enabled]`). Stripe refuses such sessions until the account has a head office
    /// address and tax registrations set in its Tax settings.
    pub automatic_tax: bool,
    /// How long a subscription's entitlement outlives its paid period, so a late renewal does not
    /// lock anyone out.
    pub entitlement_grace: Duration,
    /// How often a long-polling `/order-status` re-reads its order besides being woken by a
    /// notification: the bound on how late a lost notification makes an answer.
    pub order_status_reread: Duration,
    /// How many times the reconciler tries a missed event before setting it aside, so one event
    /// that keeps failing cannot hold every later one back.
    pub reconciler_max_attempts: u32,
    /// How often the periodic jobs run, across all instances together.
    pub jobs: JobIntervals,
    pub drift_check: DriftCheck,
    /// Emulator mode only: chaos for its webhook deliveries.
    pub emulator_chaos: EmulatorChaos,
    pub checkout_limits: CheckoutLimits,
    /// The Stripe calls polling return pages may cause, all instances on the database together
    /// (a bucket in `rate_buckets`; each instance refills it at its own rate). Not read from the
    /// environment: `RETURN_SYNC_RATE` always, except in tests that need an empty bucket.
    pub return_sync_rate: Rate,
    /// Where the app hears of changes (`APP_WEBHOOK_URL`), and the keys its messages are signed with.
    pub app_webhooks: AppWebhooks,
    /// How the outbox sends what is written to it.
    pub outbox: OutboxSettings,
    /// Where order confirmation emails go (`SMTP_URL`, `EMAIL_FROM`).
    pub email: EmailDelivery,
    pub connection_limits: ConnectionLimits,
    pub log_format: LogFormat,
    /// `BILLING_PORTAL_RETURN_URL`: where the billing portal's "return" link goes; the frontend
    /// (`APP_BASE_URL`) by default, as checkout's return pages are.
    pub billing_portal_return_url: String,
}

/// How often each periodic job runs (see `jobs`): once per interval for the whole fleet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JobIntervals {
    /// `RECONCILE_EVERY_SECS`: Stripe's event list checked for events the webhook missed.
    pub reconcile_every: Duration,
    /// `CREDIT_SWEEP_EVERY_SECS`: expiries are also written by every read and write of the user
    /// they belong to; the sweep only records them for users nobody asks about.
    pub credit_sweep_every: Duration,
    /// `VERIFY_EVERY_SECS`: the drift check (`entitle verify`) compares our records with Stripe's
    /// objects. Daily by default: it reads every live subscription and recent order from Stripe.
    pub verify_every: Duration,
}

impl Default for JobIntervals {
    fn default() -> Self {
        Self {
            reconcile_every: Duration::from_secs(300),
            credit_sweep_every: Duration::from_secs(30),
            verify_every: Duration::from_secs(86_400),
        }
    }
}

/// What the scheduled drift check looks at and whether it fixes what it finds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DriftCheck {
    /// `VERIFY_WINDOW_DAYS` (default 30): orders paid or opened this far back are compared (live
    /// subscriptions always are).
    pub window: Duration,
    /// `VERIFY_FIX` (default true): apply Stripe's state through the event path, as the
    /// reconciler applies missed events; `false` only counts and logs the findings.
    pub fix: bool,
}

impl Default for DriftCheck {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(30 * 86_400),
            fix: true,
        }
    }
}

/// How log lines are written (`LOG_FORMAT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// For people reading a terminal.
    Text,
    /// One JSON object per line, for a log pipeline.
    Json,
}

/// What one client's connections may hold of the server (see `serve`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ConnectionLimits {
    /// A request's headers must arrive within this of the connection opening or of the previous
    /// answer on it; else the connection is closed.
    pub header_timeout: Duration,
    /// Open connections at once; more wait to be accepted.
    pub max_connections: usize,
}

/// The app's webhook endpoints and signing keys. No endpoint means no message is written at all.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AppWebhooks {
    /// http(s) URLs, each sent every message.
    pub urls: Vec<String>,
    /// From `APP_WEBHOOK_SECRET`: every message is signed with each (more than one while rotating).
    pub keys: Vec<SigningKey>,
}

/// The outbox's senders use connections of their own, beside `DATABASE_MAX_CONNECTIONS`: one claims,
/// one records arrivals, one records setbacks.
pub const OUTBOX_DATABASE_CONNECTIONS: u32 = 3;

/// How long a delivery may wait for its answer before it counts as failed (and is retried).
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// How the outbox's senders work (`src/outbox/`).
#[derive(Clone, Debug, PartialEq)]
pub struct OutboxSettings {
    /// Deliveries this process sends at once; 0 sends none (other instances do).
    pub concurrency: u32,
    /// How long a claimed delivery stays this sender's: longer than `send_timeout`, so a live
    /// sender always records its result before anyone else may send it again.
    pub lease: Duration,
    /// How often the senders look for what is due (retries, and anything a lost notification
    /// did not announce).
    pub sweep: Duration,
    /// An endpoint's first retry waits about this long; each later one twice as long, up to `retry_max`.
    pub retry_first: Duration,
    pub retry_max: Duration,
    /// An endpoint failing this long is disabled, and a message failing this long is abandoned.
    pub give_up_after: Duration,
    /// Not read from the environment: `SEND_TIMEOUT`, except in tests.
    pub send_timeout: Duration,
}

impl Default for OutboxSettings {
    fn default() -> Self {
        Self {
            // A send mostly waits on the receiver, holding no connection: at 8 the senders fell
            // seconds behind the webhook benchmark's rate; 32 keep up far better (docs/performance.md).
            concurrency: 32,
            lease: Duration::from_secs(60),
            sweep: Duration::from_secs(2),
            retry_first: Duration::from_secs(5),
            retry_max: Duration::from_secs(3600),
            give_up_after: Duration::from_secs(3 * 86_400),
            send_timeout: SEND_TIMEOUT,
        }
    }
}

/// A token bucket's settings: calls per second on average, and how many may come at once.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: u32,
}

/// Far below Stripe's 25 requests per second per endpoint, which webhooks and checkout also need.
pub const RETURN_SYNC_RATE: Rate = Rate {
    per_second: 5.0,
    burst: 5,
};

/// How fast checkouts may open (see `checkout_limits`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CheckoutLimits {
    /// Checkouts one user may open in any 60 seconds, counted in the database across instances.
    pub per_user_per_minute: u32,
    /// The Checkout Sessions this process may ask Stripe for.
    pub sessions: Rate,
}

impl Default for CheckoutLimits {
    /// Ten a minute is more than any buyer clicking needs; the session rate keeps most of
    /// Stripe's 25 per second for webhooks' follow-up calls and return-page syncs.
    fn default() -> Self {
        Self {
            per_user_per_minute: 10,
            sessions: Rate {
                per_second: 20.0,
                burst: 40,
            },
        }
    }
}

/// Where order confirmation emails go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EmailDelivery {
    /// No `SMTP_URL` with a real Stripe key: no email is sent, as the startup log says.
    Off,
    /// No `SMTP_URL` in emulator mode: emails are kept in memory and shown at `/dev/mail`, so a
    /// newcomer sees what the buyer would get.
    DevMailbox { from: Mailbox },
    /// Through the SMTP server at `SMTP_URL`.
    Smtp { server: SmtpServer, from: Mailbox },
}

/// The sender in emulator mode when `EMAIL_FROM` is not set; example.com is reserved, so no
/// real mailbox is named.
pub const DEV_EMAIL_FROM: &str = "Entitle demo shop <orders@example.com>";
/// How long one email's whole SMTP exchange may take, connecting included, before the send counts
/// as failed (and is retried later), so a silent server cannot hold the email outbox. A healthy
/// server needs a second or two; this leaves room for one that delays its greeting on purpose.
pub const SMTP_TIMEOUT: Duration = Duration::from_secs(30);

/// An SMTP server as `SMTP_URL` names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmtpServer {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    /// From the URL's user and password, percent-decoded; `None` sends no AUTH.
    pub credentials: Option<SmtpCredentials>,
    /// The bound on one send, connecting included (`SMTP_TIMEOUT`).
    pub timeout: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmtpCredentials {
    pub username: String,
    pub password: Secret,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmtpTls {
    /// `smtp://` (port 587 by default): STARTTLS when the server offers it, plain text otherwise.
    Opportunistic,
    /// `smtps://` (port 465 by default): TLS from the first byte.
    Implicit,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct EmulatorChaos {
    /// Share of events (0.0 to 1.0) delivered twice, concurrently.
    pub duplicate_rate: f64,
    /// Deliver events in random order.
    pub reorder: bool,
}

/// Who answers the service's Stripe API calls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StripeBackend {
    /// Stripe itself, or anything at `api_base` speaking its API (tests point it at a stand-in).
    Api { secret_key: Secret, api_base: String },
    /// The built-in emulator, served by this process: chosen when no `STRIPE_SECRET_KEY` is set,
    /// and never when one is, so a deployment with a real key cannot end up emulated.
    Emulator,
}

impl StripeBackend {
    pub fn is_emulator(&self) -> bool {
        matches!(self, Self::Emulator)
    }

    /// Which of Stripe's worlds this backend's money lives in. Keys are checked in `from_lookup`;
    /// one built by hand with another prefix counts as live, the mode that guards real money.
    pub fn mode(&self) -> StripeMode {
        match self {
            Self::Emulator => StripeMode::Emulator,
            Self::Api { secret_key, .. } => StripeMode::of_key(secret_key.expose()).unwrap_or(StripeMode::Live),
        }
    }
}

/// The world a service's data belongs to: emulated purchases, Stripe's test mode, or real money.
/// A database records the one it serves, so a lost key cannot turn production into a playground.
#[derive(Clone, Copy, Debug, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum StripeMode {
    Emulator,
    Test,
    Live,
}

impl StripeMode {
    /// The mode a secret or restricted key belongs to; `None` for anything else.
    pub fn of_key(key: &str) -> Option<Self> {
        match key.get(..8) {
            Some("sk_test_" | "rk_test_") => Some(Self::Test),
            Some("sk_live_" | "rk_live_") => Some(Self::Live),
            _ => None,
        }
    }

    /// The `livemode` Stripe puts on this mode's events; the emulator's are test-mode events.
    pub fn livemode(self) -> bool {
        self == Self::Live
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Emulator => "emulator",
            Self::Test => "test",
            Self::Live => "live",
        }
    }
}

impl fmt::Display for StripeMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the configuration was refused; its `Display` is the one line printed before exiting.
#[derive(Debug, thiserror::Error)]
#[error("{variable}: {problem}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub problem: String,
}

fn invalid(variable: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        variable,
        problem: problem.into(),
    }
}

impl Config {
    /// Reads the process environment, after loading `.env` if there is one (real variables win).
    pub fn from_env() -> Result<Self, ConfigError> {
        let _ = dotenvy::dotenv();
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Builds the configuration from any source of variables, so the rules can be tested alone.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());

        let database_url = get("DATABASE_URL").unwrap_or_else(|| DEFAULT_DATABASE_URL.into());
        if !database_url.starts_with("postgres://") && !database_url.starts_with("postgresql://") {
            return Err(invalid("DATABASE_URL", "must be a postgres:// URL"));
        }

        // On 2 cores, 16 connections: the reads that many callers make at once (order status,
        // credit checks) share batched queries, so they no longer need connections of their own,
        // and the debits over many users commit faster with more of them in flight (group
        // commit): 83-89 % of their SQL's ceiling at 16 against 43-67 % at 8, webhooks the same
        // (docs/performance.md). Beyond that, backends only compete for the CPU.
        let database_max_connections = match get("DATABASE_MAX_CONNECTIONS") {
            None => 16,
            Some(v) => v
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=1000).contains(n))
                .ok_or_else(|| invalid("DATABASE_MAX_CONNECTIONS", "must be a number from 1 to 1000"))?,
        };

        let bind_addr = get("BIND_ADDR")
            .unwrap_or_else(|| "127.0.0.1:3000".into())
            .parse()
            .map_err(|_| invalid("BIND_ADDR", "must be an address like 127.0.0.1:3000"))?;

        // stripe-mock's port, so a setup that points a Stripe library at stripe-mock finds the emulator.
        let emulator_addr = get("STRIPE_EMULATOR_ADDR")
            .unwrap_or_else(|| "127.0.0.1:12111".into())
            .parse()
            .map_err(|_| invalid("STRIPE_EMULATOR_ADDR", "must be an address like 127.0.0.1:12111"))?;

        // By default the frontend is the demo shop this service serves, so it follows the port.
        let bind_port = bind_addr_port(&get);
        let app_base_url = get("APP_BASE_URL").unwrap_or_else(|| format!("http://localhost:{bind_port}"));
        let app_base_url = http_url("APP_BASE_URL", &app_base_url)?;

        let stripe = stripe_backend(&get)?;
        let emulated = stripe.is_emulator();

        // In emulator mode nothing real can be paid for, so missing secrets are made up per process;
        // with a real Stripe key every secret must be given (fail closed).
        let webhook_secrets: Vec<Secret> = match get("STRIPE_WEBHOOK_SECRET") {
            None if emulated => vec![Secret::new(format!("whsec_emulator_{}", Uuid::new_v4().simple()))],
            None => return Err(invalid("STRIPE_WEBHOOK_SECRET", "is not set")),
            Some(value) => value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(Secret::new)
                .collect(),
        };
        // `whsec_` alone would be an HMAC key anyone can guess, so every entry needs a secret after it.
        let well_formed = |s: &Secret| s.expose().strip_prefix("whsec_").is_some_and(|rest| !rest.is_empty());
        if webhook_secrets.is_empty() || !webhook_secrets.iter().all(well_formed) {
            return Err(invalid(
                "STRIPE_WEBHOOK_SECRET",
                "must be one or more comma-separated whsec_… secrets",
            ));
        }

        let webhook_tolerance = seconds(&get, "WEBHOOK_TOLERANCE_SECS", 300, 1..=86_400)?;

        let user_auth = user_auth(&get)?;
        let jwt_secret = match get("AUTH_JWT_SECRET") {
            // `/dev/token` signs with it.
            None if emulated => Some(format!(
                "emulator-jwt-{}{}",
                Uuid::new_v4().simple(),
                Uuid::new_v4().simple()
            )),
            None if user_auth.jwks.is_some() => None,
            None => return Err(invalid("AUTH_JWT_SECRET", "is not set (nor AUTH_JWKS_URL)")),
            Some(secret) => Some(secret),
        };
        if jwt_secret.as_ref().is_some_and(|secret| secret.len() < 32) {
            return Err(invalid(
                "AUTH_JWT_SECRET",
                "must be at least 32 characters (an HS256 key)",
            ));
        }

        let (api_keys, api_key_generated) = match get("ENTITLE_API_KEYS") {
            None if emulated => (
                vec![Secret::new(format!("ek_emulator_{}", Uuid::new_v4().simple()))],
                true,
            ),
            None => (Vec::new(), false),
            Some(value) => (
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(Secret::new)
                    .collect(),
                false,
            ),
        };
        // A short key can be guessed; one with spaces or control characters cannot be sent as a header.
        let usable = |key: &Secret| key.expose().len() >= 32 && key.expose().bytes().all(|b| b.is_ascii_graphic());
        if !api_keys.iter().all(usable) {
            return Err(invalid(
                "ENTITLE_API_KEYS",
                "must be comma-separated keys of at least 32 printable characters each",
            ));
        }

        // Set but unusable is refused rather than taken for "open": fail closed.
        let metrics_token = get("METRICS_TOKEN").map(Secret::new);
        if metrics_token.as_ref().is_some_and(|token| !usable(token)) {
            return Err(invalid("METRICS_TOKEN", "must be at least 32 printable characters"));
        }
        let admin_token = get("ADMIN_TOKEN").map(Secret::new);
        if admin_token.as_ref().is_some_and(|token| !usable(token)) {
            return Err(invalid("ADMIN_TOKEN", "must be at least 32 printable characters"));
        }

        let plans_file = PathBuf::from(get("PLANS_FILE").unwrap_or_else(|| "plans.toml".into()));
        let automatic_tax = match get("AUTOMATIC_TAX") {
            None => false,
            Some(value) => parse_bool(&value).ok_or_else(|| invalid("AUTOMATIC_TAX", "must be true or false"))?,
        };

        let entitlement_grace = seconds(&get, "ENTITLEMENT_GRACE_SECS", 86_400, 0..=30 * 86_400)?;
        // Notifications do the waking; this only covers one lost without the listener noticing,
        // and lets a long wait reach the return-page sync with Stripe when the webhook is late.
        let order_status_reread = seconds(&get, "ORDER_STATUS_REREAD_SECS", 5, 1..=3600)?;
        let reconciler_max_attempts = match get("RECONCILER_MAX_ATTEMPTS") {
            None => 5,
            Some(v) => v
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=100).contains(n))
                .ok_or_else(|| invalid("RECONCILER_MAX_ATTEMPTS", "must be a number from 1 to 100"))?,
        };
        let default_jobs = JobIntervals::default();
        let jobs = JobIntervals {
            reconcile_every: seconds(
                &get,
                "RECONCILE_EVERY_SECS",
                default_jobs.reconcile_every.as_secs(),
                1..=86_400,
            )?,
            credit_sweep_every: seconds(
                &get,
                "CREDIT_SWEEP_EVERY_SECS",
                default_jobs.credit_sweep_every.as_secs(),
                1..=86_400,
            )?,
            verify_every: seconds(
                &get,
                "VERIFY_EVERY_SECS",
                default_jobs.verify_every.as_secs(),
                1..=30 * 86_400,
            )?,
        };
        let drift_check = DriftCheck {
            window: match get("VERIFY_WINDOW_DAYS") {
                None => DriftCheck::default().window,
                Some(v) => v
                    .parse::<u64>()
                    .ok()
                    .filter(|days| (1..=3650).contains(days))
                    .map(|days| Duration::from_secs(days * 86_400))
                    .ok_or_else(|| invalid("VERIFY_WINDOW_DAYS", "must be a number of days from 1 to 3650"))?,
            },
            fix: match get("VERIFY_FIX") {
                None => DriftCheck::default().fix,
                Some(value) => parse_bool(&value).ok_or_else(|| invalid("VERIFY_FIX", "must be true or false"))?,
            },
        };
        let duplicate_rate = match get("EMULATOR_DUPLICATE_RATE") {
            None => 0.0,
            Some(v) => v
                .parse::<f64>()
                .ok()
                .filter(|rate| (0.0..=1.0).contains(rate))
                .ok_or_else(|| invalid("EMULATOR_DUPLICATE_RATE", "must be a number from 0 to 1"))?,
        };
        let reorder = match get("EMULATOR_REORDER") {
            None => false,
            Some(v) => parse_bool(&v).ok_or_else(|| invalid("EMULATOR_REORDER", "must be true or false"))?,
        };
        let emulator_chaos = EmulatorChaos {
            duplicate_rate,
            reorder,
        };

        // The header timeout is also how long an idle keep-alive connection is kept (hyper has one
        // timer for both), and a load balancer in front must never find its pooled connection
        // closed under a request: 65 s outlasts the common idle timeouts (AWS ALB's 60 s,
        // Heroku's 55 s). Silent connections then last 65 s at most, and 4,096 of them (~28 KiB
        // each, ~112 MiB) at most; per-client limits belong to the proxy in front.
        let connection_limits = ConnectionLimits {
            header_timeout: seconds(&get, "HTTP_HEADER_TIMEOUT_SECS", 65, 1..=3600)?,
            max_connections: count(&get, "HTTP_MAX_CONNECTIONS", 4096, 1..=1_000_000)? as usize,
        };

        let log_format = match get("LOG_FORMAT").as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(_) => return Err(invalid("LOG_FORMAT", "must be text or json")),
        };
        let email = email_delivery(&get, emulated)?;

        let defaults = CheckoutLimits::default();
        let checkout_limits = CheckoutLimits {
            per_user_per_minute: count(
                &get,
                "CHECKOUT_RATE_PER_USER_PER_MINUTE",
                defaults.per_user_per_minute,
                1..=10_000,
            )?,
            sessions: Rate {
                per_second: match get("CHECKOUT_SESSIONS_PER_SECOND") {
                    None => defaults.sessions.per_second,
                    Some(v) => v
                        .parse::<f64>()
                        .ok()
                        .filter(|rate| *rate > 0.0 && *rate <= 1000.0)
                        .ok_or_else(|| {
                            invalid("CHECKOUT_SESSIONS_PER_SECOND", "must be a number above 0, at most 1000")
                        })?,
                },
                burst: count(&get, "CHECKOUT_SESSIONS_BURST", defaults.sessions.burst, 1..=10_000)?,
            },
        };

        let billing_portal_return_url = match get("BILLING_PORTAL_RETURN_URL") {
            None => app_base_url.clone(),
            Some(url) => http_url("BILLING_PORTAL_RETURN_URL", &url)?,
        };

        let (app_webhooks, outbox) = app_webhooks(&get)?;
        // A sender must record an email's result before its lease runs out, or another sends it
        // again while the first may still be talking to the server.
        if let EmailDelivery::Smtp { server, .. } = &email
            && outbox.lease <= server.timeout
        {
            return Err(invalid(
                "OUTBOX_LEASE_SECS",
                format!(
                    "must be more than the {} s an email send may take when SMTP_URL is set",
                    server.timeout.as_secs()
                ),
            ));
        }

        Ok(Self {
            database_url: Secret::new(database_url),
            database_max_connections,
            connection_limits,
            log_format,
            bind_addr,
            emulator_addr,
            app_base_url,
            stripe,
            webhook_secrets,
            webhook_tolerance,
            jwt_secret: jwt_secret.map(Secret::new),
            user_auth,
            api_keys,
            metrics_token,
            admin_token,
            api_key_generated,
            plans_file,
            automatic_tax,
            entitlement_grace,
            order_status_reread,
            reconciler_max_attempts,
            jobs,
            drift_check,
            emulator_chaos,
            checkout_limits,
            return_sync_rate: RETURN_SYNC_RATE,
            app_webhooks,
            outbox,
            email,
            billing_portal_return_url,
        })
    }
}

/// A comma-separated variable's entries, trimmed, empty ones dropped; none when unset.
fn comma_list(get: &impl Fn(&str) -> Option<String>, name: &str) -> Vec<String> {
    get(name)
        .map(|value| {
            value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// `APP_WEBHOOK_URL` and `APP_WEBHOOK_SECRET`, and how the outbox sends. Fails closed: URLs
/// without a usable secret would send messages no receiver can trust.
fn app_webhooks(get: &impl Fn(&str) -> Option<String>) -> Result<(AppWebhooks, OutboxSettings), ConfigError> {
    let list = |name: &str| comma_list(get, name);
    let mut urls = Vec::new();
    for url in list("APP_WEBHOOK_URL") {
        let parsed = reqwest::Url::parse(&url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty()));
        if parsed.is_none() {
            return Err(invalid(
                "APP_WEBHOOK_URL",
                "must be one or more comma-separated http:// or https:// URLs",
            ));
        }
        if !urls.contains(&url) {
            urls.push(url);
        }
    }
    let mut keys = Vec::new();
    for secret in list("APP_WEBHOOK_SECRET") {
        // The reason names the rule, never the value.
        let key = SigningKey::from_whsec(&secret)
            .map_err(|why| invalid("APP_WEBHOOK_SECRET", format!("each comma-separated secret {why}")))?;
        keys.push(key);
    }
    if !urls.is_empty() && keys.is_empty() {
        return Err(invalid(
            "APP_WEBHOOK_SECRET",
            "is not set, but APP_WEBHOOK_URL is: set a whsec_<base64> secret to sign the messages with",
        ));
    }

    let defaults = OutboxSettings::default();
    let concurrency = count(get, "OUTBOX_CONCURRENCY", defaults.concurrency, 0..=256)?;
    let lease_floor = SEND_TIMEOUT.as_secs() + 1;
    let lease = seconds(get, "OUTBOX_LEASE_SECS", defaults.lease.as_secs(), lease_floor..=3600)?;
    let sweep = seconds(get, "OUTBOX_SWEEP_SECS", defaults.sweep.as_secs(), 1..=300)?;
    let retry_first = seconds(get, "OUTBOX_RETRY_FIRST_SECS", defaults.retry_first.as_secs(), 1..=3600)?;
    let retry_max = seconds(get, "OUTBOX_RETRY_MAX_SECS", defaults.retry_max.as_secs(), 1..=86_400)?;
    if retry_max < retry_first {
        return Err(invalid(
            "OUTBOX_RETRY_MAX_SECS",
            "must be at least OUTBOX_RETRY_FIRST_SECS",
        ));
    }
    let give_up_after = seconds(
        get,
        "APP_WEBHOOK_GIVE_UP_AFTER_SECS",
        defaults.give_up_after.as_secs(),
        60..=30 * 86_400,
    )?;
    Ok((
        AppWebhooks { urls, keys },
        OutboxSettings {
            concurrency,
            lease,
            sweep,
            retry_first,
            retry_max,
            give_up_after,
            send_timeout: SEND_TIMEOUT,
        },
    ))
}

/// A whole number, `default` when unset.
fn count(
    get: &impl Fn(&str) -> Option<String>,
    variable: &'static str,
    default: u32,
    allowed: RangeInclusive<u32>,
) -> Result<u32, ConfigError> {
    match get(variable) {
        None => Ok(default),
        Some(v) => v.parse::<u32>().ok().filter(|n| allowed.contains(n)).ok_or_else(|| {
            invalid(
                variable,
                format!("must be a number from {} to {}", allowed.start(), allowed.end()),
            )
        }),
    }
}

/// A duration given in whole seconds, `default` when unset.
fn seconds(
    get: &impl Fn(&str) -> Option<String>,
    variable: &'static str,
    default: u64,
    allowed: RangeInclusive<u64>,
) -> Result<Duration, ConfigError> {
    let seconds = match get(variable) {
        None => default,
        Some(v) => v.parse::<u64>().ok().filter(|n| allowed.contains(n)).ok_or_else(|| {
            invalid(
                variable,
                format!(
                    "must be a number of seconds from {} to {}",
                    allowed.start(),
                    allowed.end()
                ),
            )
        })?,
    };
    Ok(Duration::from_secs(seconds))
}

/// `STRIPE_EMULATOR` may force the choice (`true`/`false`); unset, the emulator runs exactly when
/// no secret key is set.
fn stripe_backend(get: &impl Fn(&str) -> Option<String>) -> Result<StripeBackend, ConfigError> {
    let forced = match get("STRIPE_EMULATOR") {
        None => None,
        Some(v) => Some(parse_bool(&v).ok_or_else(|| invalid("STRIPE_EMULATOR", "must be true or false"))?),
    };
    match (get("STRIPE_SECRET_KEY"), forced) {
        (Some(_), Some(true)) => Err(invalid(
            "STRIPE_EMULATOR",
            "the emulator cannot run while STRIPE_SECRET_KEY is set; unset one of them",
        )),
        (None, Some(false)) => Err(invalid(
            "STRIPE_SECRET_KEY",
            "is not set (and STRIPE_EMULATOR is false)",
        )),
        (None, _) => {
            if get("STRIPE_API_BASE").is_some() {
                return Err(invalid(
                    "STRIPE_API_BASE",
                    "needs STRIPE_SECRET_KEY; without a key the built-in emulator is used",
                ));
            }
            Ok(StripeBackend::Emulator)
        }
        (Some(secret_key), _) => {
            // The prefix names the mode, which the database and every event are checked against.
            if StripeMode::of_key(&secret_key).is_none() {
                return Err(invalid(
                    "STRIPE_SECRET_KEY",
                    "must be a Stripe secret or restricted key (sk_test_…, sk_live_…, rk_test_… or rk_live_…)",
                ));
            }
            let api_base = get("STRIPE_API_BASE").unwrap_or_else(|| "https://api.stripe.com".into());
            Ok(StripeBackend::Api {
                secret_key: Secret::new(secret_key),
                api_base: http_url("STRIPE_API_BASE", &api_base)?,
            })
        }
    }
}

/// `SMTP_URL` sends through a server and needs `EMAIL_FROM`; without it, emulator mode keeps the
/// emails in the dev mailbox and a real deployment sends none. `EMAIL_FROM` alone with a real key
/// is refused: whoever set it expects emails that would never leave.
fn email_delivery(get: &impl Fn(&str) -> Option<String>, emulated: bool) -> Result<EmailDelivery, ConfigError> {
    let from = get("EMAIL_FROM")
        .map(|value| {
            parse_mailbox(&value).ok_or_else(|| {
                invalid(
                    "EMAIL_FROM",
                    "must be an email address, optionally with a name: Shop <orders@example.com>",
                )
            })
        })
        .transpose()?;
    match (get("SMTP_URL"), from) {
        (Some(url), Some(from)) => Ok(EmailDelivery::Smtp {
            server: smtp_server(&url)?,
            from,
        }),
        (Some(_), None) => Err(invalid("EMAIL_FROM", "is not set (SMTP_URL needs a sender address)")),
        (None, from) if emulated => Ok(EmailDelivery::DevMailbox {
            from: from.unwrap_or_else(|| DEV_EMAIL_FROM.parse().expect("the dev sender is an address")),
        }),
        (None, Some(_)) => Err(invalid(
            "SMTP_URL",
            "is not set, but EMAIL_FROM is: set both to send confirmation emails, or neither",
        )),
        (None, None) => Ok(EmailDelivery::Off),
    }
}

/// lettre's parser reads one mailbox from the front and ignores the rest, so the whole value must
/// be what it read: `a@example.com, b@example.com` is not one sender.
fn parse_mailbox(value: &str) -> Option<Mailbox> {
    let mailbox: Mailbox = value.parse().ok()?;
    let address = mailbox.email.to_string();
    let rest = match value.find('<') {
        Some(open) => value[open..].strip_prefix('<')?.strip_suffix('>')?,
        None => value,
    };
    (rest == address).then_some(mailbox)
}

/// `smtp://user:password@host:port` or `smtps://…`. None of the messages quote the value: it holds
/// the password.
fn smtp_server(value: &str) -> Result<SmtpServer, ConfigError> {
    const FORM: &str = "must be a URL like smtp://user:password@host:587 or smtps://user:password@host:465";
    let url = url::Url::parse(value).map_err(|_| invalid("SMTP_URL", FORM))?;
    let (tls, default_port) = match url.scheme() {
        "smtp" => (SmtpTls::Opportunistic, 587),
        "smtps" => (SmtpTls::Implicit, 465),
        _ => return Err(invalid("SMTP_URL", "must start with smtp:// or smtps://")),
    };
    let host = match url.host() {
        Some(url::Host::Domain(name)) if !name.is_empty() => name.to_owned(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        _ => return Err(invalid("SMTP_URL", FORM)),
    };
    // lettre would read `?tls=…` and a path; this service gives them no meaning, so they are refused
    // rather than ignored.
    if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(
            "SMTP_URL",
            "must end at the host or port (no path or ?parameters)",
        ));
    }
    let decode = |part: &str| {
        percent_encoding::percent_decode_str(part)
            .decode_utf8()
            .map(|decoded| decoded.into_owned())
            .map_err(|_| {
                invalid(
                    "SMTP_URL",
                    "has a user or password that is not UTF-8 once percent-decoded",
                )
            })
    };
    let credentials = match (url.username(), url.password()) {
        ("", None) => None,
        ("", Some(_)) => return Err(invalid("SMTP_URL", "has a password but no user")),
        (_, None) => return Err(invalid("SMTP_URL", "has a user but no password")),
        (username, Some(password)) => Some(SmtpCredentials {
            username: decode(username)?,
            password: Secret::new(decode(password)?),
        }),
    };
    Ok(SmtpServer {
        host,
        port: url.port().unwrap_or(default_port),
        tls,
        credentials,
        timeout: SMTP_TIMEOUT,
    })
}

fn bind_addr_port(get: &impl Fn(&str) -> Option<String>) -> u16 {
    get("BIND_ADDR")
        .and_then(|addr| addr.parse::<SocketAddr>().ok())
        .map_or(3000, |addr| addr.port())
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// How user tokens are checked beyond their signature, and where an identity provider's keys are.
#[derive(Debug, Clone)]
pub struct UserAuth {
    /// `AUTH_JWKS_URL`: RS256/ES256 (and kin) tokens are verified with the keys published there.
    pub jwks: Option<JwksSettings>,
    /// `AUTH_ISSUER`: when set, a token's `iss` must be it.
    pub issuer: Option<String>,
    /// `AUTH_AUDIENCE`: when set, a token's `aud` must contain one of these; unset, `aud` is not
    /// checked (a token that carries one is still accepted).
    pub audiences: Vec<String>,
    /// `AUTH_USER_CLAIM`: the claim holding the user id; `sub` by default.
    pub user_claim: String,
}

impl Default for UserAuth {
    fn default() -> Self {
        Self {
            jwks: None,
            issuer: None,
            audiences: Vec::new(),
            user_claim: "sub".to_owned(),
        }
    }
}

fn user_auth(get: &impl Fn(&str) -> Option<String>) -> Result<UserAuth, ConfigError> {
    let jwks = match get("AUTH_JWKS_URL") {
        None => None,
        Some(url) => {
            let parsed = reqwest::Url::parse(&url).map_err(|_| invalid("AUTH_JWKS_URL", "must be an https:// URL"))?;
            // Keys fetched in the clear could be swapped on the way: https, except on this machine.
            let local = matches!(parsed.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
            if !(parsed.scheme() == "https" || parsed.scheme() == "http" && local) {
                return Err(invalid(
                    "AUTH_JWKS_URL",
                    "must be an https:// URL (http:// only to localhost)",
                ));
            }
            Some(JwksSettings {
                url,
                min_refetch: seconds(get, "AUTH_JWKS_MIN_REFETCH_SECS", 30, 1..=3600)?,
                max_age: seconds(get, "AUTH_JWKS_CACHE_SECS", 600, 1..=86_400)?,
            })
        }
    };
    let audiences = comma_list(get, "AUTH_AUDIENCE");
    let user_claim = get("AUTH_USER_CLAIM").unwrap_or_else(|| "sub".to_owned());
    if !user_claim.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid("AUTH_USER_CLAIM", "must be a claim name like sub or user_id"));
    }
    Ok(UserAuth {
        jwks,
        issuer: get("AUTH_ISSUER"),
        audiences,
        user_claim,
    })
}

/// Accepts an http(s) origin or base URL and drops any trailing slash, so paths can be appended.
fn http_url(variable: &'static str, value: &str) -> Result<String, ConfigError> {
    let rest = value
        .strip_prefix("https://")
        .or_else(|| value.strip_prefix("http://"))
        .ok_or_else(|| invalid(variable, "must start with http:// or https://"))?;
    if rest.trim_end_matches('/').is_empty() || rest.contains(char::is_whitespace) {
        return Err(invalid(variable, "must be a URL like https://example.com"));
    }
    Ok(value.trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn with_stripe_key() -> HashMap<&'static str, &'static str> {
        HashMap::from([
            ("DATABASE_URL", "postgres://postgres@127.0.0.1/entitle"),
            ("STRIPE_SECRET_KEY", "sk_test_123"),
            ("STRIPE_WEBHOOK_SECRET", "whsec_one, whsec_two"),
            ("AUTH_JWT_SECRET", "0123456789abcdef0123456789abcdef"),
        ])
    }

    fn load(vars: &HashMap<&'static str, &'static str>) -> Result<Config, ConfigError> {
        Config::from_lookup(|name| vars.get(name).map(|v| v.to_string()))
    }

    #[test]
    fn with_nothing_set_the_service_runs_against_the_emulator_with_made_up_secrets() {
        let config = load(&HashMap::new()).unwrap();
        assert_eq!(config.stripe, StripeBackend::Emulator);
        assert_eq!(config.database_url.expose(), DEFAULT_DATABASE_URL);
        assert_eq!(config.bind_addr.to_string(), "127.0.0.1:3000");
        assert_eq!(config.app_base_url, "http://localhost:3000");
        assert!(config.webhook_secrets[0].expose().starts_with("whsec_"));
        assert!(config.jwt_secret.as_ref().unwrap().expose().len() >= 32);
        // Made up per process, never a constant someone could know.
        assert_ne!(load(&HashMap::new()).unwrap().jwt_secret, config.jwt_secret);
        assert_eq!(config.database_max_connections, 16);
    }

    #[test]
    fn the_emulators_own_api_port_is_stripe_mocks_unless_set() {
        assert_eq!(
            load(&HashMap::new()).unwrap().emulator_addr.to_string(),
            "127.0.0.1:12111"
        );
        let vars = HashMap::from([("STRIPE_EMULATOR_ADDR", "127.0.0.1:0")]);
        assert_eq!(load(&vars).unwrap().emulator_addr.port(), 0);
        let vars = HashMap::from([("STRIPE_EMULATOR_ADDR", "12111")]);
        assert_eq!(load(&vars).unwrap_err().variable, "STRIPE_EMULATOR_ADDR");
    }

    #[test]
    fn api_keys_are_made_up_only_in_emulator_mode_and_refused_when_short() {
        let emulated = load(&HashMap::new()).unwrap();
        assert!(emulated.api_key_generated);
        assert!(emulated.api_keys[0].expose().len() >= 32);
        assert_ne!(load(&HashMap::new()).unwrap().api_keys, emulated.api_keys);

        let live = load(&with_stripe_key()).unwrap();
        assert!(live.api_keys.is_empty() && !live.api_key_generated);

        let mut vars = with_stripe_key();
        vars.insert(
            "ENTITLE_API_KEYS",
            "first-key-0123456789abcdefghijklmnop, second-key-0123456789abcdefghijklmno",
        );
        let rotated = load(&vars).unwrap();
        assert_eq!(rotated.api_keys.len(), 2);
        assert_eq!(rotated.api_keys[1].expose(), "second-key-0123456789abcdefghijklmno");

        vars.insert("ENTITLE_API_KEYS", "long-enough-key-0123456789abcdefghij,short");
        let err = load(&vars).unwrap_err().to_string();
        assert!(err.contains("ENTITLE_API_KEYS") && !err.contains("short"), "{err}");
    }

    #[test]
    fn a_jwks_url_stands_in_for_the_shared_secret_and_must_be_https_off_this_machine() {
        let mut vars = with_stripe_key();
        vars.remove("AUTH_JWT_SECRET");
        let err = load(&vars).unwrap_err().to_string();
        assert!(err.contains("AUTH_JWT_SECRET"), "{err}");

        vars.insert(
            "AUTH_JWKS_URL",
            "https://example.clerk.accounts.dev/.well-known/jwks.json",
        );
        vars.insert("AUTH_AUDIENCE", "entitle, other");
        vars.insert("AUTH_ISSUER", "https://example.clerk.accounts.dev");
        let config = load(&vars).unwrap();
        assert!(config.jwt_secret.is_none());
        let auth = config.user_auth;
        assert_eq!(auth.audiences, ["entitle", "other"]);
        assert_eq!(auth.issuer.as_deref(), Some("https://example.clerk.accounts.dev"));
        assert_eq!(auth.user_claim, "sub");
        let jwks = auth.jwks.unwrap();
        assert_eq!((jwks.min_refetch.as_secs(), jwks.max_age.as_secs()), (30, 600));

        vars.insert("AUTH_JWKS_URL", "http://127.0.0.1:8080/jwks.json");
        assert!(load(&vars).is_ok());
        for refused in [
            "http://auth.example.com/jwks.json",
            "ftp://example.com/jwks",
            "not a url",
        ] {
            vars.insert("AUTH_JWKS_URL", refused);
            let err = load(&vars).unwrap_err().to_string();
            assert!(err.contains("AUTH_JWKS_URL"), "{refused}: {err}");
        }
    }

    #[test]
    fn a_metrics_token_is_optional_but_refused_when_short() {
        assert!(load(&with_stripe_key()).unwrap().metrics_token.is_none());
        let mut vars = with_stripe_key();
        vars.insert("METRICS_TOKEN", "scrape-token-0123456789abcdefghijklmnop");
        let config = load(&vars).unwrap();
        assert_eq!(
            config.metrics_token.unwrap().expose(),
            "scrape-token-0123456789abcdefghijklmnop"
        );
        for unusable in ["short-token", "has spaces in it 0123456789abcdefghij"] {
            vars.insert("METRICS_TOKEN", unusable);
            let err = load(&vars).unwrap_err().to_string();
            assert!(err.contains("METRICS_TOKEN") && !err.contains(unusable), "{err}");
        }
        // Empty is unset, as for every variable.
        vars.insert("METRICS_TOKEN", "");
        assert!(load(&vars).unwrap().metrics_token.is_none());
    }

    #[test]
    fn an_admin_token_is_optional_but_refused_when_short() {
        assert!(load(&with_stripe_key()).unwrap().admin_token.is_none());
        let mut vars = with_stripe_key();
        vars.insert("ADMIN_TOKEN", "operator-token-0123456789abcdefghijklmn");
        assert_eq!(
            load(&vars).unwrap().admin_token.unwrap().expose(),
            "operator-token-0123456789abcdefghijklmn"
        );
        vars.insert("ADMIN_TOKEN", "short-token");
        let err = load(&vars).unwrap_err().to_string();
        assert!(err.contains("ADMIN_TOKEN") && !err.contains("short-token"), "{err}");
    }

    #[test]
    fn the_default_frontend_origin_follows_the_port_the_service_listens_on() {
        let vars = HashMap::from([("BIND_ADDR", "127.0.0.1:3900")]);
        assert_eq!(load(&vars).unwrap().app_base_url, "http://localhost:3900");
        let vars = HashMap::from([
            ("BIND_ADDR", "127.0.0.1:3900"),
            ("APP_BASE_URL", "https://shop.example.com/"),
        ]);
        assert_eq!(load(&vars).unwrap().app_base_url, "https://shop.example.com");
    }

    #[test]
    fn defaults_apply_when_only_required_values_are_set() {
        let config = load(&with_stripe_key()).unwrap();
        assert_eq!(
            config.stripe,
            StripeBackend::Api {
                secret_key: Secret::new("sk_test_123"),
                api_base: "https://api.stripe.com".into()
            }
        );
        assert_eq!(config.webhook_tolerance, Duration::from_secs(300));
        assert_eq!(config.webhook_secrets.len(), 2);
        assert_eq!(config.plans_file, PathBuf::from("plans.toml"));
        assert_eq!(config.entitlement_grace, Duration::from_secs(86_400));
        assert_eq!(config.order_status_reread, Duration::from_secs(5));
        assert_eq!(
            config.connection_limits,
            ConnectionLimits {
                header_timeout: Duration::from_secs(65),
                max_connections: 4096
            }
        );
        assert_eq!(config.reconciler_max_attempts, 5);
        assert_eq!(
            config.jobs,
            JobIntervals {
                reconcile_every: Duration::from_secs(300),
                credit_sweep_every: Duration::from_secs(30),
                verify_every: Duration::from_secs(86_400),
            }
        );
        assert_eq!(config.checkout_limits, CheckoutLimits::default());
        assert_eq!(config.checkout_limits.per_user_per_minute, 10);
        assert_eq!(config.app_webhooks, AppWebhooks::default());
        assert_eq!(config.outbox, OutboxSettings::default());
        assert_eq!(config.outbox.give_up_after, Duration::from_secs(3 * 86_400));
        assert!(config.outbox.lease > config.outbox.send_timeout);
    }

    const APP_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    #[test]
    fn app_webhooks_need_a_valid_secret_beside_their_urls() {
        let mut vars = with_stripe_key();
        vars.insert(
            "APP_WEBHOOK_URL",
            "https://app.example.com/hooks, http://10.0.0.2:8080/entitle",
        );
        assert_eq!(load(&vars).unwrap_err().variable, "APP_WEBHOOK_SECRET");
        for bad in [
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "whsec_",
            "whsec_%%%%",
            "whsec_c2hvcnQ=",
        ] {
            vars.insert("APP_WEBHOOK_SECRET", bad);
            let err = load(&vars).unwrap_err();
            assert_eq!(err.variable, "APP_WEBHOOK_SECRET", "{bad}");
            assert!(
                !err.to_string().contains(bad.trim_start_matches("whsec_")) || bad == "whsec_",
                "{err}"
            );
        }
        vars.insert("APP_WEBHOOK_SECRET", APP_SECRET);
        let webhooks = load(&vars).unwrap().app_webhooks;
        assert_eq!(
            webhooks.urls,
            ["https://app.example.com/hooks", "http://10.0.0.2:8080/entitle"]
        );
        assert_eq!(webhooks.keys.len(), 1);
        assert!(!format!("{:?}", load(&vars).unwrap()).contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"));
    }

    #[test]
    fn app_webhook_urls_must_be_http_and_outbox_timings_in_range() {
        for (name, value) in [
            ("APP_WEBHOOK_URL", "ftp://app.example.com/hooks"),
            ("APP_WEBHOOK_URL", "app.example.com/hooks"),
            ("APP_WEBHOOK_URL", "https://ok.example.com, not a url"),
            ("OUTBOX_LEASE_SECS", "10"),
            ("OUTBOX_CONCURRENCY", "1000"),
            ("OUTBOX_SWEEP_SECS", "0"),
            ("OUTBOX_RETRY_FIRST_SECS", "0"),
            ("OUTBOX_RETRY_MAX_SECS", "2"),
            ("APP_WEBHOOK_GIVE_UP_AFTER_SECS", "3 days"),
        ] {
            let mut vars = with_stripe_key();
            vars.insert("APP_WEBHOOK_SECRET", APP_SECRET);
            vars.insert(name, value);
            assert_eq!(load(&vars).unwrap_err().variable, name, "{name}={value}");
        }
        let mut vars = with_stripe_key();
        vars.insert("OUTBOX_CONCURRENCY", "0");
        vars.insert("OUTBOX_LEASE_SECS", "11");
        vars.insert("APP_WEBHOOK_GIVE_UP_AFTER_SECS", "3600");
        let outbox = load(&vars).unwrap().outbox;
        assert_eq!((outbox.concurrency, outbox.lease.as_secs()), (0, 11));
        assert_eq!(outbox.give_up_after, Duration::from_secs(3600));
    }

    #[test]
    fn with_smtp_url_the_lease_must_outlast_an_email_send() {
        let mut vars = with_stripe_key();
        vars.insert("SMTP_URL", "smtp://mail.example:2525");
        vars.insert("EMAIL_FROM", "orders@shop.example");
        vars.insert("OUTBOX_LEASE_SECS", "30");
        assert_eq!(load(&vars).unwrap_err().variable, "OUTBOX_LEASE_SECS");
        vars.insert("OUTBOX_LEASE_SECS", "31");
        assert_eq!(load(&vars).unwrap().outbox.lease, Duration::from_secs(31));
    }

    #[test]
    fn checkout_limits_can_be_set() {
        let mut vars = with_stripe_key();
        vars.insert("CHECKOUT_RATE_PER_USER_PER_MINUTE", "3");
        vars.insert("CHECKOUT_SESSIONS_PER_SECOND", "0.5");
        vars.insert("CHECKOUT_SESSIONS_BURST", "2");
        let limits = load(&vars).unwrap().checkout_limits;
        assert_eq!(
            limits,
            CheckoutLimits {
                per_user_per_minute: 3,
                sessions: Rate {
                    per_second: 0.5,
                    burst: 2
                }
            }
        );
    }

    #[test]
    fn with_a_stripe_key_every_secret_is_required() {
        for name in ["STRIPE_WEBHOOK_SECRET", "AUTH_JWT_SECRET"] {
            let mut vars = with_stripe_key();
            vars.remove(name);
            let err = load(&vars).unwrap_err();
            assert_eq!(err.variable, name);
            assert!(err.to_string().starts_with(name));
        }
    }

    #[test]
    fn the_emulator_never_runs_with_a_stripe_key_set() {
        let mut vars = with_stripe_key();
        vars.insert("STRIPE_EMULATOR", "true");
        let err = load(&vars).unwrap_err();
        assert_eq!(err.variable, "STRIPE_EMULATOR");

        let mut vars = HashMap::from([("STRIPE_EMULATOR", "false")]);
        assert_eq!(load(&vars).unwrap_err().variable, "STRIPE_SECRET_KEY");
        vars.insert("STRIPE_EMULATOR", "true");
        assert!(load(&vars).unwrap().stripe.is_emulator());
    }

    #[test]
    fn the_job_intervals_are_read_in_seconds() {
        let mut vars = with_stripe_key();
        vars.extend([("RECONCILE_EVERY_SECS", "60"), ("CREDIT_SWEEP_EVERY_SECS", "5")]);
        let jobs = load(&vars).unwrap().jobs;
        assert_eq!(jobs.reconcile_every, Duration::from_secs(60));
        assert_eq!(jobs.credit_sweep_every, Duration::from_secs(5));
    }

    #[test]
    fn the_drift_check_schedule_window_and_fixing_are_read() {
        let mut vars = with_stripe_key();
        vars.extend([
            ("VERIFY_EVERY_SECS", "3600"),
            ("VERIFY_WINDOW_DAYS", "7"),
            ("VERIFY_FIX", "false"),
        ]);
        let config = load(&vars).unwrap();
        assert_eq!(config.jobs.verify_every, Duration::from_secs(3600));
        assert_eq!(
            config.drift_check,
            DriftCheck {
                window: Duration::from_secs(7 * 86_400),
                fix: false
            }
        );
        for (name, value) in [
            ("VERIFY_WINDOW_DAYS", "0"),
            ("VERIFY_FIX", "maybe"),
            ("VERIFY_EVERY_SECS", "0"),
        ] {
            let mut vars = with_stripe_key();
            vars.insert(name, value);
            let err = load(&vars).unwrap_err().to_string();
            assert!(err.contains(name), "{name}={value}: {err}");
        }
    }

    #[test]
    fn malformed_values_are_refused() {
        for (name, value) in [
            ("BIND_ADDR", "localhost"),
            ("APP_BASE_URL", "example.com"),
            ("STRIPE_WEBHOOK_SECRET", "not-a-secret"),
            ("STRIPE_SECRET_KEY", "pk_test_123"),
            ("STRIPE_SECRET_KEY", "sk_123"),
            ("STRIPE_SECRET_KEY", "sk_prod_123"),
            ("STRIPE_WEBHOOK_SECRET", "whsec_"),
            ("STRIPE_WEBHOOK_SECRET", "whsec_one,whsec_"),
            ("STRIPE_API_BASE", "ftp://x"),
            ("WEBHOOK_TOLERANCE_SECS", "-5"),
            ("AUTH_JWT_SECRET", "short"),
            ("DATABASE_URL", "mysql://x"),
            ("STRIPE_EMULATOR", "maybe"),
            ("EMULATOR_DUPLICATE_RATE", "2"),
            ("EMULATOR_REORDER", "sometimes"),
            ("ENTITLEMENT_GRACE_SECS", "a day"),
            ("ORDER_STATUS_REREAD_SECS", "0"),
            ("HTTP_HEADER_TIMEOUT_SECS", "0"),
            ("HTTP_MAX_CONNECTIONS", "none"),
            ("LOG_FORMAT", "yaml"),
            ("RECONCILER_MAX_ATTEMPTS", "0"),
            ("RECONCILER_MAX_ATTEMPTS", "five"),
            ("RECONCILE_EVERY_SECS", "0"),
            ("CREDIT_SWEEP_EVERY_SECS", "soon"),
            ("CHECKOUT_RATE_PER_USER_PER_MINUTE", "0"),
            ("CHECKOUT_SESSIONS_PER_SECOND", "0"),
            ("CHECKOUT_SESSIONS_PER_SECOND", "fast"),
            ("CHECKOUT_SESSIONS_BURST", "-1"),
        ] {
            let mut vars = with_stripe_key();
            vars.insert(name, value);
            assert_eq!(load(&vars).unwrap_err().variable, name, "{name}={value}");
        }
    }

    #[test]
    fn the_key_prefix_names_the_mode_and_no_key_means_the_emulator() {
        for (key, mode) in [
            ("sk_test_1", StripeMode::Test),
            ("rk_test_1", StripeMode::Test),
            ("sk_live_1", StripeMode::Live),
            ("rk_live_1", StripeMode::Live),
        ] {
            let mut vars = with_stripe_key();
            vars.insert("STRIPE_SECRET_KEY", key);
            assert_eq!(load(&vars).unwrap().stripe.mode(), mode, "{key}");
        }
        assert_eq!(load(&HashMap::new()).unwrap().stripe.mode(), StripeMode::Emulator);
        assert!(StripeMode::Live.livemode() && !StripeMode::Test.livemode() && !StripeMode::Emulator.livemode());
    }

    #[test]
    fn emails_go_to_the_dev_mailbox_in_emulator_mode_and_nowhere_with_a_real_key_until_smtp_is_set() {
        let emulated = load(&HashMap::new()).unwrap();
        assert_eq!(
            emulated.email,
            EmailDelivery::DevMailbox {
                from: DEV_EMAIL_FROM.parse().unwrap()
            }
        );
        let vars = HashMap::from([("EMAIL_FROM", "Shop <shop@example.org>")]);
        assert!(
            matches!(load(&vars).unwrap().email, EmailDelivery::DevMailbox { from } if from.email.to_string() == "shop@example.org")
        );
        assert_eq!(load(&with_stripe_key()).unwrap().email, EmailDelivery::Off);
    }

    #[test]
    fn smtp_url_names_the_server_its_tls_and_percent_decoded_credentials() {
        let mut vars = with_stripe_key();
        vars.insert(
            "SMTP_URL",
            "smtp://mailer%40shop.example:p%40ss%3Aw0rd@smtp.example.com",
        );
        vars.insert("EMAIL_FROM", "Shop <orders@shop.example>");
        let EmailDelivery::Smtp { server, from } = load(&vars).unwrap().email else {
            panic!("SMTP_URL is set");
        };
        assert_eq!(from.email.domain(), "shop.example");
        assert_eq!(
            server,
            SmtpServer {
                host: "smtp.example.com".into(),
                port: 587,
                tls: SmtpTls::Opportunistic,
                credentials: Some(SmtpCredentials {
                    username: "mailer@shop.example".into(),
                    password: Secret::new("p@ss:w0rd"),
                }),
                timeout: SMTP_TIMEOUT,
            }
        );

        for (url, host, port, tls) in [
            (
                "smtps://u:p@smtp.example.com",
                "smtp.example.com",
                465,
                SmtpTls::Implicit,
            ),
            (
                "smtps://u:p@smtp.example.com:2465/",
                "smtp.example.com",
                2465,
                SmtpTls::Implicit,
            ),
            ("smtp://127.0.0.1:2525", "127.0.0.1", 2525, SmtpTls::Opportunistic),
            ("smtp://[::1]:25", "::1", 25, SmtpTls::Opportunistic),
        ] {
            vars.insert("SMTP_URL", url);
            let EmailDelivery::Smtp { server, .. } = load(&vars).unwrap().email else {
                panic!("{url}");
            };
            assert_eq!(
                (server.host.as_str(), server.port, server.tls),
                (host, port, tls),
                "{url}"
            );
        }
        vars.insert("SMTP_URL", "smtp://127.0.0.1:2525");
        assert!(
            matches!(load(&vars).unwrap().email, EmailDelivery::Smtp { server, .. } if server.credentials.is_none())
        );
    }

    #[test]
    fn email_settings_that_cannot_work_are_refused_without_quoting_the_password() {
        for (smtp_url, email_from, variable) in [
            (Some("smtp://u:hunter2@smtp.example.com"), None, "EMAIL_FROM"),
            (None, Some("orders@example.com"), "SMTP_URL"),
            (
                Some("http://u:hunter2@smtp.example.com"),
                Some("orders@example.com"),
                "SMTP_URL",
            ),
            (Some("smtp.example.com:587"), Some("orders@example.com"), "SMTP_URL"),
            (Some("smtp://u:hunter2@"), Some("orders@example.com"), "SMTP_URL"),
            (
                Some("smtp://u:hunter2@smtp.example.com:99999"),
                Some("orders@example.com"),
                "SMTP_URL",
            ),
            (
                Some("smtp://u:hunter2@smtp.example.com?tls=required"),
                Some("orders@example.com"),
                "SMTP_URL",
            ),
            (
                Some("smtp://u:hunter2@smtp.example.com/ehlo.example"),
                Some("orders@example.com"),
                "SMTP_URL",
            ),
            (
                Some("smtp://:hunter2@smtp.example.com"),
                Some("orders@example.com"),
                "SMTP_URL",
            ),
            (
                Some("smtp://u@smtp.example.com"),
                Some("orders@example.com"),
                "SMTP_URL",
            ),
            (
                Some("smtp://u:hunter2%FF@smtp.example.com"),
                Some("orders@example.com"),
                "SMTP_URL",
            ),
            (
                Some("smtp://u:hunter2@smtp.example.com"),
                Some("not an address"),
                "EMAIL_FROM",
            ),
            (Some("smtp://u:hunter2@smtp.example.com"), Some("orders@"), "EMAIL_FROM"),
            (
                Some("smtp://u:hunter2@smtp.example.com"),
                Some("a@example.com, b@example.com"),
                "EMAIL_FROM",
            ),
            (
                Some("smtp://u:hunter2@smtp.example.com"),
                Some("Shop <a@example.com> more"),
                "EMAIL_FROM",
            ),
        ] {
            let mut vars = with_stripe_key();
            vars.extend(smtp_url.map(|url| ("SMTP_URL", url)));
            vars.extend(email_from.map(|from| ("EMAIL_FROM", from)));
            let err = load(&vars).unwrap_err();
            assert_eq!(err.variable, variable, "{smtp_url:?} {email_from:?}: {err}");
            let line = err.to_string();
            assert!(!line.contains("hunter2") && !line.contains('\n'), "{line}");
        }
    }

    #[test]
    fn secrets_do_not_appear_in_debug_output() {
        let mut vars = with_stripe_key();
        vars.insert("SMTP_URL", "smtps://mailer:smtp-hunter2@smtp.example.com");
        vars.insert("EMAIL_FROM", "orders@example.com");
        let printed = format!("{:?}", load(&vars).unwrap());
        assert!(
            printed.contains("smtp.example.com") && printed.contains("mailer"),
            "{printed}"
        );
        assert!(!printed.contains("smtp-hunter2"));
        assert!(!printed.contains("sk_test_123"));
        assert!(!printed.contains("whsec_one"));
        assert!(!printed.contains("0123456789abcdef"));
    }

    #[test]
    fn the_billing_portal_returns_to_the_frontend_unless_told_otherwise() {
        let vars = HashMap::from([("APP_BASE_URL", "https://shop.example.com")]);
        assert_eq!(
            load(&vars).unwrap().billing_portal_return_url,
            "https://shop.example.com"
        );
        let vars = HashMap::from([("BILLING_PORTAL_RETURN_URL", "https://shop.example.com/account")]);
        assert_eq!(
            load(&vars).unwrap().billing_portal_return_url,
            "https://shop.example.com/account"
        );
        let vars = HashMap::from([("BILLING_PORTAL_RETURN_URL", "shop.example.com/account")]);
        assert!(
            load(&vars)
                .unwrap_err()
                .to_string()
                .contains("BILLING_PORTAL_RETURN_URL")
        );
    }
}
