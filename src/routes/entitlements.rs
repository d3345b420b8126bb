//! `GET /entitlements`: what the caller holds now: the credit balance (the ledger's sum, negative
//! when a refund or dispute took back credits already spent) and the entitlements with their status.
//! A subscription's entitlement grants until its period end plus the grace (just the period end
//! once it is set to cancel); past that it reads `expired` until Stripe tells us more.

use std::time::Duration;

use axum::{Json, extract::State};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::{
    auth::AuthUser,
    db, entitlement,
    error::AppError,
    state::AppState,
    store::{credit_ledger, entitlements},
};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EntitlementsResponse {
    user_id: String,
    credits: i64,
    /// True when clawbacks took the balance below zero: the user owes credits.
    credits_overdrawn: bool,
    entitlements: Vec<Entitlement>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Entitlement {
    key: String,
    status: String,
    /// Whether it grants access now.
    active: bool,
    current_period_end: Option<DateTime<Utc>>,
    cancel_at_period_end: bool,
}

impl Entitlement {
    fn now(held: entitlements::Held, now: DateTime<Utc>, grace: Duration) -> Self {
        let access = entitlement::access(
            held.status,
            held.current_period_end,
            held.cancel_at_period_end,
            now,
            grace,
        );
        Self {
            key: held.key,
            status: if access.lapsed { "expired" } else { held.status.as_str() }.to_owned(),
            active: access.active,
            current_period_end: held.current_period_end,
            cancel_at_period_end: held.cancel_at_period_end,
        }
    }
}

pub async fn entitlements(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<Json<EntitlementsResponse>, AppError> {
    let credits = db::retry_idempotent(&state.db, || credit_ledger::user_balance(&state.db, &user.user_id)).await?;
    let grace = state.config.entitlement_grace;
    let now = Utc::now();
    let entitlements = db::retry_idempotent(&state.db, || entitlements::held(&state.db, &user.user_id))
        .await?
        .into_iter()
        .map(|held| Entitlement::now(held, now, grace))
        .collect();
    Ok(Json(EntitlementsResponse {
        user_id: user.user_id,
        credits,
        credits_overdrawn: credits < 0,
        entitlements,
    }))
}
