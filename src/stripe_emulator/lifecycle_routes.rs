//! The emulator's read endpoints for the payment lifecycle: `GET /v1/subscriptions/{id}`,
//! `GET /v1/invoices/{id}` (with `expand[]=payments`), `GET /v1/events/{id}` and `GET /v1/prices/{id}`
//! (the event list is `event_list`); and the failures a test can inject into any of them.

use std::collections::BTreeMap;

use axum::{
    Json,
    extract::{Path, Query, Request, State},
    http::StatusCode,
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::{RecordedRequest, StripeEmulator, billing, errors::ApiError, products};

/// How an injected failure answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InjectedFailure {
    /// This HTTP status with a Stripe error body (`api_error` for 5xx, `invalid_request_error` else).
    Stripe(u16),
    /// This HTTP status with an HTML page, as a proxy or load balancer in front of Stripe answers.
    NotJson(u16),
}

/// Answers a request whose path a test made fail, before any handler sees it.
pub async fn inject_failures(State(emulator): State<StripeEmulator>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let failure = emulator
        .lock()
        .injected_failures
        .iter()
        .find(|(prefix, _)| path.starts_with(prefix.as_str()))
        .map(|(_, failure)| *failure);
    let status = |code: u16| StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match failure {
        None => next.run(request).await,
        Some(InjectedFailure::Stripe(code)) => {
            ApiError::with_status(status(code), "An injected failure.").into_response()
        }
        Some(InjectedFailure::NotJson(code)) => (
            status(code),
            [("content-type", "text/html")],
            format!("<html><body><h1>{code}</h1></body></html>"),
        )
            .into_response(),
    }
}

fn record_get(emulator: &StripeEmulator, path: String, params: &[(String, String)]) {
    emulator.lock().requests.push(RecordedRequest {
        method: "GET".into(),
        path,
        params: params.iter().cloned().collect::<BTreeMap<_, _>>(),
        idempotency_key: None,
    });
}

fn not_found(kind: &str, id: &str, param: &str) -> Response {
    ApiError::no_such(kind, id, param).into_response()
}

pub async fn retrieve_subscription(
    State(emulator): State<StripeEmulator>,
    Path(id): Path<String>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    record_get(&emulator, format!("/v1/subscriptions/{id}"), &params);
    let expand_products = params
        .iter()
        .any(|(k, v)| k.starts_with("expand[") && v == "items.data.price.product");
    let state = emulator.lock();
    match state.billing.subscriptions.get(&id).cloned() {
        Some(subscription) if expand_products => {
            Json(products::with_products_expanded(&state, subscription)).into_response()
        }
        Some(subscription) => Json(subscription).into_response(),
        None => not_found("subscription", &id, "id"),
    }
}

pub async fn retrieve_invoice(
    State(emulator): State<StripeEmulator>,
    Path(id): Path<String>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    record_get(&emulator, format!("/v1/invoices/{id}"), &params);
    let expand_payments = params.iter().any(|(k, v)| k.starts_with("expand[") && v == "payments");
    match emulator.invoice(&id) {
        Some(invoice) if expand_payments => Json(invoice).into_response(),
        Some(invoice) => Json(billing::without_includable_fields(invoice)).into_response(),
        None => not_found("invoice", &id, "id"),
    }
}

pub async fn retrieve_event(State(emulator): State<StripeEmulator>, Path(id): Path<String>) -> Response {
    record_get(&emulator, format!("/v1/events/{id}"), &[]);
    let event = emulator.lock().events.iter().find(|e| e["id"] == id.as_str()).cloned();
    match event {
        Some(event) => Json(event).into_response(),
        None => not_found("event", &id, "id"),
    }
}

pub async fn retrieve_price(State(emulator): State<StripeEmulator>, Path(id): Path<String>) -> Response {
    record_get(&emulator, format!("/v1/prices/{id}"), &[]);
    match emulator.price(&id) {
        Some(price) => Json(price).into_response(),
        None => not_found("price", &id, "price"),
    }
}
