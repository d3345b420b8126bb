//! The emulator's read endpoints for the payment lifecycle: `GET /v1/subscriptions/{id}`,
//! `GET /v1/invoices/{id}` (with `expand[]=payments`), and the
//! event list (`GET /v1/events`, `GET /v1/events/{id}`) in Stripe's list shape, newest first, with
//! `limit`, `starting_after`, `ending_before`, `created[gte]` and `types[]`; and the failures a test
//! can inject into any of them.

use std::collections::BTreeMap;

use axum::{
    Json,
    extract::{Path, Query, Request, State},
    http::StatusCode,
    middleware::Next,
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use super::{RecordedRequest, StripeEmulator, billing, objects};

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
            let error_type = if code >= 500 {
                "api_error"
            } else {
                "invalid_request_error"
            };
            let body = objects::error_body(error_type, "An injected failure.", None);
            (status(code), Json(body)).into_response()
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
    (
        StatusCode::NOT_FOUND,
        Json(objects::error_body(
            "invalid_request_error",
            &format!("No such {kind}: '{id}'"),
            Some(param),
        )),
    )
        .into_response()
}

pub async fn retrieve_subscription(State(emulator): State<StripeEmulator>, Path(id): Path<String>) -> Response {
    record_get(&emulator, format!("/v1/subscriptions/{id}"), &[]);
    match emulator.subscription(&id) {
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

pub async fn list_events(
    State(emulator): State<StripeEmulator>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    record_get(&emulator, "/v1/events".into(), &params);
    let one = |key: &str| params.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    let types: Vec<&str> = params
        .iter()
        .filter(|(k, _)| k == "types[]" || k.starts_with("types["))
        .map(|(_, v)| v.as_str())
        .collect();
    let limit = one("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(10)
        .clamp(1, 100);
    let created_gte = one("created[gte]").and_then(|c| c.parse::<i64>().ok());

    // Newest first, as Stripe lists; events are recorded oldest first, so within one second the
    // later recorded comes first (the sort is stable).
    let created = |e: &Value| e["created"].as_i64().unwrap_or_default();
    let mut matching: Vec<Value> = emulator
        .lock()
        .events
        .iter()
        .rev()
        .filter(|e| types.is_empty() || types.iter().any(|t| e["type"] == *t))
        .filter(|e| created_gte.is_none_or(|gte| created(e) >= gte))
        .cloned()
        .collect();
    matching.sort_by_key(|e| std::cmp::Reverse(created(e)));
    if let Some(after) = one("starting_after") {
        let position = matching.iter().position(|e| e["id"] == after);
        matching = position.map_or_else(Vec::new, |p| matching.split_off(p + 1));
    } else if let Some(before) = one("ending_before") {
        // The page of events just newer than `before`, still listed newest first.
        let position = matching.iter().position(|e| e["id"] == before).unwrap_or(0);
        matching.truncate(position);
        let skip = matching.len().saturating_sub(limit);
        matching.drain(..skip);
        return Json(json!({ "object": "list", "data": matching, "has_more": skip > 0, "url": "/v1/events" }))
            .into_response();
    }
    let has_more = matching.len() > limit;
    matching.truncate(limit);
    Json(json!({ "object": "list", "data": matching, "has_more": has_more, "url": "/v1/events" })).into_response()
}
