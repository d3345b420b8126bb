//! The emulator's HTTP surface: the Stripe endpoints the service calls.

use std::collections::BTreeMap;

use axum::{
    Form, Json, Router,
    extract::{Path, Request, State},
    http::{HeaderMap, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde_json::Value;

use super::{RecordedRequest, StripeEmulator, lifecycle_routes, objects};

pub fn router(emulator: StripeEmulator) -> Router {
    Router::new()
        .route("/v1/checkout/sessions", post(create_session))
        .route("/v1/checkout/sessions/{id}", get(retrieve_session))
        .route("/v1/checkout/sessions/{id}/expire", post(expire_session))
        .route("/v1/subscriptions/{id}", get(lifecycle_routes::retrieve_subscription))
        .route("/v1/invoices/{id}", get(lifecycle_routes::retrieve_invoice))
        .route("/v1/events", get(lifecycle_routes::list_events))
        .route("/v1/events/{id}", get(lifecycle_routes::retrieve_event))
        .route_layer(middleware::from_fn_with_state(
            emulator.clone(),
            lifecycle_routes::inject_failures,
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

fn stripe_error(status: StatusCode, error_type: &str, message: &str, param: Option<&str>) -> Response {
    (status, Json(objects::error_body(error_type, message, param))).into_response()
}

/// Stripe refuses any request without a secret key before looking at it.
async fn require_secret_key(request: Request, next: Next) -> Response {
    let key = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match key {
        Some(key) if key.starts_with("sk_") || key.starts_with("rk_") => next.run(request).await,
        _ => stripe_error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "Invalid API Key provided.",
            None,
        ),
    }
}

async fn create_session(
    State(emulator): State<StripeEmulator>,
    headers: HeaderMap,
    Form(params): Form<Vec<(String, String)>>,
) -> Response {
    let params: BTreeMap<String, String> = params.into_iter().collect();
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
        return stripe_error(status, "api_error", "An unknown error occurred.", None);
    }
    if let Some((status, body)) = idempotency_key
        .as_ref()
        .and_then(|key| state.idempotent_responses.get(key))
    {
        return (
            StatusCode::from_u16(*status).unwrap_or(StatusCode::OK),
            Json(body.clone()),
        )
            .into_response();
    }

    let (status, body) = match objects::new_session(&params, &emulator.public_base, &mut state.next_id) {
        Ok(session) => {
            let id = session["id"].as_str().unwrap_or_default().to_owned();
            let title = params
                .get("line_items[0][price_data][product_data][name]")
                .cloned()
                .unwrap_or_else(|| "Your purchase".into());
            state.titles.insert(id.clone(), title);
            state.sessions.insert(id, session.clone());
            (StatusCode::OK, session)
        }
        Err(param) => (
            StatusCode::BAD_REQUEST,
            objects::error_body(
                "invalid_request_error",
                &format!("Missing or invalid parameter: {param}"),
                Some(&param),
            ),
        ),
    };
    if let Some(key) = idempotency_key {
        state.idempotent_responses.insert(key, (status.as_u16(), body.clone()));
    }
    (status, Json(body)).into_response()
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

async fn expire_session(State(emulator): State<StripeEmulator>, Path(id): Path<String>) -> Response {
    if emulator.session(&id).is_none() {
        return no_such_session(&id);
    }
    match emulator.expire_session(&id) {
        Some(event) => Json(event["data"]["object"].clone()).into_response(),
        None => stripe_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "Only Checkout Sessions with a status in [\"open\"] can be expired.",
            None,
        ),
    }
}

/// Stripe's answer to an endpoint it does not have (here: one the emulator does not emulate yet).
async fn unrecognized_url(request: Request) -> Response {
    let message = format!(
        "Unrecognized request URL ({}: {}). The Stripe emulator serves only the endpoints this service uses.",
        request.method(),
        request.uri().path()
    );
    stripe_error(StatusCode::NOT_FOUND, "invalid_request_error", &message, None)
}

fn no_such_session(id: &str) -> Response {
    stripe_error(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        &format!("No such checkout.session: '{id}'"),
        Some("session"),
    )
}
