//! Events the webhook never received (an outage, a disabled endpoint) are still in Stripe's event
//! list for 30 days. We list the types we handle from a stored cursor and apply, through
//! `process_event` like the webhook, each one not already in `processed_webhook_events`. Every
//! handler is safe in any order (subscription state is fetched fresh, refunds use running totals),
//! so pages are applied as Stripe returns them, newest first.

use std::time::Duration;

use sqlx::PgPool;

use crate::{
    error::AppError,
    fulfillment::process_event,
    lifecycle::HANDLED_EVENT_TYPES,
    stripe::{ProviderError, retrieve::list_events_page},
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
    pub newest_created: Option<i64>,
}

/// Lists events created at or after `since` (unix seconds) and applies the ones never processed.
pub async fn reconcile_since(pool: &PgPool, stripe: &stripe::Client, since: i64) -> Result<ReconcileReport, AppError> {
    let since = since.max(chrono::Utc::now().timestamp() - EVENT_RETENTION.as_secs() as i64);
    let mut report = ReconcileReport::default();
    let mut starting_after: Option<String> = None;
    loop {
        let page = list_events_page(stripe, HANDLED_EVENT_TYPES, since, starting_after.as_deref())
            .await
            .map_err(|err| AppError::PaymentProvider(ProviderError::Stripe(err)))?;
        for event in &page.data {
            report.listed += 1;
            report.newest_created = report.newest_created.max(Some(event.created));
            let known: bool =
                sqlx::query_scalar("select exists (select 1 from processed_webhook_events where event_id = $1)")
                    .bind(&event.id)
                    .fetch_one(pool)
                    .await?;
            if !known {
                let outcome = process_event(pool, stripe, event).await?;
                tracing::info!(event_id = %event.id, event_type = %event.event_type, outcome = outcome.as_str(), "reconciler applied a missed event");
                report.applied += 1;
            }
        }
        match page.data.last() {
            Some(last) if page.has_more => starting_after = Some(last.id.clone()),
            _ => break,
        }
    }
    Ok(report)
}

/// One run from the stored cursor; the cursor moves only when every event applied.
pub async fn reconcile_from_cursor(pool: &PgPool, stripe: &stripe::Client) -> Result<ReconcileReport, AppError> {
    let stored: Option<i64> = sqlx::query_scalar("select created_up_to from reconciler_cursor where name = $1")
        .bind(CURSOR_NAME)
        .fetch_optional(pool)
        .await?;
    let since = stored.map_or_else(
        || chrono::Utc::now().timestamp() - FIRST_RUN_LOOKBACK.as_secs() as i64,
        |created| created - CURSOR_OVERLAP_SECS,
    );
    let report = reconcile_since(pool, stripe, since).await?;
    if let Some(newest) = report.newest_created {
        sqlx::query(
            "insert into reconciler_cursor (name, created_up_to) values ($1, $2)
             on conflict (name) do update set created_up_to = greatest(reconciler_cursor.created_up_to, $2), updated_at = now()",
        )
        .bind(CURSOR_NAME)
        .bind(newest)
        .execute(pool)
        .await?;
    }
    Ok(report)
}

/// Runs every `every` until the process ends; a failed run is logged and retried next time.
pub async fn run_periodically(pool: PgPool, stripe: stripe::Client, every: Duration) {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        ticker.tick().await;
        match reconcile_from_cursor(&pool, &stripe).await {
            Ok(report) if report.applied > 0 => {
                tracing::warn!(
                    listed = report.listed,
                    applied = report.applied,
                    "reconciler found missed events"
                )
            }
            Ok(report) => tracing::debug!(listed = report.listed, "reconciler found nothing missed"),
            Err(err) => tracing::error!(error = ?err, "reconciler run failed"),
        }
    }
}
