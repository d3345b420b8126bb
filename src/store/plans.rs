//! `plans`: the catalog as last synced from `plans.toml`. A plan that left the file stays (old
//! orders refer to it) but is inactive, and only active plans can be bought or listed.

use sqlx::{PgConnection, PgPool};

use crate::plan::{Plan, PlanKind};

/// Writes the plan as the file defines it, and makes it active again if it had left the file.
pub async fn upsert(conn: &mut PgConnection, plan: &Plan) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "insert into plans (id, name, kind, amount, currency, interval, credits, entitlement, stripe_price,
                            credits_per_period, credits_expire_after_days, trial_days, allow_promotion_codes, active)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, true)
         on conflict (id) do update set
             name = excluded.name, kind = excluded.kind, amount = excluded.amount,
             currency = excluded.currency, interval = excluded.interval, credits = excluded.credits,
             entitlement = excluded.entitlement, stripe_price = excluded.stripe_price,
             credits_per_period = excluded.credits_per_period,
             credits_expire_after_days = excluded.credits_expire_after_days, trial_days = excluded.trial_days,
             allow_promotion_codes = excluded.allow_promotion_codes, active = true, updated_at = now()",
        plan.id,
        plan.name,
        plan.kind as PlanKind,
        plan.amount,
        plan.currency,
        plan.interval,
        plan.credits,
        plan.entitlement,
        plan.stripe_price,
        plan.credits_per_period,
        plan.credits_expire_after_days,
        plan.trial_days,
        plan.allow_promotion_codes,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Every plan not in `listed` stops being sold; its row stays for the orders that name it.
pub async fn deactivate_all_but(conn: &mut PgConnection, listed: &[String]) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update plans set active = false, updated_at = now() where active and id <> all($1)",
        listed
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn find_active_plan(conn: &mut PgConnection, id: &str) -> Result<Option<Plan>, sqlx::Error> {
    sqlx::query_as!(
        Plan,
        r#"select id, name, kind as "kind: PlanKind", amount, currency, interval, credits, credits_per_period,
                  credits_expire_after_days, entitlement, stripe_price, trial_days, allow_promotion_codes
           from plans where id = $1 and active"#,
        id
    )
    .fetch_optional(conn)
    .await
}

pub async fn list_active_plans(pool: &PgPool) -> Result<Vec<Plan>, sqlx::Error> {
    sqlx::query_as!(
        Plan,
        r#"select id, name, kind as "kind: PlanKind", amount, currency, interval, credits, credits_per_period,
                  credits_expire_after_days, entitlement, stripe_price, trial_days, allow_promotion_codes
           from plans where active order by amount, id"#
    )
    .fetch_all(pool)
    .await
}

/// The plan a subscription item's price stands for: the plan that names the Price by
/// `stripe_price`, else the subscription plan its product's metadata names (prices made inline).
pub async fn plan_for_price(
    conn: &mut PgConnection,
    price_id: &str,
    product_plan_id: Option<&str>,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"select coalesce(
                  (select id from plans where stripe_price = $1 and kind = 'subscription' order by active desc, id limit 1),
                  (select id from plans where id = $2 and kind = 'subscription')) as plan_id"#,
        price_id,
        product_plan_id
    )
    .fetch_one(conn)
    .await
}
