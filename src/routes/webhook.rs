//! `POST /payment-webhook`: where Stripe tells us what happened. The raw body is verified against
//! `Stripe-Signature` before anything parses it; then the event is applied exactly once.
//!
//! Answers: 400 for deliveries we cannot trust (Stripe will not get them right by retrying, and a
//! forger learns nothing); 200 for every verified event, including ones we do not act on (a 4xx
//! would make Stripe retry and eventually disable the endpoint); 5xx only for transient failures,
//! with nothing committed, so Stripe's retry applies the event later.

use axum::{
    Json,
    body::Bytes,
    extract::{State, rejection::BytesRejection},
    http::{HeaderMap, StatusCode},
};
use serde::Serialize;
use std::time::{Duration, Instant};
use utoipa::ToSchema;

use crate::{
    config::StripeMode,
    error::AppError,
    fulfillment::process_event,
    openapi::{BadGateway, BadRequest, DatabaseErrors, PayloadTooLarge},
    state::AppState,
    stripe::{event::WebhookEvent, signature::verify_stripe_signature},
};

/// Stripe's events are a few KiB; anything near this is not from Stripe.
pub const MAX_WEBHOOK_BODY: usize = 1024 * 1024;

#[derive(Serialize, ToSchema)]
pub struct WebhookReceipt {
    received: bool,
    /// What the event did, e.g. `fulfilled`, `duplicate`, `ignored`.
    outcome: &'static str,
}

#[utoipa::path(
    post,
    path = "/payment-webhook",
    tag = "stripe",
    params(
        ("Stripe-Signature" = String, Header, description = "Stripe's signature of the raw body with the endpoint's secret."),
    ),
    request_body(content = Object, description = "A Stripe event, verified byte for byte against `Stripe-Signature` before it is read."),
    responses(
        (status = 200, description = "A verified event, applied once (also one this service does not act on).", body = WebhookReceipt),
        (status = 400, response = BadRequest),
        (status = 413, response = PayloadTooLarge),
        (status = 502, response = BadGateway),
        DatabaseErrors,
    )
)]
#[tracing::instrument(name = "webhook", skip_all, fields(event_id, event_type, order_id))]
pub async fn payment_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<WebhookReceipt>, AppError> {
    let body = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => AppError::PayloadTooLarge,
        _ => AppError::bad_request("invalid_body", "The request body could not be read."),
    })?;

    let received = Instant::now();
    let signature = headers.get("stripe-signature").and_then(|value| value.to_str().ok());
    let now = chrono::Utc::now().timestamp();
    verify_stripe_signature(
        signature,
        &body,
        &state.config.webhook_secrets,
        state.config.webhook_tolerance,
        now,
    )
    .map_err(|err| {
        state.metrics.webhook_signature_failure(err.reason());
        tracing::warn!(reason = %err, "webhook signature rejected");
        AppError::bad_request(
            "invalid_signature",
            format!("Webhook signature verification failed: {err}."),
        )
    })?;

    let event: WebhookEvent = serde_json::from_slice(&body).map_err(|_| {
        // Signed by Stripe but not an event we can read: counted under a type of its own.
        state
            .metrics
            .webhook_event("(unreadable)", "invalid_event", received.elapsed(), None);
        AppError::bad_request("invalid_event", "The body is not a Stripe event.")
    })?;
    let span = tracing::Span::current();
    span.record("event_id", event.id.as_str());
    span.record("event_type", event.event_type.as_str());
    let lag = u64::try_from(now - event.created).ok().map(Duration::from_secs);
    let record = |outcome| {
        state
            .metrics
            .webhook_event(&event.event_type, outcome, received.elapsed(), lag)
    };
    refuse_other_mode(&event, state.config.stripe.mode()).inspect_err(|_| record("livemode_mismatch"))?;

    let outcome = process_event(&state.db, &state.stripe, &event, Some(&state.wakeups))
        .await
        .inspect_err(|_| record("error"))?;
    record(outcome.as_str());
    tracing::info!(outcome = outcome.as_str(), "webhook processed");
    Ok(Json(WebhookReceipt {
        received: true,
        outcome: outcome.as_str(),
    }))
}

/// A correctly signed event from the other mode means an endpoint or secret shared between test
/// and live: a test payment must never grant anything on a live service, nor the reverse. Refused
/// before anything is recorded, so it stays visible (and retried) in Stripe's dashboard. An event
/// without `livemode` is not one Stripe sent, so it is refused too (fail closed).
fn refuse_other_mode(event: &WebhookEvent, mode: StripeMode) -> Result<(), AppError> {
    if event.livemode == Some(mode.livemode()) {
        return Ok(());
    }
    let event_mode = match event.livemode {
        Some(true) => "a live-mode event",
        Some(false) => "a test-mode event",
        None => "an event without livemode",
    };
    tracing::warn!(%mode, livemode = ?event.livemode, "webhook refused: event from another Stripe mode");
    Err(AppError::bad_request(
        "livemode_mismatch",
        format!("This service runs in Stripe {mode} mode and does not accept {event_mode}."),
    ))
}
