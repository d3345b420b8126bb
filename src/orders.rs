//! The order: our record of one purchase attempt, created before Stripe hears of it.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

/// Where an order is in its life. Statuses only move forward: `paid` is final, and `failed` or
/// `canceled` can only become `paid` (money that arrived always wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum OrderStatus {
    Pending,
    Paid,
    Failed,
    Canceled,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct OrderView {
    #[sqlx(rename = "id")]
    pub order_id: Uuid,
    pub status: OrderStatus,
    pub plan_id: String,
    pub amount: i64,
    pub currency: String,
    pub created_at: DateTime<Utc>,
    pub paid_at: Option<DateTime<Utc>>,
}
