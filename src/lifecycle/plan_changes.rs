//! A subscription whose item moved to another price (a plan change in the billing portal, through
//! `POST /subscription/change`, or a downgrade Stripe's schedule applies at the period end) grants
//! what the new plan grants, from the answer in which Stripe shows the new price. Which plan a
//! price stands for: the plan naming it by `stripe_price`, else the plan id the service put in the
//! product's metadata when it made the price inline.
//!
//! Credits: each regular invoice grants its period's credits at the plan it was billed at. A
//! proration invoice (`billing_reason: subscription_update`) pays for the rest of a period already
//! granted, so it grants no period of its own: it tops the period up to the new plan's rate for
//! the time left, pro rata, rounded down, when the new plan grants more than the period's own
//! invoice did. A downgrade takes nothing back; the next renewal grants the new plan's credits.

use sqlx::PgConnection;
use uuid::Uuid;

use super::entitlement_state::{refresh_entitlement_key, write_history};
use crate::{
    credits,
    entitlement::EntitlementChange,
    store::{credit_ledger, orders, plans},
    stripe::lifecycle_objects::{InvoiceObject, SubscriptionObject},
};

/// The plan Stripe's answer puts the subscription on, when its price maps to one.
pub async fn plan_of(
    conn: &mut PgConnection,
    subscription: &SubscriptionObject,
) -> Result<Option<String>, sqlx::Error> {
    match subscription.price() {
        Some((price_id, product_plan)) => plans::plan_for_price(conn, price_id, product_plan).await,
        None => Ok(None),
    }
}

/// Makes the order grant what its subscription's stored plan grants. When the entitlement key
/// changes, the old key is refreshed without this order (revoked unless another order grants it)
/// and the new one with it, in key order so two orders of one user cannot deadlock.
pub async fn follow_plan(
    conn: &mut PgConnection,
    order_id: Uuid,
    subscription_id: &str,
    event_id: &str,
) -> Result<(), sqlx::Error> {
    let Some(followed) = orders::follow_subscription_plan(conn, order_id, subscription_id).await? else {
        return Ok(());
    };
    tracing::info!(%order_id, subscription_id, plan_id = %followed.plan_id, "subscription moved to another plan");
    if followed.old_entitlement == followed.new_entitlement {
        return Ok(());
    }
    let detail = format!("plan changed to {}", followed.plan_id);
    let mut keys: Vec<&str> = [&followed.old_entitlement, &followed.new_entitlement]
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    for key in keys {
        let fresh = refresh_entitlement_key(conn, &followed.user_id, key, order_id, event_id, &detail).await?;
        if fresh && Some(key) == followed.new_entitlement.as_deref() {
            write_history(
                conn,
                &followed.user_id,
                key,
                order_id,
                EntitlementChange::Active,
                event_id,
                &detail,
            )
            .await?;
        }
    }
    Ok(())
}

/// A paid proration invoice's credits: the new plan's rate, less what the period's own invoice
/// granted, for the share of the period the invoice covers. Once per invoice (grants are keyed by
/// it), expiring with the period.
pub async fn grant_proration_credits(
    conn: &mut PgConnection,
    order_id: Uuid,
    user_id: &str,
    subscription: &SubscriptionObject,
    invoice: &InvoiceObject,
    event_id: &str,
) -> Result<(), sqlx::Error> {
    let (Some((period_start, period_end)), Some(from), Some(until)) = (
        subscription.current_period(),
        invoice.period_start(),
        invoice.period_end(),
    ) else {
        return Ok(());
    };
    let Some(expires_at) = chrono::DateTime::from_timestamp(until, 0) else {
        return Ok(());
    };
    let rate = orders::period_credits(conn, order_id).await?;
    let granted = credit_ledger::period_rate(conn, order_id, expires_at).await?;
    let credits = pro_rata(rate - granted, until - from, period_end - period_start);
    if credits <= 0 {
        return Ok(());
    }
    credits::grant_period(
        conn,
        user_id,
        order_id,
        &invoice.id,
        credits,
        Some(expires_at),
        event_id,
    )
    .await
}

/// `credits` for `part` of a period `whole` long, rounded down; nothing for an empty period.
fn pro_rata(credits: i64, part: i64, whole: i64) -> i64 {
    if credits <= 0 || whole <= 0 || part <= 0 {
        return 0;
    }
    let part = part.min(whole);
    i64::try_from(i128::from(credits) * i128::from(part) / i128::from(whole)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::pro_rata;

    #[test]
    fn the_rest_of_the_period_gets_its_share_rounded_down() {
        assert_eq!(pro_rata(1000, 15, 30), 500);
        assert_eq!(pro_rata(1000, 10, 30), 333);
        assert_eq!(pro_rata(1000, 40, 30), 1000, "never more than a whole period");
        assert_eq!(pro_rata(-500, 15, 30), 0, "a downgrade takes nothing back");
        assert_eq!(pro_rata(1000, 15, 0), 0);
    }
}
