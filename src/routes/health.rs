//! `GET /healthz`: healthy means the database answers, since nothing works without it.

use axum::{Json, extract::State};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{
    db,
    error::AppError,
    openapi::{InternalError, Unavailable},
    state::AppState,
    store,
};

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
        (status = 500, response = InternalError),
        (status = 503, response = Unavailable),
    )
)]
pub async fn healthz(State(state): State<AppState>) -> Result<Json<Health>, AppError> {
    db::retry_idempotent(&state.db, || store::database::ping(&state.db)).await?;
    Ok(Json(Health { status: "ok" }))
}
