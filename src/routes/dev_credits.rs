//! `GET /dev/credits` and `POST /dev/credits/use`: the demo shop's view of the signed-in user's
//! credits, grant by grant, and a button that spends 10 of them. Mounted only in emulator mode,
//! beside `/dev/token`: a real frontend never spends on its own behalf, its backend calls
//! `POST /v1/usage` with an API key. Here the buyer's dev token stands in for that backend, and the
//! spend goes through the same domain path `/v1/usage` takes.

use axum::{Json, extract::State};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    auth::AuthUser,
    credits,
    error::AppError,
    openapi::{DatabaseErrors, PaymentRequired, Unauthorized},
    state::AppState,
};

/// What one click of "Use 10 credits" spends.
pub const DEMO_USAGE_CREDITS: i64 = 10;

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DemoCreditsResponse {
    user_id: String,
    available: i64,
    reserved: i64,
    overdrawn: i64,
    /// In the order they are spent: the one expiring first, then the oldest.
    grants: Vec<DemoGrant>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct DemoGrant {
    source: &'static str,
    granted: i64,
    remaining: i64,
    expires_at: Option<DateTime<Utc>>,
}

#[utoipa::path(
    get,
    path = "/dev/credits",
    tag = "dev",
    security(("userToken" = [])),
    responses(
        (status = 200, description = "The caller's credits, grant by grant (emulator mode only).", body = DemoCreditsResponse),
        (status = 401, response = Unauthorized),
        DatabaseErrors,
    )
)]
pub async fn demo_credits(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<Json<DemoCreditsResponse>, AppError> {
    // The balance first: it writes any expiry that fell due, so the grants read after it are the
    // ones that can still be spent.
    let balance = credits::balance(&state.db, &user.user_id).await?;
    let grants = credits::spendable_grants(&state.db, &user.user_id)
        .await?
        .into_iter()
        .map(|grant| DemoGrant {
            source: grant.source.as_str(),
            granted: grant.granted,
            remaining: grant.remaining,
            expires_at: grant.expires_at,
        })
        .collect();
    Ok(Json(DemoCreditsResponse {
        user_id: user.user_id,
        available: balance.available,
        reserved: balance.reserved,
        overdrawn: balance.overdrawn,
        grants,
    }))
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DemoUsageResponse {
    usage_id: Uuid,
    credits: i64,
    available: i64,
}

/// Each click is a new use, so each gets a new idempotency key (an app retrying one job would send
/// that job's key again). Not enough credits: 402 `insufficient_credits`, nothing spent.
#[utoipa::path(
    post,
    path = "/dev/credits/use",
    tag = "dev",
    security(("userToken" = [])),
    responses(
        (status = 200, description = "10 credits spent (emulator mode only).", body = DemoUsageResponse),
        (status = 401, response = Unauthorized),
        (status = 402, response = PaymentRequired),
        DatabaseErrors,
    )
)]
pub async fn use_demo_credits(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<Json<DemoUsageResponse>, AppError> {
    let spent = credits::record_usage(
        &state.db,
        &state.debit_gate,
        &state.wakeups,
        credits::UsageRequest {
            user_id: user.user_id,
            credits: DEMO_USAGE_CREDITS,
            idempotency_key: format!("demo-{}", Uuid::new_v4()),
            description: Some("demo shop: Use 10 credits".to_owned()),
            metadata: Some(json!({ "source": "demo_shop" })),
        },
    )
    .await?;
    Ok(Json(DemoUsageResponse {
        usage_id: spent.id,
        credits: spent.credits,
        available: spent.available,
    }))
}
