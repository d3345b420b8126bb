//! What an operator graphs and alerts on, served at `GET /metrics` in Prometheus's text format.
//!
//! One registry per app, held in its state, rather than a process-wide recorder: the tests run many
//! apps in one process, and each must count only its own traffic. Everything here is a leaf: the
//! routes, the domain and the Stripe client record into it; it depends on nothing of theirs.
//!
//! Labels are only ever values from a closed set (a route template, a status, an outcome, an event
//! type Stripe signed), never a user, an order or anything from an unverified request, so the
//! number of series stays bounded and nothing personal or secret is exported.

use std::{fmt::Write, sync::Arc, time::Duration};

use axum::extract::MatchedPath;

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::{Registry, Unit},
};

/// The content type of [`Metrics::render`]'s output (OpenMetrics text, which Prometheus reads).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A route's template as the router matched it (`/v1/users/{user_id}/balance`), kept as the
/// router's own shared string, so labelling a request copies nothing.
#[derive(Clone, Debug)]
pub enum Route {
    Matched(MatchedPath),
    Named(&'static str),
}

impl Route {
    /// A request no route matched: one series for every such path.
    pub const UNMATCHED: Self = Self::Named("unmatched");

    fn as_str(&self) -> &str {
        match self {
            Self::Matched(path) => path.as_str(),
            Self::Named(name) => name,
        }
    }
}

impl PartialEq for Route {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Route {}

impl std::hash::Hash for Route {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl EncodeLabelValue for Route {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        encoder.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: &'static str,
    route: Route,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: Route,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookLabels {
    /// The event's type, only once its signature is verified.
    event_type: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StripeCallLabels {
    endpoint: &'static str,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Cheap to clone; every clone records into the same registry.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

struct Inner {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: Histograms<RouteLabels>,
    webhook_events: Family<WebhookLabels, Counter>,
    webhook_duration: Histogram,
    webhook_lag: Histogram,
    signature_failures: Family<ReasonLabels, Counter>,
    stripe_calls: Family<StripeCallLabels, Counter>,
    stripe_duration: Histograms<EndpointLabels>,
    reconciler_runs: Family<OutcomeLabels, Counter>,
    reconciler_applied: Counter,
    drift_runs: Family<OutcomeLabels, Counter>,
    drift_found: Family<KindLabels, Counter>,
    drift_remaining: Family<KindLabels, Gauge>,
    drift_fixes: Counter,
    long_polls: Gauge,
    outbox_pending: Gauge,
    outbox_oldest: Gauge<f64, std::sync::atomic::AtomicU64>,
    pool_in_use: Gauge,
    pool_idle: Gauge,
    database_up: Gauge,
}

/// From half a millisecond (a batched `/v1/check`) to 16 s (past the request timeout's half).
fn request_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// From 10 ms to about 40 s: Stripe's own API, over the internet.
fn stripe_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.0, 12))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("entitle");
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route template, method and status",
            http_requests.clone(),
        );
        let http_duration = Histograms::<RouteLabels>::new_with_constructor(request_buckets as fn() -> Histogram);
        registry.register_with_unit(
            "http_request_duration",
            "Time from a request's arrival to its answer, by route template",
            Unit::Seconds,
            http_duration.clone(),
        );
        let webhook_events = Family::<WebhookLabels, Counter>::default();
        registry.register(
            "webhook_events",
            "Verified Stripe events, by type and what processing them did (error: a 5xx, Stripe retries)",
            webhook_events.clone(),
        );
        let webhook_duration = request_buckets();
        registry.register_with_unit(
            "webhook_processing_duration",
            "Time to verify and apply one verified Stripe event",
            Unit::Seconds,
            webhook_duration.clone(),
        );
        // A quarter of a second to about 18 hours: a healthy endpoint is in the first buckets, a
        // redelivery after an outage in the last.
        let webhook_lag = Histogram::new(exponential_buckets(0.25, 4.0, 10));
        registry.register_with_unit(
            "webhook_event_lag",
            "Time from Stripe creating an event to this service receiving it",
            Unit::Seconds,
            webhook_lag.clone(),
        );
        let signature_failures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "webhook_signature_failures",
            "Deliveries to /payment-webhook refused before parsing, by reason",
            signature_failures.clone(),
        );
        let stripe_calls = Family::<StripeCallLabels, Counter>::default();
        registry.register(
            "stripe_api_calls",
            "Calls to Stripe's API (each retry counts), by endpoint and HTTP status or why there is none",
            stripe_calls.clone(),
        );
        let stripe_duration = Histograms::<EndpointLabels>::new_with_constructor(stripe_buckets as fn() -> Histogram);
        registry.register_with_unit(
            "stripe_api_call_duration",
            "Time of one call to Stripe's API, by endpoint",
            Unit::Seconds,
            stripe_duration.clone(),
        );
        let reconciler_runs = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "reconciler_runs",
            "Runs of the missed-event reconciler, by outcome",
            reconciler_runs.clone(),
        );
        let reconciler_applied = Counter::default();
        registry.register(
            "reconciler_events_applied",
            "Events the webhook missed that the reconciler applied",
            reconciler_applied.clone(),
        );
        let drift_runs = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "drift_check_runs",
            "Runs of the drift check (entitle verify and its schedule), by outcome",
            drift_runs.clone(),
        );
        let drift_found = Family::<KindLabels, Counter>::default();
        registry.register(
            "drift_findings",
            "Disagreements with Stripe that drift check runs found (before fixing), by kind",
            drift_found.clone(),
        );
        let drift_remaining = Family::<KindLabels, Gauge>::default();
        registry.register(
            "drift_remaining",
            "Disagreements left after the latest drift check run's fixes, by kind (a person must look)",
            drift_remaining.clone(),
        );
        let drift_fixes = Counter::default();
        registry.register(
            "drift_fix_events_applied",
            "Events built from Stripe's current objects that drift check runs applied",
            drift_fixes.clone(),
        );
        let long_polls = Gauge::default();
        registry.register(
            "order_status_long_polls_held",
            "POST /order-status requests held waiting for a change now",
            long_polls.clone(),
        );
        let outbox_pending = Gauge::default();
        registry.register(
            "outbox_pending_deliveries",
            "Outbox deliveries not yet delivered or given up on, all instances",
            outbox_pending.clone(),
        );
        let outbox_oldest = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register_with_unit(
            "outbox_oldest_pending_age",
            "Age of the oldest pending outbox delivery (0 when none)",
            Unit::Seconds,
            outbox_oldest.clone(),
        );
        let pool_in_use = Gauge::default();
        registry.register(
            "db_pool_connections_in_use",
            "Database connections of this instance's pool serving a query now",
            pool_in_use.clone(),
        );
        let pool_idle = Gauge::default();
        registry.register(
            "db_pool_connections_idle",
            "Database connections of this instance's pool open and idle",
            pool_idle.clone(),
        );
        let database_up = Gauge::default();
        registry.register(
            "database_up",
            "1 when the database answered this scrape's query, 0 when it did not",
            database_up.clone(),
        );
        Self(Arc::new(Inner {
            registry,
            http_requests,
            http_duration,
            webhook_events,
            webhook_duration,
            webhook_lag,
            signature_failures,
            stripe_calls,
            stripe_duration,
            reconciler_runs,
            reconciler_applied,
            drift_runs,
            drift_found,
            drift_remaining,
            drift_fixes,
            long_polls,
            outbox_pending,
            outbox_oldest,
            pool_in_use,
            pool_idle,
            database_up,
        }))
    }

    /// One answered request, by the route's template: a path no route has is `unmatched`, so
    /// scanners cannot mint series.
    pub fn http_request(&self, method: &'static str, route: Route, status: u16, elapsed: Duration) {
        self.0
            .http_duration
            .get_or_create(&RouteLabels { route: route.clone() })
            .observe(elapsed.as_secs_f64());
        self.0
            .http_requests
            .get_or_create(&HttpLabels { method, route, status })
            .inc();
    }

    /// A verified event, processed (`outcome` as the webhook answers it) or failed (`error`).
    /// `lag` is from the event's `created` to its receipt; none when Stripe's clock is ahead.
    pub fn webhook_event(&self, event_type: &str, outcome: &'static str, elapsed: Duration, lag: Option<Duration>) {
        self.0
            .webhook_events
            .get_or_create(&WebhookLabels {
                event_type: event_type.to_owned(),
                outcome,
            })
            .inc();
        self.0.webhook_duration.observe(elapsed.as_secs_f64());
        if let Some(lag) = lag {
            self.0.webhook_lag.observe(lag.as_secs_f64());
        }
    }

    pub fn webhook_signature_failure(&self, reason: &'static str) {
        self.0.signature_failures.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// One HTTP call to Stripe: its `endpoint` template and the status that came back, or why none.
    pub fn stripe_call(&self, endpoint: &'static str, status: &'static str, elapsed: Duration) {
        self.0
            .stripe_calls
            .get_or_create(&StripeCallLabels { endpoint, status })
            .inc();
        self.0
            .stripe_duration
            .get_or_create(&EndpointLabels { endpoint })
            .observe(elapsed.as_secs_f64());
    }

    pub fn reconciler_run(&self, outcome: &'static str, applied: u64) {
        self.0.reconciler_runs.get_or_create(&OutcomeLabels { outcome }).inc();
        self.0.reconciler_applied.inc_by(applied);
    }

    /// One drift check run: what it found (added to the totals) and what was left after its
    /// fixes (the gauge, every kind set, so a resolved drift clears it).
    pub fn drift_run(
        &self,
        outcome: &'static str,
        found: &[(&'static str, i64)],
        remaining: &[(&'static str, i64)],
        fixes: u64,
    ) {
        self.0.drift_runs.get_or_create(&OutcomeLabels { outcome }).inc();
        for &(kind, count) in found {
            self.0
                .drift_found
                .get_or_create(&KindLabels { kind })
                .inc_by(count.max(0) as u64);
        }
        for &(kind, count) in remaining {
            self.0.drift_remaining.get_or_create(&KindLabels { kind }).set(count);
        }
        self.0.drift_fixes.inc_by(fixes);
    }

    /// Counts a held long-poll until the guard drops, however the request ends (even cancelled).
    pub fn long_poll_held(&self) -> LongPollGuard {
        self.0.long_polls.inc();
        LongPollGuard(self.0.long_polls.clone())
    }

    /// Renders every metric, after setting the sampled ones to what the caller just read.
    pub fn render(&self, sampled: &Sampled) -> String {
        let inner = &self.0;
        inner.database_up.set(i64::from(sampled.database_up));
        // Unread (the database did not answer): the last values read stay, beside `database_up 0`.
        if let Some((pending, oldest)) = sampled.outbox {
            inner.outbox_pending.set(pending);
            inner.outbox_oldest.set(oldest.as_secs_f64());
        }
        inner.pool_in_use.set(sampled.pool_in_use);
        inner.pool_idle.set(sampled.pool_idle);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &inner.registry).expect("writing to a String cannot fail");
        text
    }
}

/// Values read when scraped rather than counted as they happen.
#[derive(Debug, Default)]
pub struct Sampled {
    /// Whether the database answered the scrape's query.
    pub database_up: bool,
    /// Pending outbox deliveries and the age of the oldest, when the database answered.
    pub outbox: Option<(i64, Duration)>,
    pub pool_in_use: i64,
    pub pool_idle: i64,
}

pub struct LongPollGuard(Gauge);

impl Drop for LongPollGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_sampled_gauges() {
        let metrics = Metrics::new();
        metrics.http_request("POST", Route::Named("/v1/check"), 200, Duration::from_millis(1));
        metrics.webhook_event(
            "checkout.session.completed",
            "fulfilled",
            Duration::from_millis(5),
            Some(Duration::from_secs(2)),
        );
        metrics.webhook_signature_failure("bad_signature");
        metrics.stripe_call("POST /v1/checkout/sessions", "200", Duration::from_millis(80));
        metrics.reconciler_run("ok", 3);
        let held = metrics.long_poll_held();
        let text = metrics.render(&Sampled {
            database_up: true,
            outbox: Some((7, Duration::from_secs(12))),
            pool_in_use: 2,
            pool_idle: 5,
        });
        for line in [
            r#"entitle_http_requests_total{method="POST",route="/v1/check",status="200"} 1"#,
            r#"entitle_webhook_events_total{event_type="checkout.session.completed",outcome="fulfilled"} 1"#,
            r#"entitle_webhook_signature_failures_total{reason="bad_signature"} 1"#,
            r#"entitle_stripe_api_calls_total{endpoint="POST /v1/checkout/sessions",status="200"} 1"#,
            r#"entitle_reconciler_runs_total{outcome="ok"} 1"#,
            "entitle_reconciler_events_applied_total 3",
            "entitle_order_status_long_polls_held 1",
            "entitle_outbox_pending_deliveries 7",
            "entitle_outbox_oldest_pending_age_seconds 12.0",
            "entitle_db_pool_connections_in_use 2",
            "entitle_db_pool_connections_idle 5",
            "entitle_database_up 1",
            "entitle_webhook_event_lag_seconds_count 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
        }
        drop(held);
        // A scrape the database did not answer keeps the backlog last read.
        let text = metrics.render(&Sampled::default());
        assert!(
            text.lines().any(|l| l == "entitle_order_status_long_polls_held 0"),
            "{text}"
        );
        assert!(text.lines().any(|l| l == "entitle_database_up 0"), "{text}");
        assert!(
            text.lines().any(|l| l == "entitle_outbox_pending_deliveries 7"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
