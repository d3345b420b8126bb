//! The drift check (`entitle verify`, and a scheduled run): what we hold about every live
//! subscription and every order of a window, compared with what Stripe holds now. The reconciler
//! finds events the webhook missed, but only while Stripe keeps them (30 days), and only events:
//! an endpoint broken for longer, or an event consumed by a bug, leaves a state nothing replays.
//! So this compares states.
//!
//! A fix builds an event from Stripe's current object and applies it through `process_event`, the
//! webhook's own path: the same rules decide as for a delivery, the order's history shows the fix
//! as an applied event (`verify_…`), and a fix applied twice is a duplicate. What no event can fix
//! (Stripe no longer knows the object) is reported for a person.

use chrono::{DateTime, Utc};
use futures_util::{StreamExt, TryStreamExt, stream};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    config::DriftCheck,
    domain_error::DomainError,
    fulfillment::process_event,
    lifecycle::{plan_changes, reversals::derive_standing},
    metrics::Metrics,
    store::{
        orders::{self, PaidOrderRef, PendingCheckout},
        payment_facts,
        subscriptions::{self, StoredSubscription},
    },
    stripe::{
        ProviderError, StripeApi,
        event::{EventData, WebhookEvent},
        lifecycle_objects::SubscriptionObject,
        retrieve::{list_charges_of, list_disputes_of, list_refunds_of, retrieve_raw, retrieve_subscription_raw},
    },
};

/// A checkout younger than this is left to its webhook and the return page: its payment may be
/// on its way to us this very second.
const PENDING_GRACE: chrono::Duration = chrono::Duration::minutes(10);
/// Stripe calls in flight at once: quick enough for thousands of objects, far below Stripe's rate
/// limit (100 per second in live mode, 25 in test mode).
const CONCURRENCY: usize = 8;

/// What kind of disagreement a finding is; one label each in the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DriftKind {
    /// Pending here, paid at Stripe: someone paid and got nothing.
    UngrantedPayment,
    /// Pending here, expired at Stripe.
    ExpiredCheckout,
    /// The amount refunded differs.
    Refunded,
    /// A dispute we do not have, or whose status differs.
    Dispute,
    /// A subscription's status, period end or cancel-at-period-end differs.
    Subscription,
    /// A subscription's latest invoice is paid at Stripe but its payment is not on file (its
    /// period's credits were not granted).
    UnrecordedInvoice,
    /// Stripe does not know an object we hold (another account's key, or deleted): for a person.
    UnknownToStripe,
}

impl DriftKind {
    pub const ALL: [Self; 7] = [
        Self::UngrantedPayment,
        Self::ExpiredCheckout,
        Self::Refunded,
        Self::Dispute,
        Self::Subscription,
        Self::UnrecordedInvoice,
        Self::UnknownToStripe,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::UngrantedPayment => "ungranted_payment",
            Self::ExpiredCheckout => "expired_checkout",
            Self::Refunded => "refunded",
            Self::Dispute => "dispute",
            Self::Subscription => "subscription",
            Self::UnrecordedInvoice => "unrecorded_invoice",
            Self::UnknownToStripe => "unknown_to_stripe",
        }
    }
}

/// One disagreement between our records and Stripe's.
#[derive(Debug, Clone)]
pub struct Finding {
    pub kind: DriftKind,
    /// What it is about: `order <id>`, `subscription sub_…`, with the payment where that matters.
    pub subject: String,
    pub ours: String,
    pub stripe: String,
    /// The events a fix applies, built from Stripe's objects as they are now; empty when only a
    /// person can resolve it.
    fixes: Vec<(&'static str, Value)>,
}

impl Finding {
    pub fn fixable(&self) -> bool {
        !self.fixes.is_empty()
    }
}

#[derive(Debug, Default)]
pub struct VerifyReport {
    pub orders_checked: usize,
    pub subscriptions_checked: usize,
    /// What the comparison found (before any fix).
    pub found: Vec<Finding>,
    /// Events applied by `--fix`.
    pub events_applied: usize,
    /// What a second comparison after the fixes still found (without `--fix`: everything found).
    pub remaining: Vec<Finding>,
}

/// Compares every live subscription, every order paid since `since` and every checkout opened
/// since then (but not within the last minutes) with Stripe; with `fix`, applies Stripe's state
/// and compares again. A Stripe or database error stops the run: a partial answer would read as
/// "no drift" for what it did not reach.
pub async fn verify(
    pool: &PgPool,
    stripe: &StripeApi,
    since: DateTime<Utc>,
    fix: bool,
) -> Result<VerifyReport, DomainError> {
    let mut report = compare(pool, stripe, since).await?;
    if !fix || report.found.is_empty() {
        report.remaining = report.found.clone();
        return Ok(report);
    }
    for finding in &report.found {
        for (event_type, object) in &finding.fixes {
            let event = event_from(event_type, object.clone());
            let outcome = process_event(pool, stripe, &event, None).await?;
            tracing::info!(
                kind = finding.kind.as_str(),
                subject = %finding.subject,
                event_id = %event.id,
                event_type,
                outcome = outcome.as_str(),
                "drift check applied Stripe's state"
            );
            report.events_applied += 1;
        }
    }
    report.remaining = compare(pool, stripe, since).await?.found;
    Ok(report)
}

async fn compare(pool: &PgPool, stripe: &StripeApi, since: DateTime<Utc>) -> Result<VerifyReport, DomainError> {
    let pending = orders::pending_checkouts_between(pool, since, Utc::now() - PENDING_GRACE).await?;
    let paid = orders::paid_since(pool, since).await?;
    let live = subscriptions::live(pool).await?;
    let mut report = VerifyReport {
        orders_checked: pending.len() + paid.len(),
        subscriptions_checked: live.len(),
        ..VerifyReport::default()
    };
    let pending = stream::iter(pending)
        .map(|order| check_pending(stripe, order))
        .buffered(CONCURRENCY);
    let paid = stream::iter(paid)
        .map(|order| check_paid(pool, stripe, order))
        .buffered(CONCURRENCY);
    let live = stream::iter(live)
        .map(|subscription| check_subscription(pool, stripe, subscription))
        .buffered(CONCURRENCY);
    for findings in [
        pending.try_collect::<Vec<_>>().await?,
        paid.try_collect().await?,
        live.try_collect().await?,
    ] {
        report.found.extend(findings.into_iter().flatten());
    }
    Ok(report)
}

fn provider(err: stripe::StripeError) -> DomainError {
    DomainError::PaymentProvider(ProviderError::Stripe(err))
}

fn is_not_found(err: &stripe::StripeError) -> bool {
    matches!(err, stripe::StripeError::Stripe(_, 404))
}

/// A pending order whose session Stripe completed (paid) or expired.
async fn check_pending(stripe: &StripeApi, order: PendingCheckout) -> Result<Vec<Finding>, DomainError> {
    let subject = format!("order {} (session {})", order.id, order.session_id);
    let session = match retrieve_raw(
        stripe,
        "GET /v1/checkout/sessions/{id}",
        format!("/checkout/sessions/{}", order.session_id),
    )
    .await
    {
        Ok(session) => session,
        Err(err) if is_not_found(&err) => return Ok(vec![unknown(subject, "pending")]),
        Err(err) => return Err(provider(err)),
    };
    let status = session["status"].as_str().unwrap_or_default();
    let payment_status = session["payment_status"].as_str().unwrap_or_default();
    let finding = match (status, payment_status) {
        ("complete", "paid" | "no_payment_required") => Finding {
            kind: DriftKind::UngrantedPayment,
            subject,
            ours: "pending".into(),
            stripe: format!("complete, {payment_status}"),
            fixes: vec![("checkout.session.completed", session)],
        },
        ("expired", _) => Finding {
            kind: DriftKind::ExpiredCheckout,
            subject,
            ours: "pending".into(),
            stripe: "expired".into(),
            fixes: vec![("checkout.session.expired", session)],
        },
        // Open, or complete and waiting for a delayed payment method: pending is right.
        _ => return Ok(Vec::new()),
    };
    Ok(vec![finding])
}

/// A paid order's payments: their refunded totals and disputes.
async fn check_paid(pool: &PgPool, stripe: &StripeApi, order: PaidOrderRef) -> Result<Vec<Finding>, DomainError> {
    let mut payments: Vec<String> = order.payment_intent.iter().cloned().collect();
    if let Some(subscription_id) = &order.subscription_id {
        payments.extend(subscriptions::payment_intents_of(pool, subscription_id).await?);
    }
    payments.sort_unstable();
    payments.dedup();
    let mut findings = Vec::new();
    for payment in payments {
        findings.extend(check_payment(pool, stripe, order.id, &payment).await?);
    }
    Ok(findings)
}

async fn check_payment(
    pool: &PgPool,
    stripe: &StripeApi,
    order_id: Uuid,
    payment: &str,
) -> Result<Vec<Finding>, DomainError> {
    let subject = format!("order {order_id} (payment {payment})");
    let charges = list_charges_of(stripe, payment).await.map_err(provider)?.data;
    let disputes = list_disputes_of(stripe, payment).await.map_err(provider)?.data;
    let (ours_refunded, our_disputes) = {
        let mut conn = pool.acquire().await?;
        let intents = [payment.to_owned()];
        let facts = payment_facts::facts_for(&mut conn, &intents).await?;
        let disputes = payment_facts::disputes_of(&mut conn, &intents).await?;
        (derive_standing(&facts, 0, 0).refunded, disputes)
    };

    let mut findings = Vec::new();
    let stripe_refunded: i64 = charges.iter().filter_map(|c| c["amount_refunded"].as_i64()).sum();
    if stripe_refunded != ours_refunded {
        // The charges carry the running totals; the refunds tell which of them still stand.
        let mut fixes: Vec<(&'static str, Value)> = charges.iter().map(|c| ("charge.refunded", c.clone())).collect();
        let refunds = list_refunds_of(stripe, payment).await.map_err(provider)?.data;
        fixes.extend(refunds.into_iter().map(|r| ("refund.updated", r)));
        findings.push(Finding {
            kind: DriftKind::Refunded,
            subject: subject.clone(),
            ours: format!("{ours_refunded} refunded"),
            stripe: format!("{stripe_refunded} refunded"),
            fixes,
        });
    }
    for dispute in &disputes {
        let id = dispute["id"].as_str().unwrap_or_default();
        let status = dispute["status"].as_str().unwrap_or_default();
        let ours = our_disputes.iter().find(|d| d.stripe_dispute_id == id);
        if ours.is_some_and(|d| d.status == status) {
            continue;
        }
        let event_type =
            if crate::lifecycle::reversals::dispute_state(status) == crate::lifecycle::reversals::DisputeState::Open {
                "charge.dispute.updated"
            } else {
                "charge.dispute.closed"
            };
        findings.push(Finding {
            kind: DriftKind::Dispute,
            subject: format!("{subject} dispute {id}"),
            ours: ours.map_or_else(|| "no dispute".to_owned(), |d| d.status.clone()),
            stripe: status.to_owned(),
            fixes: vec![(event_type, dispute.clone())],
        });
    }
    for ours in &our_disputes {
        if !disputes.iter().any(|d| d["id"] == ours.stripe_dispute_id.as_str()) {
            findings.push(unknown(
                format!("{subject} dispute {}", ours.stripe_dispute_id),
                &ours.status,
            ));
        }
    }
    Ok(findings)
}

/// A live subscription: its status, period end and cancel-at-period-end, and whether its latest
/// paid invoice is on file.
async fn check_subscription(
    pool: &PgPool,
    stripe: &StripeApi,
    ours: StoredSubscription,
) -> Result<Vec<Finding>, DomainError> {
    let id = &ours.stripe_subscription_id;
    let subject = match ours.order_id {
        Some(order_id) => format!("subscription {id} (order {order_id})"),
        None => format!("subscription {id}"),
    };
    let raw = match retrieve_subscription_raw(stripe, id).await {
        Ok(raw) => raw,
        Err(err) if is_not_found(&err) => return Ok(vec![unknown(subject, &ours.status)]),
        Err(err) => return Err(provider(err)),
    };
    let current = serde_json::from_value::<SubscriptionObject>(raw.clone())
        .map_err(|err| provider(stripe::StripeError::JSONDeserialize(err.to_string())))?;
    let mut findings = Vec::new();
    let mut our_state = state_line(
        &ours.status,
        ours.current_period_end.map(|t| t.timestamp()),
        ours.cancel_at_period_end,
    );
    let mut stripe_state = state_line(
        &current.status,
        current.current_period_end(),
        current.cancel_at_period_end,
    );
    // A plan change whose event never arrived: compared when Stripe's price names a plan.
    let stripe_plan = plan_changes::plan_of(&mut *pool.acquire().await?, &current).await?;
    if let Some(stripe_plan) = stripe_plan {
        our_state.push_str(&format!(", plan {}", ours.plan_id.as_deref().unwrap_or("none")));
        stripe_state.push_str(&format!(", plan {stripe_plan}"));
    }
    if our_state != stripe_state {
        let event_type = if current.status == "canceled" {
            "customer.subscription.deleted"
        } else {
            "customer.subscription.updated"
        };
        findings.push(Finding {
            kind: DriftKind::Subscription,
            subject: subject.clone(),
            ours: our_state,
            stripe: stripe_state,
            fixes: vec![(event_type, raw.clone())],
        });
    }
    let latest_invoice = match &raw["latest_invoice"] {
        Value::String(id) => Some(id.clone()),
        Value::Object(invoice) => invoice.get("id").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    };
    if let Some(invoice_id) = latest_invoice
        && !subscriptions::invoice_recorded(pool, &invoice_id).await?
    {
        let invoice = match retrieve_raw(stripe, "GET /v1/invoices/{id}", format!("/invoices/{invoice_id}")).await {
            Ok(invoice) => Some(invoice),
            Err(err) if is_not_found(&err) => None,
            Err(err) => return Err(provider(err)),
        };
        // A $0 invoice (a trial's) pays for nothing to record.
        if let Some(invoice) = invoice.filter(|i| i["status"] == "paid" && i["amount_paid"].as_i64() > Some(0)) {
            findings.push(Finding {
                kind: DriftKind::UnrecordedInvoice,
                subject: format!("{subject} invoice {invoice_id}"),
                ours: "no payment on file".into(),
                stripe: format!("paid {}", invoice["amount_paid"]),
                fixes: vec![("invoice.paid", invoice)],
            });
        }
    }
    Ok(findings)
}

impl VerifyReport {
    /// How many findings of each kind, every kind listed.
    pub fn counts(findings: &[Finding]) -> Vec<(&'static str, i64)> {
        DriftKind::ALL
            .iter()
            .map(|kind| {
                (
                    kind.as_str(),
                    findings.iter().filter(|f| f.kind == *kind).count() as i64,
                )
            })
            .collect()
    }
}

/// One scheduled run (see `jobs`): counted in the metrics, each finding logged; whether it ran.
pub async fn scheduled_run(pool: &PgPool, stripe: &StripeApi, metrics: &Metrics, settings: DriftCheck) -> bool {
    let since = Utc::now() - chrono::Duration::from_std(settings.window).unwrap_or(chrono::Duration::days(30));
    match verify(pool, stripe, since, settings.fix).await {
        Ok(report) => {
            for finding in &report.remaining {
                tracing::warn!(
                    kind = finding.kind.as_str(),
                    subject = %finding.subject,
                    ours = %finding.ours,
                    stripe = %finding.stripe,
                    fixable = finding.fixable(),
                    "drift check: our records disagree with Stripe"
                );
            }
            let outcome = if report.remaining.is_empty() { "ok" } else { "drift" };
            metrics.drift_run(
                outcome,
                &VerifyReport::counts(&report.found),
                &VerifyReport::counts(&report.remaining),
                report.events_applied as u64,
            );
            tracing::info!(
                orders = report.orders_checked,
                subscriptions = report.subscriptions_checked,
                found = report.found.len(),
                fixed_with_events = report.events_applied,
                remaining = report.remaining.len(),
                "drift check run"
            );
            true
        }
        Err(err) => {
            metrics.drift_run("error", &[], &[], 0);
            tracing::error!(error = ?err, "drift check run failed");
            false
        }
    }
}

fn state_line(status: &str, period_end: Option<i64>, cancel_at_period_end: bool) -> String {
    let period_end = period_end
        .and_then(|secs| DateTime::<Utc>::from_timestamp(secs, 0))
        .map_or_else(|| "none".to_owned(), |at| at.to_rfc3339());
    let ending = if cancel_at_period_end {
        ", cancels at period end"
    } else {
        ""
    };
    format!("{status}, period ends {period_end}{ending}")
}

fn unknown(subject: String, ours: &str) -> Finding {
    Finding {
        kind: DriftKind::UnknownToStripe,
        subject,
        ours: ours.to_owned(),
        stripe: "no such object".into(),
        fixes: Vec::new(),
    }
}

/// An event carrying Stripe's object as it is now. Its id names what it carries, so applying the
/// same state twice is a duplicate, while a later state is a new event.
fn event_from(event_type: &str, object: Value) -> WebhookEvent {
    let digest = Sha256::digest(format!("{event_type}\n{object}").as_bytes());
    WebhookEvent {
        id: format!("verify_{}", &hex::encode(digest)[..24]),
        event_type: event_type.to_owned(),
        created: Utc::now().timestamp(),
        livemode: object["livemode"].as_bool(),
        data: EventData { object },
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_same_state_makes_the_same_event_and_another_state_another() {
        let first = event_from("charge.refunded", json!({"id": "ch_1", "amount_refunded": 500}));
        let again = event_from("charge.refunded", json!({"id": "ch_1", "amount_refunded": 500}));
        let later = event_from("charge.refunded", json!({"id": "ch_1", "amount_refunded": 900}));
        assert_eq!(first.id, again.id);
        assert_ne!(first.id, later.id);
        assert!(first.id.starts_with("verify_"));
    }

    #[test]
    fn a_state_line_says_status_period_end_and_cancellation() {
        assert_eq!(
            state_line("active", Some(0), true),
            "active, period ends 1970-01-01T00:00:00+00:00, cancels at period end"
        );
        assert_eq!(state_line("past_due", None, false), "past_due, period ends none");
    }
}
