//! `Idempotency-Key` as Stripe honours it on POST requests: the first answer under a key is kept
//! with the parameters it was given; the same key with the same parameters gets that answer again
//! (with `Idempotent-Replayed: true`) and changes nothing, the same key with other parameters is a
//! 400 `idempotency_error`, and while the first is still being answered a second is a 409. Keys are
//! kept per method and path. A request the endpoint refused (a 4xx) or could not answer (an outage
//! a test injected) keeps nothing, so the key can be used again, as Stripe does for requests that
//! failed validation.

use axum::{
    body::{Body, Bytes, to_bytes},
    extract::{Request, State},
    http::{HeaderValue, Method, StatusCode, header::CONTENT_TYPE},
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::{RecordedRequest, StripeEmulator, errors::ApiError};

/// Larger than any request a Stripe client sends.
const MAX_BODY_BYTES: usize = 1 << 20;

/// Where a key stands: being answered, or answered.
pub enum KeyState {
    InFlight {
        params: Vec<(String, String)>,
    },
    Answered {
        params: Vec<(String, String)>,
        status: StatusCode,
        content_type: Option<HeaderValue>,
        body: Bytes,
    },
}

/// (method, path, key).
pub type Slot = (String, String, String);

pub async fn honour_idempotency_keys(State(emulator): State<StripeEmulator>, request: Request, next: Next) -> Response {
    let key = request
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let Some(key) = key.filter(|_| request.method() == Method::POST) else {
        return next.run(request).await;
    };
    let (parts, body) = request.into_parts();
    let Ok(bytes) = to_bytes(body, MAX_BODY_BYTES).await else {
        return ApiError::with_status(StatusCode::PAYLOAD_TOO_LARGE, "The request body is too large.").into_response();
    };
    let params = sorted_params(&bytes);
    let slot: Slot = (parts.method.to_string(), parts.uri.path().to_owned(), key.clone());

    {
        let mut state = emulator.lock();
        match state.idempotent.get(&slot) {
            None => {
                state.idempotent.insert(slot.clone(), KeyState::InFlight { params });
            }
            Some(KeyState::InFlight { .. }) => return ApiError::idempotency_in_use().into_response(),
            Some(KeyState::Answered { params: first, .. }) if *first != params => {
                return ApiError::idempotency_mismatch(&key).into_response();
            }
            Some(KeyState::Answered {
                status,
                content_type,
                body,
                ..
            }) => {
                let replay = replayed(*status, content_type.clone(), body.clone());
                state.requests.push(RecordedRequest {
                    method: slot.0.clone(),
                    path: slot.1.clone(),
                    params: params.into_iter().collect(),
                    idempotency_key: Some(key),
                });
                return replay;
            }
        }
    }

    let response = next.run(Request::from_parts(parts, Body::from(bytes))).await;
    let (mut parts, body) = response.into_parts();
    let body = to_bytes(body, usize::MAX).await.unwrap_or_default();
    let mut state = emulator.lock();
    match parts.status.is_success() {
        true => {
            let Some(KeyState::InFlight { params }) = state.idempotent.remove(&slot) else {
                unreachable!("only this request moves its key out of flight")
            };
            state.idempotent.insert(
                slot,
                KeyState::Answered {
                    params,
                    status: parts.status,
                    content_type: parts.headers.get(CONTENT_TYPE).cloned(),
                    body: body.clone(),
                },
            );
        }
        false => {
            state.idempotent.remove(&slot);
        }
    }
    parts.headers.remove("idempotent-replayed");
    Response::from_parts(parts, Body::from(body))
}

fn replayed(status: StatusCode, content_type: Option<HeaderValue>, body: Bytes) -> Response {
    let mut response = (status, body).into_response();
    if let Some(content_type) = content_type {
        response.headers_mut().insert(CONTENT_TYPE, content_type);
    }
    response
        .headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}

/// The form's parameters in a canonical order, so the same parameters sent in another order
/// count as the same request.
fn sorted_params(body: &[u8]) -> Vec<(String, String)> {
    let mut params: Vec<(String, String)> = url::form_urlencoded::parse(body).into_owned().collect();
    params.sort();
    params
}
