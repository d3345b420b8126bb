//! `POST /cancel-checkout`: the buyer gave up (the hosted page's back link). The open session is
//! expired at Stripe so it cannot be paid later from a forgotten tab; the order becomes `canceled`
//! when Stripe's `checkout.session.expired` webhook arrives, like every other status change.

use axum::{Json, extract::State, http::StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use stripe::StripeError;
use uuid::Uuid;

use crate::{
    auth::AuthUser,
    db,
    error::AppError,
    extract::AppJson,
    orders::OrderStatus,
    state::AppState,
    store::orders,
    stripe::{ProviderError, expire_checkout_session},
};

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
    let order = db::retry_idempotent(&state.db, || {
        orders::owned_checkout(&state.db, request.order_id, &user.user_id)
    })
    .await?
    .ok_or(AppError::NotFound {
        code: "order_not_found",
        message: "No order with that id belongs to you.",
    })?;
    let (OrderStatus::Pending, Some(session_id)) = (order.status, order.session_id) else {
        return Err(not_cancelable());
    };
    match expire_checkout_session(&state.stripe, &session_id).await {
        Ok(()) => Ok((
            StatusCode::ACCEPTED,
            Json(json!({ "orderId": request.order_id, "status": "pending" })),
        )),
        // Stripe refuses to expire a session that completed meanwhile (the payment wins), and does
        // not know one it never kept (e.g. the emulator after a restart): neither can be canceled.
        Err(ProviderError::Stripe(StripeError::Stripe(_, 400 | 404))) => Err(not_cancelable()),
        Err(err) => Err(AppError::PaymentProvider(err)),
    }
}

fn not_cancelable() -> AppError {
    AppError::Conflict {
        code: "order_not_cancelable",
        message: "Only a pending checkout can be canceled.",
    }
}
