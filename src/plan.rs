//! A plan as the catalog defines it and every request reads it: what it costs and what it grants.
//! Below both the catalog (which loads and validates `plans.toml`) and the store (which keeps it).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, sqlx::Type, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum PlanKind {
    OneTime,
    Subscription,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub id: String,
    pub name: String,
    pub kind: PlanKind,
    /// In the currency's minor unit (cents for USD).
    pub amount: i64,
    pub currency: String,
    /// Billing interval of a subscription: day, week, month or year.
    pub interval: Option<String>,
    /// Credits granted once when a one-time plan is paid.
    pub credits: i64,
    /// Subscriptions: credits granted by each paid period's invoice, expiring at the period's end.
    pub credits_per_period: i64,
    /// One-time plans: the purchase's credits expire this many days after the payment (never
    /// when unset).
    pub credits_expire_after_days: Option<i32>,
    /// Entitlement key granted while the plan is paid for.
    pub entitlement: Option<String>,
    /// Subscriptions: days of free trial before the first payment (Stripe's `trial_period_days`).
    pub trial_days: Option<i32>,
    /// Whether the checkout page takes a promotion code.
    pub allow_promotion_codes: bool,
    #[serde(skip)]
    pub stripe_price: Option<String>,
}
