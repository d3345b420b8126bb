//! `POST /billing-portal`: a link to Stripe's customer portal for the signed-in user's customer
//! (`customers::open_billing_portal`), where they cancel, resume or update their card.

use axum::{Json, body::Bytes, extract::State};
use serde::{Deserialize, Serialize};

use crate::{auth::AuthUser, customers::open_billing_portal, error::AppError, extract::AppJson, state::AppState};

/// Nothing is read from the body: `{}`, or none at all. Anything but an object is refused.
#[derive(Deserialize)]
pub struct BillingPortalRequest {}

#[derive(Serialize)]
pub struct BillingPortalResponse {
    url: String,
}

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
