//! `POST /cancel-checkout`: the buyer gave up (the hosted page's back link). The open session is
//! expired at Stripe so it cannot be paid later from a forgotten tab; the order becomes `canceled`
//! when Stripe's `checkout.session.expired` webhook arrives, like every other status change.

use axum::{Json, extract::State, http::StatusCode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    auth::AuthUser,
    checkout,
    error::AppError,
    extract::AppJson,
    openapi::{BadGateway, Conflict, DatabaseErrors, JsonBodyErrors, NotFound, Unauthorized},
    orders::OrderStatus,
    state::AppState,
};

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CancelRequest {
    order_id: Uuid,
}

/// The order stays `pending` until Stripe's `checkout.session.expired` arrives.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CancelResponse {
    order_id: Uuid,
    status: OrderStatus,
}

#[utoipa::path(
    post,
    path = "/cancel-checkout",
    tag = "user",
    security(("userToken" = [])),
    request_body = CancelRequest,
    responses(
        (status = 202, description = "The session is expired at Stripe; the order is canceled when its webhook arrives.", body = CancelResponse),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 502, response = BadGateway),
        JsonBodyErrors,
        DatabaseErrors,
    )
)]
pub async fn cancel_checkout(
    State(state): State<AppState>,
    user: AuthUser,
    AppJson(request): AppJson<CancelRequest>,
) -> Result<(StatusCode, Json<CancelResponse>), AppError> {
    checkout::cancel_checkout(&state.db, &state.stripe, &user.user_id, request.order_id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(CancelResponse {
            order_id: request.order_id,
            status: OrderStatus::Pending,
        }),
    ))
}
