//! `GET /plans`: the public catalog, for the frontend's plan picker.

use axum::{Json, extract::State};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{
    db, error::AppError, openapi::DatabaseErrors, plan::Plan, state::AppState, store::plans::list_active_plans,
};

#[derive(Serialize, ToSchema)]
pub struct PlansResponse {
    /// Cheapest first.
    plans: Vec<Plan>,
}

#[utoipa::path(
    get,
    path = "/plans",
    tag = "user",
    responses(
        (status = 200, description = "The plans on sale.", body = PlansResponse),
        DatabaseErrors,
    )
)]
pub async fn plans(State(state): State<AppState>) -> Result<Json<PlansResponse>, AppError> {
    let plans = db::retry_idempotent(&state.db, || list_active_plans(&state.db)).await?;
    Ok(Json(PlansResponse { plans }))
}
