//! `GET /entitlements`: what the caller holds now: the credit balance (the ledger's sum, negative
//! when a refund or dispute took back credits already spent) and the entitlements with their status.
//! A subscription's entitlement grants until its period end plus the grace (just the period end
//! once it is set to cancel); past that it reads `expired` until Stripe tells us more.

use axum::{Json, extract::State};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::{app::AppState, auth::AuthUser, db, error::AppError};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EntitlementsResponse {
    user_id: String,
    credits: i64,
    /// True when clawbacks took the balance below zero: the user owes credits.
    credits_overdrawn: bool,
    entitlements: Vec<Entitlement>,
}

#[derive(Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
struct Entitlement {
    key: String,
    status: String,
    /// Whether it grants access now.
    active: bool,
    current_period_end: Option<DateTime<Utc>>,
    cancel_at_period_end: bool,
}

pub async fn entitlements(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<Json<EntitlementsResponse>, AppError> {
    let (credits,): (i64,) = db::retry_idempotent(&state.db, || {
        sqlx::query_as("select coalesce(sum(delta), 0)::bigint from credit_ledger where user_id = $1")
            .bind(&user.user_id)
            .fetch_one(&state.db)
    })
    .await?;
    let entitlements = db::retry_idempotent(&state.db, || {
        sqlx::query_as(
            "select key, case when lapsed then 'expired' else status end as status,
                status in ('active', 'past_due') and not lapsed as active,
                current_period_end, cancel_at_period_end
         from (
             select *, status in ('active', 'past_due') and current_period_end is not null
                       and now() >= current_period_end
                           + case when cancel_at_period_end then interval '0' else make_interval(secs => $2) end
                       as lapsed
             from entitlements where user_id = $1
         ) e
         order by key",
        )
        .bind(&user.user_id)
        .bind(state.config.entitlement_grace.as_secs_f64())
        .fetch_all(&state.db)
    })
    .await?;
    Ok(Json(EntitlementsResponse {
        user_id: user.user_id,
        credits,
        credits_overdrawn: credits < 0,
        entitlements,
    }))
}
