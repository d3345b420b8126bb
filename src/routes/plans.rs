//! `GET /plans`: the public catalog, for the frontend's plan picker.

use axum::{Json, extract::State};
use serde_json::{Value, json};

use crate::{db, error::AppError, state::AppState, store::plans::list_active_plans};

pub async fn plans(State(state): State<AppState>) -> Result<Json<Value>, AppError> {
    let plans = db::retry_idempotent(&state.db, || list_active_plans(&state.db)).await?;
    Ok(Json(json!({ "plans": plans })))
}
