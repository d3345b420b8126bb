//! The emulator's HTTP surface: the Stripe endpoints the service calls.

use std::collections::BTreeMap;

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{MethodRouter, get, post},
};
use serde_json::Value;

use super::{
    RecordedRequest, StripeEmulator, customers,
    errors::ApiError,
    event_list, idempotency, lifecycle_routes, objects,
    params::{Params, Shape},
    payment_lists, portal, products, session_request, subscription_update,
};

pub fn router(emulator: StripeEmulator) -> Router {
    Router::new()
        .route("/v1/checkout/sessions", post(create_session))
        .route("/v1/checkout/sessions/{id}", retrieve(get(retrieve_session)))
        .route("/v1/checkout/sessions/{id}/expire", post(expire_session))
        .route(
            "/v1/subscriptions/{id}",
            retrieve(get(lifecycle_routes::retrieve_subscription)).post(subscription_update::update_subscription),
        )
        .route("/v1/products", post(products::create_product))
        .route("/v1/invoices/{id}", retrieve(get(lifecycle_routes::retrieve_invoice)))
        .route("/v1/customers", post(customers::create_customer))
        .route("/v1/customers/{id}", retrieve(get(customers::retrieve_customer)))
        .route("/v1/billing_portal/sessions", post(portal::create_portal_session))
        .route("/v1/events", get(event_list::list_events))
        .route("/v1/events/{id}", retrieve(get(lifecycle_routes::retrieve_event)))
        .route("/v1/prices/{id}", retrieve(get(lifecycle_routes::retrieve_price)))
        .route("/v1/charges", get(payment_lists::list_charges))
        .route("/v1/refunds", get(payment_lists::list_refunds))
        .route("/v1/disputes", get(payment_lists::list_disputes))
        .route_layer(middleware::from_fn_with_state(
            emulator.clone(),
            lifecycle_routes::inject_failures,
        ))
        .route_layer(middleware::from_fn_with_state(
            emulator.clone(),
            idempotency::honour_idempotency_keys,
        ))
        .route_layer(middleware::from_fn(require_secret_key))
        .route_layer(middleware::from_fn_with_state(emulator.clone(), slow_down))
        .fallback(unrecognized_url)
        .with_state(emulator)
}

/// A slow Stripe, when a test asks for one: the answer is worked out after the wait, so it says
/// what the state is when it is sent.
async fn slow_down(State(emulator): State<StripeEmulator>, request: Request, next: Next) -> Response {
    let latency = emulator.lock().api_latency;
    if let Some(latency) = latency {
        tokio::time::sleep(latency).await;
    }
    next.run(request).await
}

/// Every answer names its request as Stripe's do (`Request-Id: req_…`), so a client can log it.
pub async fn stamp_request_id(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let id = format!("req_{}", &uuid::Uuid::new_v4().simple().to_string()[..14]);
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("request-id", value);
    }
    response
}

/// Stripe refuses any request without a secret key before looking at it. Like Stripe, it takes the
/// key as a bearer token or as Basic auth's user name (`curl -u sk_test_…:`, as Stripe's docs do).
async fn require_secret_key(request: Request, next: Next) -> Response {
    let header = request.headers().get("authorization").and_then(|v| v.to_str().ok());
    let key = header
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned)
        .or_else(|| {
            use base64::Engine;
            let encoded = header?.strip_prefix("Basic ")?;
            let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
            let text = String::from_utf8(decoded).ok()?;
            Some(text.split_once(':').map_or(text.as_str(), |(user, _)| user).to_owned())
        });
    match key.as_deref() {
        Some(key) if key.starts_with("sk_") || key.starts_with("rk_") => next.run(request).await,
        _ => ApiError::unauthorized().into_response(),
    }
}

async fn create_session(State(emulator): State<StripeEmulator>, headers: HeaderMap, body: Bytes) -> Response {
    let pairs = form_pairs(&body);
    let params: BTreeMap<String, String> = pairs.iter().cloned().collect();
    let idempotency_key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);

    let mut state = emulator.lock();
    state.requests.push(RecordedRequest {
        method: "POST".into(),
        path: "/v1/checkout/sessions".into(),
        params: params.clone(),
        idempotency_key: idempotency_key.clone(),
    });
    if let Some(status) = state.fail_session_creation {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return ApiError::with_status(status, "An unknown error occurred.").into_response();
    }
    let params = Params::new(&pairs);
    let request = {
        let state = &mut *state;
        let now = state.now();
        session_request::read(&params, &state.price_book, now, &mut state.next_id)
    };
    let request = match request {
        Ok(request) => request,
        // Stripe keeps no idempotent result for a request that failed validation.
        Err(err) => return err.into_response(),
    };
    let customer = match customers::session_customer(&params, &state) {
        Ok(customer) => customer,
        Err(err) => return err.into_response(),
    };
    let now = state.now();
    let mut session = objects::new_session(&request, &emulator.public_base, &params, now, &mut state.next_id);
    if let Some(customer) = customer {
        session["customer"] = customer.into();
    }
    let id = session["id"].as_str().unwrap_or_default().to_owned();
    for product in request.line_items.iter().filter_map(|line| line.product.clone()) {
        let product_id = product["id"].as_str().unwrap_or_default().to_owned();
        state.billing.products.insert(product_id, product);
    }
    state.requests_by_session.insert(id.clone(), request);
    state.sessions.insert(id, session.clone());
    Json(session).into_response()
}

async fn retrieve_session(State(emulator): State<StripeEmulator>, Path(id): Path<String>) -> Response {
    emulator.lock().requests.push(RecordedRequest {
        method: "GET".into(),
        path: format!("/v1/checkout/sessions/{id}"),
        params: BTreeMap::new(),
        idempotency_key: None,
    });
    match emulator.session(&id) {
        Some(session) => Json::<Value>(session).into_response(),
        None => no_such_session(&id),
    }
}

/// Retrieving or expiring an object takes nothing but `expand`; Stripe refuses anything else by name.
const ONLY_EXPAND: &[(&str, Shape)] = &[("expand", Shape::List(&Shape::Str))];

fn retrieve(route: MethodRouter<StripeEmulator>) -> MethodRouter<StripeEmulator> {
    route.route_layer(middleware::from_fn(query_takes_only_expand))
}

async fn query_takes_only_expand(request: Request, next: Next) -> Response {
    let pairs = form_pairs(request.uri().query().unwrap_or_default().as_bytes());
    match Params::new(&pairs).check(ONLY_EXPAND) {
        Ok(()) => next.run(request).await,
        Err(err) => err.into_response(),
    }
}

async fn expire_session(State(emulator): State<StripeEmulator>, Path(id): Path<String>, body: Bytes) -> Response {
    if let Err(err) = Params::new(&form_pairs(&body)).check(ONLY_EXPAND) {
        return err.into_response();
    }
    if emulator.session(&id).is_none() {
        return no_such_session(&id);
    }
    match emulator.expire_session(&id) {
        Some(event) => Json(event["data"]["object"].clone()).into_response(),
        None => ApiError::with_status(
            StatusCode::BAD_REQUEST,
            "Only Checkout Sessions with a status in [\"open\"] can be expired.",
        )
        .into_response(),
    }
}

/// A form body's parameters, read whatever the content type says, as Stripe reads them: a body
/// that is not a form has no parameters it knows, and is refused for what it lacks.
fn form_pairs(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

/// Stripe's answer to an endpoint it does not have (here: one the emulator does not emulate yet).
async fn unrecognized_url(request: Request) -> Response {
    let message = format!(
        "Unrecognized request URL ({}: {}). The Stripe emulator serves only the endpoints this service uses.",
        request.method(),
        request.uri().path()
    );
    ApiError::with_status(StatusCode::NOT_FOUND, &message).into_response()
}

fn no_such_session(id: &str) -> Response {
    ApiError::no_such("checkout.session", id, "session").into_response()
}
