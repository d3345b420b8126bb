//! `POST /order-status`: what the return page polls. It reads the order only as its owner sees it:
//! someone else's order and a missing one are the same 404, so ids cannot be probed. A pending
//! order whose webhook is late is checked at Stripe (rate-limited; see `reconcile::return_page`).

use axum::{Json, extract::State};
use serde::Deserialize;
use uuid::Uuid;

use crate::{
    app::AppState,
    auth::AuthUser,
    error::AppError,
    extract::AppJson,
    orders::{OrderStatus, OrderView},
    reconcile::return_page::sync_pending_order,
};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderStatusRequest {
    order_id: Option<String>,
    session_id: Option<String>,
}

enum OrderKey {
    Order(Uuid),
    Session(String),
}

const COLUMNS: &str = "id, status, plan_id, amount, currency, created_at, paid_at, amount_refunded";

pub async fn order_status(
    State(state): State<AppState>,
    user: AuthUser,
    AppJson(request): AppJson<OrderStatusRequest>,
) -> Result<Json<OrderView>, AppError> {
    let key = order_key(request)?;
    let mut order = find_order(&state, &user, &key).await?;
    if let Some(pending) = order.as_ref().filter(|o| o.status == OrderStatus::Pending)
        && sync_pending_order(&state, pending.order_id).await?
    {
        order = find_order(&state, &user, &key).await?;
    }
    order.map(Json).ok_or(AppError::NotFound {
        code: "order_not_found",
        message: "No order with that id belongs to you.",
    })
}

async fn find_order(state: &AppState, user: &AuthUser, key: &OrderKey) -> Result<Option<OrderView>, AppError> {
    let order = match key {
        OrderKey::Order(id) => {
            sqlx::query_as(&format!("select {COLUMNS} from orders where id = $1 and user_id = $2"))
                .bind(id)
                .bind(&user.user_id)
                .fetch_optional(&state.db)
                .await?
        }
        OrderKey::Session(id) => {
            sqlx::query_as(&format!(
                "select {COLUMNS} from orders where stripe_checkout_session_id = $1 and user_id = $2"
            ))
            .bind(id)
            .bind(&user.user_id)
            .fetch_optional(&state.db)
            .await?
        }
    };
    Ok(order)
}

fn order_key(request: OrderStatusRequest) -> Result<OrderKey, AppError> {
    match (request.order_id, request.session_id) {
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
