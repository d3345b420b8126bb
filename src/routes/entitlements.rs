//! `GET /entitlements`: what the caller holds now: the credit balance (available minus what is
//! owed, so negative when a refund or dispute took back credits already spent) and the
//! entitlements with their status, as `holdings` reads them.

use axum::{Json, extract::State};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{
    auth::AuthUser,
    credits,
    error::AppError,
    holdings::{self, EntitlementView},
    openapi::{DatabaseErrors, Unauthorized},
    state::AppState,
};

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EntitlementsResponse {
    user_id: String,
    credits: i64,
    /// True when clawbacks took the balance below zero: the user owes credits.
    credits_overdrawn: bool,
    entitlements: Vec<EntitlementView>,
}

#[utoipa::path(
    get,
    path = "/entitlements",
    tag = "user",
    security(("userToken" = [])),
    responses(
        (status = 200, description = "The caller's credits and entitlements now.", body = EntitlementsResponse),
        (status = 401, response = Unauthorized),
        DatabaseErrors,
    )
)]
pub async fn entitlements(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<Json<EntitlementsResponse>, AppError> {
    let balance = credits::balance(&state.db, &user.user_id).await?;
    let entitlements = holdings::entitlements(&state.db, &user.user_id, state.config.entitlement_grace).await?;
    Ok(Json(EntitlementsResponse {
        user_id: user.user_id,
        credits: balance.available - balance.overdrawn,
        credits_overdrawn: balance.overdrawn > 0,
        entitlements,
    }))
}
