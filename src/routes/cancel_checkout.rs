//! `POST /cancel-checkout`: the buyer gave up (the hosted page's back link). The open session is
//! expired at Stripe so it cannot be paid later from a forgotten tab; the order becomes `canceled`
//! when Stripe's `checkout.session.expired` webhook arrives, like every other status change.

use axum::{Json, extract::State, http::StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{auth::AuthUser, checkout, error::AppError, extract::AppJson, state::AppState};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CancelRequest {
    order_id: Uuid,
}

pub async fn cancel_checkout(
    State(state): State<AppState>,
    user: AuthUser,
    AppJson(request): AppJson<CancelRequest>,
) -> Result<(StatusCode, Json<Value>), AppError> {
    checkout::cancel_checkout(&state.db, &state.stripe, &user.user_id, request.order_id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "orderId": request.order_id, "status": "pending" })),
    ))
}
