//! What `entitle deliveries` and `entitle redeliver` report: the endpoints (webhook or email) and
//! how each stands, the latest deliveries with their kind, attempts and errors, and what sending
//! again did.

use std::fmt::Write;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::payload;
use crate::{
    db,
    store::{
        outbox_deliveries::{self, DeliveryStatus, Listed, Redelivery},
        outbox_endpoints::{self, Endpoint, EndpointKind},
    },
};

/// The setting that names endpoints of `kind`.
fn setting_of(kind: EndpointKind) -> &'static str {
    match kind {
        EndpointKind::Webhook => "APP_WEBHOOK_URL",
        EndpointKind::Email => "SMTP_URL",
    }
}

/// To the second: read by people, side by side.
fn short_time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn plural(count: impl Into<i64>, one: &str, many: &str) -> String {
    match count.into() {
        1 => format!("1 {one}"),
        n => format!("{n} {many}"),
    }
}

/// The endpoints, then the latest deliveries (newest first), each with what its last attempt met.
pub async fn describe_deliveries(
    db: &PgPool,
    failed_only: bool,
    user_id: Option<&str>,
    limit: i64,
) -> Result<String, sqlx::Error> {
    let endpoints = outbox_endpoints::all(db).await?;
    let deliveries = outbox_deliveries::latest(
        db,
        &outbox_deliveries::Filter {
            failed_only,
            user_id,
            order_id: None,
        },
        limit,
    )
    .await?;
    let mut out = String::new();
    if endpoints.is_empty() {
        let _ = writeln!(
            out,
            "no endpoint has been configured (APP_WEBHOOK_URL, or a mailer: SMTP_URL): no messages are written"
        );
    } else {
        let _ = writeln!(out, "endpoints:");
        for endpoint in &endpoints {
            let _ = writeln!(
                out,
                "  {:<7}  {}  {}",
                endpoint.kind.as_str(),
                endpoint.url,
                endpoint_state(endpoint)
            );
        }
    }
    let which = match (failed_only, user_id) {
        (false, None) => String::new(),
        (true, None) => " that failed".to_owned(),
        (false, Some(user)) => format!(" of user {user}"),
        (true, Some(user)) => format!(" of user {user} that failed"),
    };
    if deliveries.is_empty() {
        let _ = writeln!(out, "no deliveries{which}");
        return Ok(out);
    }
    let _ = writeln!(out, "deliveries{which}, newest first (at most {limit}):");
    for delivery in &deliveries {
        describe_delivery(&mut out, delivery);
    }
    Ok(out)
}

fn endpoint_state(endpoint: &Endpoint) -> String {
    if let (Some(at), Some(reason)) = (endpoint.disabled_at, &endpoint.disabled_reason) {
        return format!(
            "DISABLED since {}: {reason}; sent nothing until `entitle redeliver` enables it",
            short_time(at)
        );
    }
    let mut state = match endpoint.failing_since {
        Some(since) => format!(
            "failing since {} ({} in a row)",
            short_time(since),
            plural(endpoint.consecutive_failures, "failed attempt", "failed attempts")
        ),
        None => "healthy".to_owned(),
    };
    if let Some(retry_at) = endpoint.retry_at.filter(|at| *at > Utc::now()) {
        let _ = write!(state, ", next attempt at {}", short_time(retry_at));
    }
    if !endpoint.configured {
        let _ = write!(state, "; no longer in {}: sent nothing new", setting_of(endpoint.kind));
    }
    state
}

fn describe_delivery(out: &mut String, delivery: &Listed) {
    let _ = writeln!(
        out,
        "  {}  {:<7}  {}  {}  user {}",
        short_time(delivery.created_at),
        delivery.endpoint_kind.as_str(),
        payload::webhook_id(delivery.message_id),
        delivery.message_type.as_str(),
        delivery.user_id
    );
    let attempts = plural(delivery.attempts, "attempt", "attempts");
    let state = match delivery.status {
        DeliveryStatus::Delivered => format!(
            "delivered{} after {attempts}",
            delivery
                .delivered_at
                .map(|at| format!(" at {}", short_time(at)))
                .unwrap_or_default()
        ),
        DeliveryStatus::Abandoned => format!("ABANDONED after {attempts}"),
        DeliveryStatus::Pending if delivery.leased_until.is_some_and(|until| until > Utc::now()) => {
            format!("sending now (attempt {})", delivery.attempts)
        }
        DeliveryStatus::Pending => format!(
            "pending, {attempts} so far, next at {}",
            short_time(delivery.next_attempt_at)
        ),
    };
    let _ = writeln!(out, "      to {}: {state}", delivery.url);
    let last = match (delivery.last_response, &delivery.last_error) {
        (_, Some(error)) => Some(format!("last: {error}")),
        (Some(status), None) => Some(format!("last answer: {status}")),
        (None, None) => None,
    };
    if let Some(last) = last {
        let _ = writeln!(out, "      {last}");
    }
    let _ = writeln!(
        out,
        "      delivery {} (entitle redeliver {} sends it again)",
        delivery.delivery_id, delivery.delivery_id
    );
}

/// Makes the deliveries `what` names pending and due now, enables the disabled endpoints they go
/// to, and says what it did; `None` when nothing matched.
pub async fn redeliver(db: &PgPool, what: &Redelivery) -> Result<Option<String>, sqlx::Error> {
    let mut tx = db::begin(db).await?;
    let requeued = outbox_deliveries::requeue(&mut tx, what).await?;
    if requeued.is_empty() {
        tx.commit().await?;
        return Ok(None);
    }
    let mut disabled: Vec<_> = requeued
        .iter()
        .filter(|r| r.endpoint_disabled && r.endpoint_configured)
        .map(|r| r.endpoint_id)
        .collect();
    disabled.sort_unstable();
    disabled.dedup();
    let enabled = outbox_endpoints::enable(&mut tx, &disabled).await?;
    tx.commit().await?;

    let count = |status: DeliveryStatus| requeued.iter().filter(|r| r.was == status).count() as i64;
    let mut out = format!(
        "{} pending again, due now ({} delivered before, {} abandoned, {} still pending)\n",
        plural(requeued.len() as i64, "delivery is", "deliveries are"),
        count(DeliveryStatus::Delivered),
        count(DeliveryStatus::Abandoned),
        count(DeliveryStatus::Pending)
    );
    for endpoint in &enabled {
        let _ = writeln!(
            out,
            "enabled again: {} (disabled since {}: {})",
            endpoint.url,
            short_time(endpoint.disabled_at),
            endpoint.disabled_reason
        );
    }
    let mut unconfigured: Vec<(&str, EndpointKind)> = requeued
        .iter()
        .filter(|r| !r.endpoint_configured)
        .map(|r| (r.url.as_str(), r.endpoint_kind))
        .collect();
    unconfigured.sort_unstable_by_key(|(url, _)| *url);
    unconfigured.dedup();
    for (url, kind) in unconfigured {
        let _ = writeln!(
            out,
            "not sent while {url} is no longer in {}: its deliveries wait until it is again",
            setting_of(kind)
        );
    }
    Ok(Some(out))
}
