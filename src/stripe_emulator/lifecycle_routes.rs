//! The emulator's read endpoints for the payment lifecycle: `GET /v1/subscriptions/{id}`,
//! `GET /v1/invoices/{id}` (with `expand[]=payments`), and the
//! event list (`GET /v1/events`, `GET /v1/events/{id}`) in Stripe's list shape, newest first, with
//! `limit`, `starting_after`, `ending_before`, `created[gte]` and `types[]`.

use std::collections::BTreeMap;

use axum::{
    Json,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use super::{RecordedRequest, StripeEmulator, billing, objects};

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

    // Newest first, as Stripe lists; events are recorded oldest first.
    let mut matching: Vec<Value> = emulator
        .lock()
        .events
        .iter()
        .rev()
        .filter(|e| types.is_empty() || types.iter().any(|t| e["type"] == *t))
        .filter(|e| created_gte.is_none_or(|gte| e["created"].as_i64().unwrap_or_default() >= gte))
        .cloned()
        .collect();
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
