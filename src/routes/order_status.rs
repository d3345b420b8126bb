//! `POST /order-status`: what the return page polls. It reads the order only as its owner sees it:
//! someone else's order and a missing one are the same 404, so ids cannot be probed. A pending
//! order whose webhook is late is checked at Stripe (rate-limited; see `reconcile::return_page`).
//!
//! With `waitSeconds`, a `pending` order is a long-poll: the request is held until the order's
//! status changes (woken by `order_events`) or the wait ends, then answers as usual. The page learns
//! "paid" right after the commit without asking every second.

use std::time::Duration;

use axum::{Json, extract::State};
use serde::Deserialize;
use tokio::time::Instant;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    auth::AuthUser,
    error::AppError,
    extract::AppJson,
    openapi::{BadGateway, DatabaseErrors, JsonBodyErrors, NotFound, Unauthorized},
    orders::{OrderStatus, OrderView},
    reconcile::return_page::sync_pending_order,
    state::AppState,
};

/// Exactly one of `orderId` or `sessionId`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderStatusRequest {
    #[schema(format = Uuid)]
    order_id: Option<String>,
    /// Stripe's Checkout Session id, as the return page's URL carries it.
    session_id: Option<String>,
    /// Hold a `pending` order's answer until its status changes, at most this long.
    // Signed so that a negative number is our 400, not serde's "invalid value".
    #[schema(minimum = 0, maximum = 25)]
    wait_seconds: Option<i64>,
}

enum OrderKey {
    Order(Uuid),
    Session(String),
}

/// The longest a request may be held; below the app's request timeout.
pub const MAX_WAIT_SECONDS: i64 = 25;
// The document's `maximum` for `waitSeconds` (an attribute takes only a literal).
const _: () = assert!(MAX_WAIT_SECONDS == 25);

#[utoipa::path(
    post,
    path = "/order-status",
    tag = "user",
    security(("userToken" = [])),
    request_body = OrderStatusRequest,
    responses(
        (status = 200, description = "The order, as its owner sees it.", body = OrderView),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 502, response = BadGateway),
        JsonBodyErrors,
        DatabaseErrors,
    )
)]
pub async fn order_status(
    State(state): State<AppState>,
    user: AuthUser,
    AppJson(request): AppJson<OrderStatusRequest>,
) -> Result<Json<OrderView>, AppError> {
    let wait = wait_duration(request.wait_seconds)?;
    let key = order_key(request.order_id, request.session_id)?;
    let mut order = read_settled_order(&state, &user, &key).await?;
    if order.status != OrderStatus::Pending || wait.is_zero() {
        return Ok(Json(order));
    }

    let deadline = Instant::now() + wait;
    let _held = state.metrics.long_poll_held();
    let mut watch = state.order_events.watch(order.order_id);
    loop {
        // Read after subscribing: a commit between the first read and `watch` still counts.
        order = read_settled_order(&state, &user, &OrderKey::Order(order.order_id)).await?;
        let now = Instant::now();
        if order.status != OrderStatus::Pending || now >= deadline || state.order_events.is_stopping() {
            return Ok(Json(order));
        }
        // Besides the notification, the row is re-read now and then: a notification lost without
        // the listener noticing then delays the answer by that much, not until the wait ends.
        let nap = (deadline - now).min(state.config.order_status_reread);
        let _ = tokio::time::timeout(nap, watch.changed()).await;
    }
}

/// Reads the order; a pending one whose webhook is late is first checked at Stripe, which at most
/// once per interval fulfils it through the webhook's own path.
async fn read_settled_order(state: &AppState, user: &AuthUser, key: &OrderKey) -> Result<OrderView, AppError> {
    let order = read_order(state, user, key).await?;
    if order.status == OrderStatus::Pending
        && sync_pending_order(&state.db, &state.stripe, &state.stripe_sync_limit, order.order_id).await?
    {
        return read_order(state, user, key).await;
    }
    Ok(order)
}

async fn read_order(state: &AppState, user: &AuthUser, key: &OrderKey) -> Result<OrderView, AppError> {
    let order = match key {
        OrderKey::Order(id) => state.order_lookup.find(*id, &user.user_id).await?,
        OrderKey::Session(id) => state.order_lookup.find_by_session(id, &user.user_id).await?,
    };
    order.ok_or(AppError::NotFound {
        code: "order_not_found",
        message: "No order with that id belongs to you.",
    })
}

fn wait_duration(wait_seconds: Option<i64>) -> Result<Duration, AppError> {
    match wait_seconds {
        None => Ok(Duration::ZERO),
        Some(seconds @ 0..=MAX_WAIT_SECONDS) => Ok(Duration::from_secs(seconds.unsigned_abs())),
        Some(_) => Err(AppError::bad_request(
            "invalid_wait_seconds",
            format!("waitSeconds must be a whole number from 0 to {MAX_WAIT_SECONDS}."),
        )),
    }
}

fn order_key(order_id: Option<String>, session_id: Option<String>) -> Result<OrderKey, AppError> {
    match (order_id, session_id) {
        (Some(order_id), None) => Uuid::parse_str(order_id.trim())
            .map(OrderKey::Order)
            .map_err(|_| AppError::bad_request("invalid_order_id", "orderId must be a UUID.")),
        (None, Some(session_id)) if !session_id.trim().is_empty() => {
            Ok(OrderKey::Session(session_id.trim().to_owned()))
        }
        _ => Err(AppError::bad_request(
            "invalid_body",
            "Send exactly one of orderId or sessionId.",
        )),
    }
}
