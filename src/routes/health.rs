//! `GET /healthz`: healthy means the database answers, since nothing works without it.

use axum::{Json, extract::State};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{db, error::AppError, openapi::DatabaseErrors, state::AppState, store};

#[derive(Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    status: &'static str,
}

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses(
        (status = 200, description = "The service and its database answer.", body = Health),
        DatabaseErrors,
    )
)]
pub async fn healthz(State(state): State<AppState>) -> Result<Json<Health>, AppError> {
    db::retry_idempotent(&state.db, || store::database::ping(&state.db)).await?;
    Ok(Json(Health { status: "ok" }))
}
