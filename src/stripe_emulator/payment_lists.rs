//! The emulator's lists of a payment's charges, refunds and disputes (`GET /v1/charges`,
//! `/v1/refunds`, `/v1/disputes`, filtered by `payment_intent` or `charge`), which the drift check
//! reads to compare what we hold with what Stripe holds now. Newest first, one page (the service
//! asks for one payment's objects, never more than a page).

use axum::{
    Json,
    extract::{Query, State},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use super::{
    StripeEmulator,
    errors::ApiError,
    event_list::{DEFAULT_LIMIT, MAX_LIMIT},
    params::{Params, Shape},
};

const BY_PAYMENT: &[(&str, Shape)] = &[
    ("charge", Shape::Str),
    ("ending_before", Shape::Str),
    ("expand", Shape::List(&Shape::Str)),
    ("limit", Shape::Int { min: 1 }),
    ("payment_intent", Shape::Str),
    ("starting_after", Shape::Str),
];
/// `GET /v1/charges` takes no `charge` filter (it has `customer`, which nothing here sends).
const CHARGES: &[(&str, Shape)] = &[
    ("customer", Shape::Str),
    ("ending_before", Shape::Str),
    ("expand", Shape::List(&Shape::Str)),
    ("limit", Shape::Int { min: 1 }),
    ("payment_intent", Shape::Str),
    ("starting_after", Shape::Str),
];

pub async fn list_charges(
    State(emulator): State<StripeEmulator>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    emulator.record("GET", "/v1/charges", &pairs, None);
    let objects = emulator.lock().billing.charges.values().cloned().collect();
    answer("/v1/charges", CHARGES, &pairs, objects, |_, _| None)
}

pub async fn list_refunds(
    State(emulator): State<StripeEmulator>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    emulator.record("GET", "/v1/refunds", &pairs, None);
    let (objects, charges) = {
        let state = emulator.lock();
        let refunds: Vec<Value> = state.billing.refunds.values().cloned().collect();
        (refunds, state.billing.charges.clone())
    };
    // A refund may not name its payment intent (Stripe's own fixture does not); Stripe still finds
    // it by its charge's.
    answer("/v1/refunds", BY_PAYMENT, &pairs, objects, move |refund, _| {
        let charge = refund["charge"].as_str()?;
        charges.get(charge)?["payment_intent"].as_str().map(str::to_owned)
    })
}

pub async fn list_disputes(
    State(emulator): State<StripeEmulator>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    emulator.record("GET", "/v1/disputes", &pairs, None);
    let objects = emulator.lock().billing.disputes.values().cloned().collect();
    answer("/v1/disputes", BY_PAYMENT, &pairs, objects, |_, _| None)
}

/// Filters, sorts and answers one list. `payment_intent_of` finds the payment intent of an object
/// that does not carry it.
fn answer(
    url: &str,
    shape: &'static [(&'static str, Shape)],
    pairs: &[(String, String)],
    mut objects: Vec<Value>,
    payment_intent_of: impl Fn(&Value, &str) -> Option<String>,
) -> Response {
    let params = Params::new(pairs);
    if let Err(err) = params.check(shape) {
        return err.into_response();
    }
    let limit = params.int("limit").unwrap_or(DEFAULT_LIMIT);
    if limit > MAX_LIMIT {
        return ApiError::integer_out_of_range(
            "limit",
            format!("This value must be less than or equal to {MAX_LIMIT}."),
        )
        .into_response();
    }
    if let Some(payment_intent) = params.get("payment_intent") {
        objects.retain(|object| {
            object["payment_intent"].as_str() == Some(payment_intent)
                || payment_intent_of(object, payment_intent).as_deref() == Some(payment_intent)
        });
    }
    if let Some(charge) = params.get("charge") {
        objects.retain(|object| object["charge"].as_str() == Some(charge));
    }
    // Newest first; ties by id, so that a page is the same on every call.
    objects.sort_by(|a, b| {
        let key = |o: &Value| {
            (
                o["created"].as_i64().unwrap_or_default(),
                o["id"].as_str().unwrap_or("").to_owned(),
            )
        };
        key(b).cmp(&key(a))
    });
    let has_more = objects.len() > limit as usize;
    objects.truncate(limit as usize);
    Json(json!({"object": "list", "data": objects, "has_more": has_more, "url": url})).into_response()
}
