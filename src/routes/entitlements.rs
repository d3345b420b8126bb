//! `GET /entitlements`: what the caller holds now: the credit balance (the ledger's sum) and the
//! entitlements with their status.

use axum::{Json, extract::State};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::{app::AppState, auth::AuthUser, error::AppError};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EntitlementsResponse {
    user_id: String,
    credits: i64,
    entitlements: Vec<Entitlement>,
}

#[derive(Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
struct Entitlement {
    key: String,
    status: String,
    current_period_end: Option<DateTime<Utc>>,
}

pub async fn entitlements(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<Json<EntitlementsResponse>, AppError> {
    let (credits,): (i64,) =
        sqlx::query_as("select coalesce(sum(delta), 0)::bigint from credit_ledger where user_id = $1")
            .bind(&user.user_id)
            .fetch_one(&state.db)
            .await?;
    let entitlements =
        sqlx::query_as("select key, status, current_period_end from entitlements where user_id = $1 order by key")
            .bind(&user.user_id)
            .fetch_all(&state.db)
            .await?;
    Ok(Json(EntitlementsResponse {
        user_id: user.user_id,
        credits,
        entitlements,
    }))
}
