//! `POST /billing-portal`: a link to Stripe's customer portal for the signed-in user's customer
//! (`customers::open_billing_portal`), where they cancel, resume or update their card.

use axum::{Json, body::Bytes, extract::State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    auth::AuthUser,
    customers::open_billing_portal,
    error::AppError,
    extract::AppJson,
    openapi::{BadGateway, BadRequest, DatabaseErrors, NotFound, PayloadTooLarge, Unauthorized},
    state::AppState,
};

/// Nothing is read from the body: `{}`, or none at all. Anything but an object is refused.
#[derive(Deserialize, ToSchema)]
pub struct BillingPortalRequest {}

/// Where to send the user: a customer-portal session that returns to the app. A user who never
/// checked out has no Stripe customer: 404 `no_billing_account`.
#[derive(Serialize, ToSchema)]
pub struct BillingPortalResponse {
    url: String,
}

#[utoipa::path(
    post,
    path = "/billing-portal",
    tag = "user",
    security(("userToken" = [])),
    request_body(content = Option<BillingPortalRequest>, description = "May be empty."),
    responses(
        (status = 200, description = "A customer-portal session for the user's Stripe customer.", body = BillingPortalResponse),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 413, response = PayloadTooLarge),
        (status = 502, response = BadGateway),
        DatabaseErrors,
    )
)]
pub async fn billing_portal(
    State(state): State<AppState>,
    user: AuthUser,
    body: Bytes,
) -> Result<Json<BillingPortalResponse>, AppError> {
    if !body.is_empty() {
        AppJson::<BillingPortalRequest>::from_bytes(&body)?;
    }
    let url = open_billing_portal(
        &state.db,
        &state.stripe,
        &user.user_id,
        state.config.stripe.mode().livemode(),
        &state.config.billing_portal_return_url,
    )
    .await?;
    Ok(Json(BillingPortalResponse { url }))
}
