//! `POST /subscription/change {"planId"}` (user): moves the user's running subscription to another
//! subscription plan through Stripe (`plan_change`), answering the subscription as Stripe left it.

use axum::{Json, extract::State};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{auth::AuthUser, error::AppError, extract::AppJson, plan_change, state::AppState};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangeRequest {
    plan_id: String,
}

pub async fn change_subscription(
    State(state): State<AppState>,
    user: AuthUser,
    AppJson(request): AppJson<ChangeRequest>,
) -> Result<Json<Value>, AppError> {
    let changed = plan_change::change_plan(&state.db, &state.stripe, &user.user_id, &request.plan_id).await?;
    let period_end = changed
        .current_period_end
        .and_then(|secs| chrono::DateTime::<chrono::Utc>::from_timestamp(secs, 0));
    Ok(Json(json!({
        "subscriptionId": changed.subscription_id,
        "planId": changed.plan_id,
        "status": changed.status,
        "currentPeriodEnd": period_end,
        "cancelAtPeriodEnd": changed.cancel_at_period_end,
    })))
}
