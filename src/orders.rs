//! The order: our record of one purchase attempt, created before Stripe hears of it.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

/// Where an order is in its life. `failed` or `canceled` can only become `paid` (money that arrived
/// always wins); after `paid` the order's status follows its payment's reversals: `refunded` while
/// a full refund or a lost dispute stands, `disputed` while a dispute is open, `paid` otherwise.
/// A payment that does not match the order puts it `under_review`: nothing granted, a person
/// decides. See docs/lifecycle.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum OrderStatus {
    Pending,
    Paid,
    Failed,
    Canceled,
    Refunded,
    Disputed,
    UnderReview,
}

impl OrderStatus {
    /// The order was paid and granted: its standing now follows its payment's reversals.
    pub fn is_fulfilled(self) -> bool {
        matches!(self, Self::Paid | Self::Refunded | Self::Disputed)
    }
}

/// What stands against an order's payment, strongest first (so the strongest of two is the `min`).
/// Stored on the order and on the entitlement it grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum Hold {
    /// A dispute was lost: the money is gone for good.
    DisputeLost,
    /// Refunded in full.
    Refunded,
    /// A dispute (or an inquiry) is open: suspended until the bank decides.
    Disputed,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderView {
    pub order_id: Uuid,
    pub status: OrderStatus,
    pub plan_id: String,
    pub amount: i64,
    pub currency: String,
    pub created_at: DateTime<Utc>,
    pub paid_at: Option<DateTime<Utc>>,
    /// Minor units Stripe has refunded so far; a partial refund leaves the order `paid`.
    pub amount_refunded: i64,
    /// What the buyer was charged once paid: after discounts, with tax (0 for a trial's start).
    /// `amount` stays the catalog price the payment was checked against.
    pub amount_paid: Option<i64>,
    /// The promotion code's discount within it.
    pub amount_discount: Option<i64>,
    /// Stripe Tax's tax within it.
    pub amount_tax: Option<i64>,
}
