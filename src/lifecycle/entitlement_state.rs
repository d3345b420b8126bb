//! The one rule for an entitlement's status: the subscription's state as Stripe last reported it,
//! overridden by a hold when the payment behind it was refunded or disputed. Every write goes
//! through `refresh_entitlement`, which records a history row naming the event for each change.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

/// The stored status. `past_due` still grants until the period end plus the grace; the read side
/// (`GET /entitlements`) applies the clock.
pub fn entitlement_status(stripe_status: Option<&str>, hold: Option<&str>) -> &'static str {
    match hold {
        Some("disputed") => return "suspended",
        Some(_) => return "revoked",
        None => {}
    }
    match stripe_status {
        // No subscription: a one-time purchase, held for good once paid.
        None | Some("active" | "trialing") => "active",
        Some("past_due" | "incomplete") => "past_due",
        // canceled, unpaid, incomplete_expired, paused, and anything Stripe adds later.
        Some(_) => "revoked",
    }
}

/// Recomputes the entitlement granted by `order_id` from its subscription and hold and writes it.
/// Returns whether anything changed. Callers hold the order's or the subscription's lock.
pub async fn refresh_entitlement(
    conn: &mut PgConnection,
    order_id: Uuid,
    event_id: &str,
    detail: &str,
) -> Result<bool, sqlx::Error> {
    type Row = (
        String,
        String,
        String,
        Option<String>,
        Option<DateTime<Utc>>,
        bool,
        Option<String>,
        Option<DateTime<Utc>>,
        Option<bool>,
    );
    let row: Option<Row> = sqlx::query_as(
        "select e.user_id, e.key, e.status, e.hold, e.current_period_end, e.cancel_at_period_end,
                s.status, s.current_period_end, s.cancel_at_period_end
         from entitlements e
         left join subscriptions s on s.stripe_subscription_id = e.stripe_subscription_id
         where e.order_id = $1
         for update of e",
    )
    .bind(order_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((user_id, key, old_status, hold, old_period_end, old_cancel, stripe_status, period_end, cancel)) = row
    else {
        return Ok(false);
    };
    let status = entitlement_status(stripe_status.as_deref(), hold.as_deref());
    let period_end = period_end.or(old_period_end);
    let cancel_at_period_end = cancel.unwrap_or(false);

    sqlx::query(
        "update entitlements set status = $3, current_period_end = $4, cancel_at_period_end = $5, updated_at = now()
         where user_id = $1 and key = $2",
    )
    .bind(&user_id)
    .bind(&key)
    .bind(status)
    .bind(period_end)
    .bind(cancel_at_period_end)
    .execute(&mut *conn)
    .await?;

    let change = if status != old_status {
        status
    } else if period_end > old_period_end {
        "period_extended"
    } else if cancel_at_period_end != old_cancel {
        if cancel_at_period_end {
            "cancel_scheduled"
        } else {
            "cancel_withdrawn"
        }
    } else {
        return Ok(false);
    };
    sqlx::query(
        "insert into entitlement_history (user_id, key, order_id, change, stripe_event_id, detail)
         values ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&user_id)
    .bind(&key)
    .bind(order_id)
    .bind(change)
    .bind(event_id)
    .bind(detail)
    .execute(conn)
    .await?;
    Ok(true)
}

/// Sets or lifts the hold on the entitlement `order_id` granted, then recomputes it.
pub async fn set_hold(
    conn: &mut PgConnection,
    order_id: Uuid,
    hold: Option<&str>,
    event_id: &str,
    detail: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query("update entitlements set hold = $2 where order_id = $1")
        .bind(order_id)
        .bind(hold)
        .execute(&mut *conn)
        .await?;
    refresh_entitlement(conn, order_id, event_id, detail).await
}

#[cfg(test)]
mod tests {
    use super::entitlement_status;

    #[test]
    fn stripe_statuses_map_to_grant_keep_or_revoke() {
        for (stripe, expected) in [
            (Some("active"), "active"),
            (Some("trialing"), "active"),
            (Some("past_due"), "past_due"),
            (Some("canceled"), "revoked"),
            (Some("unpaid"), "revoked"),
            (Some("incomplete_expired"), "revoked"),
            (Some("paused"), "revoked"),
            (None, "active"),
        ] {
            assert_eq!(entitlement_status(stripe, None), expected, "{stripe:?}");
        }
    }

    #[test]
    fn a_hold_overrides_the_subscription() {
        assert_eq!(entitlement_status(Some("active"), Some("disputed")), "suspended");
        assert_eq!(entitlement_status(Some("active"), Some("refunded")), "revoked");
        assert_eq!(entitlement_status(None, Some("dispute_lost")), "revoked");
    }
}
