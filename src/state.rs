//! The state every handler shares, built once at startup. Extractors take the part they need
//! through `FromRef`, so they do not depend on this module.

use std::sync::Arc;

use axum::extract::FromRef;
use sqlx::PgPool;

use crate::{
    auth::{ApiKeys, TokenVerifier},
    checkout_limits::CheckoutLimiter,
    config::{Config, Secret},
    credits::BalanceReader,
    debit_gate::DebitGate,
    mail::Mailer,
    metrics::Metrics,
    order_events::OrderEvents,
    order_lookup::OrderLookup,
    rate_limit::SharedRateLimit,
    wakeups::Wakeups,
};

/// What every handler shares. Axum clones the state for each request (and each extractor that
/// reads it), so it is one `Arc`: a clone is one atomic increment, not one per field on cache lines
/// both runtime threads write to.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    pub db: PgPool,
    pub config: Arc<Config>,
    pub stripe: crate::stripe::StripeApi,
    /// Verifies the user tokens (`AuthUser` takes it through `FromRef`).
    pub tokens: TokenVerifier,
    /// Checks the app backend's calls (`ApiCaller` takes it through `FromRef`).
    pub api_keys: ApiKeys,
    /// Caps the Stripe calls that polling return pages may cause, for all instances together.
    pub stripe_sync_limit: SharedRateLimit,
    /// Bounds how fast checkouts open, per user and per process.
    pub checkout_limiter: CheckoutLimiter,
    pub order_events: OrderEvents,
    /// Wakes waiters after the hot paths' commits, here and on the other instances.
    pub wakeups: Wakeups,
    /// Batches the owner-scoped lookups that polling return pages make.
    pub order_lookup: OrderLookup,
    /// Batches the balance reads of `/v1/check`.
    pub balances: BalanceReader,
    /// Bounds the debits of one user in flight at once.
    pub debit_gate: DebitGate,
    /// Sends order confirmation emails; `None` when they are off (a real key without `SMTP_URL`).
    pub mailer: Option<Mailer>,
    /// What `/metrics` reports; the Stripe client records into the same registry.
    pub metrics: Metrics,
}

/// The `rate_buckets` row of the return page's Stripe calls.
pub const RETURN_SYNC_BUCKET: &str = "return_page_sync";

impl AppState {
    pub fn new(
        db: PgPool,
        config: Config,
        stripe: crate::stripe::StripeApi,
        order_events: OrderEvents,
        wakeups: Wakeups,
        mailer: Option<Mailer>,
        metrics: Metrics,
    ) -> Self {
        let tokens = TokenVerifier::new(config.jwt_secret.as_ref().map(Secret::expose), &config.user_auth);
        let api_keys = ApiKeys::new(config.api_keys.iter().map(|key| key.expose()));
        let stripe_sync_limit = SharedRateLimit::new(RETURN_SYNC_BUCKET, config.return_sync_rate);
        let checkout_limiter = CheckoutLimiter::new(&config.checkout_limits);
        Self(Arc::new(Shared {
            order_lookup: OrderLookup::start(db.clone()),
            balances: BalanceReader::start(db.clone()),
            debit_gate: DebitGate::default(),
            db,
            config: Arc::new(config),
            stripe,
            tokens,
            api_keys,
            stripe_sync_limit,
            checkout_limiter,
            order_events,
            wakeups,
            mailer,
            metrics,
        }))
    }
}

impl FromRef<AppState> for TokenVerifier {
    fn from_ref(state: &AppState) -> Self {
        state.tokens.clone()
    }
}

impl FromRef<AppState> for ApiKeys {
    fn from_ref(state: &AppState) -> Self {
        state.api_keys.clone()
    }
}
