//! Events the webhook never received (an outage, a disabled endpoint) are still in Stripe's event
//! list for 30 days. We list the types we handle from a stored cursor and apply, through
//! `process_event` like the webhook, each one not already in `processed_webhook_events`.
//!
//! Every handler is safe in any order, yet a run applies what it found oldest first: entitlement
//! history, logs and `entitle order` then tell what happened in the order it happened, and a
//! handler that one day depends on order is not surprised. So a run reads every page before it
//! applies anything, keeping only the events it will apply.
//!
//! An event that fails does not stop the run. It is tried again on later runs, and the cursor
//! waits for it; after `max_attempts` failures it is set aside (`failures`) so that it cannot hold
//! back every event after it, and an operator sees it in `entitle failed-events`.

use std::{cmp::Reverse, collections::HashMap, time::Duration};

use sqlx::PgPool;

use super::failures;
use crate::{
    domain_error::DomainError,
    fulfillment::process_event,
    metrics::Metrics,
    store::reconciler,
    stripe::{
        ProviderError,
        event::{EventKind, WebhookEvent},
        retrieve::list_events_page,
    },
};

/// Stripe keeps events this long; a cursor older than this cannot find more.
pub const EVENT_RETENTION: Duration = Duration::from_secs(30 * 24 * 60 * 60);
/// Where a reconciler that never ran starts.
const FIRST_RUN_LOOKBACK: Duration = Duration::from_secs(72 * 60 * 60);
/// Events can enter the list a little after their `created` second; re-reading an overlap is free.
const CURSOR_OVERLAP_SECS: i64 = 300;
const CURSOR_NAME: &str = "events";

#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    pub listed: usize,
    pub applied: usize,
    /// Attempts that failed in this run, the newly set aside among them.
    pub failed: usize,
    pub set_aside: usize,
    /// Listed but skipped, set aside by an earlier run.
    pub skipped_set_aside: usize,
    pub newest_created: Option<i64>,
}

/// An event to apply, with its place in Stripe's list (0 = newest) to order events of one second.
struct Missed {
    position: usize,
    event: WebhookEvent,
}

/// Lists events created at or after `since` (unix seconds) and applies the ones never processed,
/// oldest first. An event that fails counts an attempt; the one reaching `max_attempts` sets it aside.
pub async fn reconcile_since(
    pool: &PgPool,
    stripe: &crate::stripe::StripeApi,
    since: i64,
    max_attempts: u32,
) -> Result<ReconcileReport, DomainError> {
    let since = since.max(chrono::Utc::now().timestamp() - EVENT_RETENTION.as_secs() as i64);
    reconciler::prune_resolved(pool).await?;
    let mut report = ReconcileReport::default();
    let missed = list_missed(pool, stripe, since, &mut report).await?;
    for Missed { event, .. } in missed {
        match process_event(pool, stripe, &event, None).await {
            Ok(outcome) => {
                tracing::info!(event_id = %event.id, event_type = %event.event_type, outcome = outcome.as_str(), "reconciler applied a missed event");
                report.applied += 1;
            }
            Err(err) => {
                report.failed += 1;
                let attempt = failures::record_failure(pool, &event, &err, max_attempts).await?;
                if attempt.set_aside {
                    report.set_aside += 1;
                    tracing::error!(
                        event_id = %event.id,
                        event_type = %event.event_type,
                        attempts = attempt.attempts,
                        error = ?err,
                        "reconciler set aside an event that keeps failing; later runs skip it (see `entitle failed-events`, retry with `entitle replay {}`)",
                        event.id
                    );
                } else {
                    tracing::warn!(
                        event_id = %event.id,
                        event_type = %event.event_type,
                        attempts = attempt.attempts,
                        error = ?err,
                        "reconciler could not apply a missed event; the next run tries again"
                    );
                }
            }
        }
    }
    Ok(report)
}

/// Reads every page and returns the events to apply, oldest first. Stripe lists newest first,
/// also within one second, so ties go by the list position reversed. Only the unapplied events
/// are kept; the others are counted.
async fn list_missed(
    pool: &PgPool,
    stripe: &crate::stripe::StripeApi,
    since: i64,
    report: &mut ReconcileReport,
) -> Result<Vec<Missed>, DomainError> {
    let mut missed = Vec::new();
    let mut starting_after: Option<String> = None;
    loop {
        let page = list_events_page(stripe, &EventKind::ALL, since, starting_after.as_deref())
            .await
            .map_err(|err| DomainError::PaymentProvider(ProviderError::Stripe(err)))?;
        let ids: Vec<&str> = page.data.iter().map(|e| e.id.as_str()).collect();
        let skip: HashMap<String, bool> = reconciler::events_to_skip(pool, &ids)
            .await?
            .into_iter()
            .map(|skipped| (skipped.event_id, skipped.set_aside))
            .collect();
        starting_after = page
            .has_more
            .then(|| page.data.last().map(|last| last.id.clone()))
            .flatten();
        for event in page.data {
            report.newest_created = report.newest_created.max(Some(event.created));
            match skip.get(&event.id) {
                Some(true) => report.skipped_set_aside += 1,
                Some(false) => {}
                None => missed.push(Missed {
                    position: report.listed,
                    event,
                }),
            }
            report.listed += 1;
        }
        if starting_after.is_none() {
            break;
        }
    }
    missed.sort_by_key(|m| (m.event.created, Reverse(m.position)));
    Ok(missed)
}

/// One run from the stored cursor. The cursor only moves forward, and never past the oldest event
/// still to be retried, so the next run lists it again.
pub async fn reconcile_from_cursor(
    pool: &PgPool,
    stripe: &crate::stripe::StripeApi,
    max_attempts: u32,
) -> Result<ReconcileReport, DomainError> {
    let stored = reconciler::cursor(pool, CURSOR_NAME).await?;
    let mut since = stored.map_or_else(
        || chrono::Utc::now().timestamp() - FIRST_RUN_LOOKBACK.as_secs() as i64,
        |created| created - CURSOR_OVERLAP_SECS,
    );
    // One that `entitle reconcile --since` found, behind the cursor, is retried here too.
    if let Some(oldest) = reconciler::oldest_retryable(pool).await? {
        since = since.min(oldest);
    }
    let report = reconcile_since(pool, stripe, since, max_attempts).await?;
    if let Some(newest) = report.newest_created {
        let up_to = match reconciler::oldest_retryable(pool).await? {
            Some(oldest) => newest.min(oldest),
            None => newest,
        };
        reconciler::advance_cursor(pool, CURSOR_NAME, up_to).await?;
    }
    Ok(report)
}

/// One scheduled run (see `jobs`): counted in the metrics and logged; whether it succeeded. A
/// failed run is retried at the next interval.
pub async fn scheduled_run(
    pool: &PgPool,
    stripe: &crate::stripe::StripeApi,
    metrics: &Metrics,
    max_attempts: u32,
) -> bool {
    let result = reconcile_from_cursor(pool, stripe, max_attempts).await;
    match &result {
        Ok(report) if report.failed > 0 => metrics.reconciler_run("failures", report.applied as u64),
        Ok(report) => metrics.reconciler_run("ok", report.applied as u64),
        Err(_) => metrics.reconciler_run("error", 0),
    }
    match result {
        Ok(report) if report.applied > 0 || report.failed > 0 => {
            tracing::warn!(
                listed = report.listed,
                applied = report.applied,
                failed = report.failed,
                set_aside = report.set_aside,
                "reconciler found missed events"
            );
            true
        }
        Ok(report) => {
            tracing::debug!(listed = report.listed, "reconciler found nothing missed");
            true
        }
        Err(err) => {
            tracing::error!(error = ?err, "reconciler run failed");
            false
        }
    }
}
