//! `POST /subscription/change {"planId"}` (user): moves the user's running subscription to another
//! subscription plan through Stripe (`plan_change`), answering the subscription as Stripe left it.

use axum::{Json, extract::State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    auth::AuthUser,
    error::AppError,
    extract::AppJson,
    openapi::{BadGateway, Conflict, DatabaseErrors, JsonBodyErrors, NotFound, Unauthorized},
    plan_change,
    state::AppState,
};

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChangeRequest {
    /// A subscription plan of the catalog, other than the subscription's own.
    #[schema(example = "team_monthly")]
    plan_id: String,
}

/// The subscription as Stripe answered the change. What the user holds follows when Stripe's
/// `customer.subscription.updated` arrives, as for every other change.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChangeResponse {
    subscription_id: String,
    plan_id: String,
    /// Stripe's status (`active`, `trialing`, `past_due`, …).
    status: String,
    current_period_end: Option<DateTime<Utc>>,
    cancel_at_period_end: bool,
}

#[utoipa::path(
    post,
    path = "/subscription/change",
    tag = "user",
    security(("userToken" = [])),
    request_body = ChangeRequest,
    responses(
        (status = 200, description = "Stripe moved the subscription to the plan, with proration invoiced at once.", body = ChangeResponse),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 502, response = BadGateway),
        JsonBodyErrors,
        DatabaseErrors,
    )
)]
pub async fn change_subscription(
    State(state): State<AppState>,
    user: AuthUser,
    AppJson(request): AppJson<ChangeRequest>,
) -> Result<Json<ChangeResponse>, AppError> {
    let changed = plan_change::change_plan(&state.db, &state.stripe, &user.user_id, &request.plan_id).await?;
    Ok(Json(ChangeResponse {
        current_period_end: changed
            .current_period_end
            .and_then(|secs| DateTime::<Utc>::from_timestamp(secs, 0)),
        subscription_id: changed.subscription_id,
        plan_id: changed.plan_id,
        status: changed.status,
        cancel_at_period_end: changed.cancel_at_period_end,
    }))
}
