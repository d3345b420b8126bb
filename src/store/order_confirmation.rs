//! An order as its confirmation email reads it: what the buyer paid for (the plan's name from the
//! catalog, what the order grants as fixed when it was placed), where the email goes, and the
//! entitlement's paid period as it stands when the email is first sent.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

pub struct ConfirmedOrder {
    pub order_id: Uuid,
    pub plan_name: String,
    pub amount: i64,
    pub currency: String,
    pub credits: i64,
    pub credits_expire_after_days: Option<i32>,
    pub credits_per_period: i64,
    pub entitlement: Option<String>,
    /// Whether the order is a subscription's (its entitlement lasts as long as it is paid for).
    pub subscription: bool,
    /// The session's `customer_details.email`; none when Stripe collected none.
    pub buyer_email: Option<String>,
    /// The end of the entitlement's paid period, when this order's subscription holds it.
    pub current_period_end: Option<DateTime<Utc>>,
}

pub async fn find(db: &PgPool, order_id: Uuid) -> Result<Option<ConfirmedOrder>, sqlx::Error> {
    sqlx::query_as!(
        ConfirmedOrder,
        r#"select o.id as order_id, p.name as plan_name, o.amount, o.currency, o.credits,
                  o.credits_expire_after_days, o.credits_per_period, o.entitlement,
                  o.subscription_entitlement is not null as "subscription!", o.buyer_email,
                  e.current_period_end as "current_period_end?"
           from orders o
           join plans p on p.id = o.plan_id
           left join entitlements e on e.user_id = o.user_id and e.key = o.entitlement and e.order_id = o.id
           where o.id = $1"#,
        order_id
    )
    .fetch_optional(db)
    .await
}
