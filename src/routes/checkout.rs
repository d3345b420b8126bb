//! `POST /checkout-session`: opens a purchase. The order is written first, so every Checkout
//! Session Stripe knows of has an order here to fulfil; only then is Stripe asked for the session.

use axum::{Json, extract::State};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    auth::AuthUser,
    catalog::{Plan, PlanKind, find_active_plan},
    db, entitlement,
    error::AppError,
    extract::AppJson,
    fulfillment::end_pending_order,
    orders::OrderStatus,
    state::AppState,
    store::{entitlements, orders},
    stripe::{CheckoutRequest, create_checkout_session},
    subscription_checkout::{checkout_in_progress, close_open_checkout, is_open_checkout_conflict},
};

/// Only the plan is read: amounts, prices or currencies a client sends are ignored.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckoutSessionRequest {
    plan_id: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckoutSessionResponse {
    order_id: Uuid,
    checkout_url: String,
}

pub async fn create_checkout(
    State(state): State<AppState>,
    user: AuthUser,
    AppJson(request): AppJson<CheckoutSessionRequest>,
) -> Result<Json<CheckoutSessionResponse>, AppError> {
    // The plan is read first on the connection the order is then written on: once that read
    // answered, the connection is alive.
    let (mut conn, plan) = db::retry_idempotent(&state.db, || async {
        let mut conn = state.db.acquire().await?;
        let plan = find_active_plan(&mut conn, &request.plan_id).await?;
        Ok((conn, plan))
    })
    .await?;
    let plan = plan.ok_or(AppError::NotFound {
        code: "plan_not_found",
        message: "No active plan has that id.",
    })?;
    if plan.kind == PlanKind::Subscription
        && holds_live_subscription(
            &mut conn,
            &user.user_id,
            plan.entitlement.as_deref(),
            state.config.entitlement_grace,
        )
        .await?
    {
        // A second subscription would bill twice for one entitlement.
        return Err(AppError::Conflict {
            code: "already_subscribed",
            message: "You already hold this plan's entitlement through an active subscription.",
        });
    }
    // Admitted and written in one transaction, so the per-user count holds under concurrency;
    // a refusal leaves no order and asks Stripe nothing.
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    state.checkout_limiter.admit(&mut tx, &user.user_id).await?;
    let inserted = match insert_pending_order(&mut tx, &user, &plan).await {
        Ok(order_id) => tx.commit().await.map(|()| order_id),
        // Rolled back; an open checkout's conflict is handled below, outside it.
        Err(err) => {
            drop(tx);
            Err(err)
        }
    };
    // Not held across the calls to Stripe, which may take seconds.
    drop(conn);
    let order_id = match inserted {
        Err(err) if is_open_checkout_conflict(&err) => reopen_subscription_checkout(&state, &user, &plan).await?,
        inserted => inserted?,
    };

    let checkout = CheckoutRequest {
        order_id,
        user_id: &user.user_id,
        plan: &plan,
        app_base_url: &state.config.app_base_url,
    };
    let session = match create_checkout_session(&state.stripe, checkout).await {
        Ok(session) => session,
        Err(err) => {
            end_pending_order(&state.db, order_id, OrderStatus::Failed).await?;
            return Err(AppError::PaymentProvider(err));
        }
    };

    // Stripe has the session now: a connection that died in the pool meanwhile must not turn this
    // into an error the buyer can only answer by starting over.
    db::retry_idempotent(&state.db, || orders::set_session(&state.db, order_id, &session.id)).await?;
    tracing::info!(%order_id, plan_id = %plan.id, session_id = %session.id, "checkout session created");
    Ok(Json(CheckoutSessionResponse {
        order_id,
        checkout_url: session.url,
    }))
}

/// The user already has an open checkout for this subscription (see `subscription_checkout`):
/// it is closed at Stripe, and the order is written again.
async fn reopen_subscription_checkout(state: &AppState, user: &AuthUser, plan: &Plan) -> Result<Uuid, AppError> {
    let entitlement = plan.entitlement.as_deref().unwrap_or_default();
    close_open_checkout(&state.db, &state.stripe, &user.user_id, entitlement).await?;
    let mut conn = state.db.acquire().await?;
    insert_pending_order(&mut conn, user, plan).await.map_err(|err| {
        // Yet another checkout for it took the place first.
        if is_open_checkout_conflict(&err) {
            checkout_in_progress().into()
        } else {
            err.into()
        }
    })
}

async fn insert_pending_order(
    conn: &mut sqlx::PgConnection,
    user: &AuthUser,
    plan: &Plan,
) -> Result<Uuid, sqlx::Error> {
    let order = orders::NewOrder {
        id: Uuid::new_v4(),
        user_id: &user.user_id,
        plan_id: &plan.id,
        amount: plan.amount,
        currency: &plan.currency,
        credits: plan.credits,
        entitlement: plan.entitlement.as_deref(),
        subscription_entitlement: match plan.kind {
            PlanKind::Subscription => plan.entitlement.as_deref(),
            PlanKind::OneTime => None,
        },
    };
    orders::insert_pending(conn, &order).await?;
    Ok(order.id)
}

/// Whether the user already has the plan's entitlement through a subscription that grants it now:
/// a second subscription would bill twice for one entitlement.
async fn holds_live_subscription(
    conn: &mut sqlx::PgConnection,
    user_id: &str,
    key: Option<&str>,
    grace: std::time::Duration,
) -> Result<bool, sqlx::Error> {
    let Some(key) = key else {
        return Ok(false);
    };
    let held = entitlements::subscribed(conn, user_id, key).await?;
    Ok(held.is_some_and(|held| {
        entitlement::access(
            held.status,
            held.current_period_end,
            held.cancel_at_period_end,
            chrono::Utc::now(),
            grace,
        )
        .active
    }))
}
