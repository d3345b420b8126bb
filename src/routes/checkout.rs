//! `POST /checkout-session`: opens a purchase (`checkout::open_checkout`) for the signed-in user.

use axum::{Json, extract::State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    auth::AuthUser,
    checkout::{CheckoutContext, open_checkout},
    error::AppError,
    extract::AppJson,
    openapi::{BadGateway, Conflict, DatabaseErrors, JsonBodyErrors, NotFound, TooManyRequests, Unauthorized},
    state::AppState,
};

/// Only the plan is read: amounts, prices or currencies a client sends are ignored.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckoutSessionRequest {
    /// One of `GET /plans`' ids.
    #[schema(example = "credits_100")]
    plan_id: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckoutSessionResponse {
    order_id: Uuid,
    /// Stripe's hosted page, where the buyer pays.
    checkout_url: String,
}

#[utoipa::path(
    post,
    path = "/checkout-session",
    tag = "user",
    security(("userToken" = [])),
    request_body = CheckoutSessionRequest,
    responses(
        (status = 200, description = "An order is opened; send the buyer to `checkoutUrl`.", body = CheckoutSessionResponse),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 429, response = TooManyRequests),
        (status = 502, response = BadGateway),
        JsonBodyErrors,
        DatabaseErrors,
    )
)]
pub async fn create_checkout(
    State(state): State<AppState>,
    user: AuthUser,
    AppJson(request): AppJson<CheckoutSessionRequest>,
) -> Result<Json<CheckoutSessionResponse>, AppError> {
    let ctx = CheckoutContext {
        db: &state.db,
        stripe: &state.stripe,
        limiter: &state.checkout_limiter,
        app_base_url: &state.config.app_base_url,
        entitlement_grace: state.config.entitlement_grace,
        automatic_tax: state.config.automatic_tax,
        livemode: state.config.stripe.mode().livemode(),
    };
    let opened = open_checkout(&ctx, &user.user_id, &request.plan_id).await?;
    Ok(Json(CheckoutSessionResponse {
        order_id: opened.order_id,
        checkout_url: opened.checkout_url,
    }))
}
