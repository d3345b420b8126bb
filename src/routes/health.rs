//! `GET /healthz`: healthy means the database answers, since nothing works without it.

use axum::{Json, extract::State};
use serde_json::{Value, json};

use crate::{db, error::AppError, state::AppState, store};

pub async fn healthz(State(state): State<AppState>) -> Result<Json<Value>, AppError> {
    db::retry_idempotent(&state.db, || store::database::ping(&state.db)).await?;
    Ok(Json(json!({ "status": "ok" })))
}
