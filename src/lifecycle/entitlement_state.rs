//! The one rule for an entitlement's status. Each order that grants it gives a status: the
//! subscription's state as Stripe last reported it, overridden by the order's hold when its payment
//! was refunded or disputed. The entitlement takes the best of them, so a user who bought it twice
//! keeps it when one purchase is reversed. Every write goes through `refresh_entitlement`, which
//! records a history row naming the event for each change.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::reversals::Hold;

/// The stored status. `past_due` still grants until the period end plus the grace; the read side
/// (`GET /entitlements`) applies the clock.
pub fn entitlement_status(stripe_status: Option<&str>, hold: Option<Hold>) -> &'static str {
    match hold {
        Some(Hold::Disputed) => return "suspended",
        Some(Hold::Refunded | Hold::DisputeLost) => return "revoked",
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

/// How much a status grants, to pick the best of several purchases.
fn rank(status: &str) -> u8 {
    match status {
        "active" => 3,
        "past_due" => 2,
        "suspended" => 1,
        _ => 0,
    }
}

/// One order's claim on the entitlement.
#[derive(sqlx::FromRow)]
struct Grant {
    order_id: Uuid,
    hold: Option<Hold>,
    stripe_subscription_id: Option<String>,
    stripe_status: Option<String>,
    current_period_end: Option<DateTime<Utc>>,
    cancel_at_period_end: Option<bool>,
}

#[derive(sqlx::FromRow)]
struct Stored {
    status: String,
    order_id: Option<Uuid>,
    current_period_end: Option<DateTime<Utc>>,
    cancel_at_period_end: bool,
}

/// Recomputes the entitlement `order_id` grants from every fulfilled order of the same user that
/// grants it, and writes it. Returns whether anything changed. Callers hold the order's (and for a
/// subscription, the subscription's) lock; the entitlement row is locked here, last.
pub async fn refresh_entitlement(
    conn: &mut PgConnection,
    order_id: Uuid,
    event_id: &str,
    detail: &str,
) -> Result<bool, sqlx::Error> {
    let owner: Option<(String, Option<String>)> =
        sqlx::query_as("select user_id, entitlement from orders where id = $1")
            .bind(order_id)
            .fetch_optional(&mut *conn)
            .await?;
    let Some((user_id, Some(key))) = owner else {
        return Ok(false);
    };
    let stored: Option<Stored> = sqlx::query_as(
        "select status, order_id, current_period_end, cancel_at_period_end
         from entitlements where user_id = $1 and key = $2 for update",
    )
    .bind(&user_id)
    .bind(&key)
    .fetch_optional(&mut *conn)
    .await?;
    let grants: Vec<Grant> = sqlx::query_as(
        "select o.id as order_id, o.hold, o.stripe_subscription_id, s.status as stripe_status,
                s.current_period_end, s.cancel_at_period_end
         from orders o
         left join subscriptions s on s.stripe_subscription_id = o.stripe_subscription_id
         where o.user_id = $1 and o.entitlement = $2 and o.status in ('paid', 'refunded', 'disputed')",
    )
    .bind(&user_id)
    .bind(&key)
    .fetch_all(&mut *conn)
    .await?;
    // The best claim: the status that grants most; then one that never lapses (a one-time
    // purchase); then the latest period end.
    let Some(best) = grants.iter().max_by_key(|g| {
        let status = entitlement_status(g.stripe_status.as_deref(), g.hold);
        let lifetime = g.stripe_subscription_id.is_none();
        (rank(status), lifetime, g.current_period_end)
    }) else {
        return Ok(false);
    };
    let status = entitlement_status(best.stripe_status.as_deref(), best.hold);
    let period_end = match &stored {
        // The same subscription keeps the period it had if Stripe's answer lacks one.
        Some(stored) if stored.order_id == Some(best.order_id) => best.current_period_end.or(stored.current_period_end),
        _ => best.current_period_end,
    };
    let cancel_at_period_end = best.cancel_at_period_end.unwrap_or(false);

    sqlx::query(
        "insert into entitlements as e
             (user_id, key, status, stripe_subscription_id, order_id, current_period_end, cancel_at_period_end, hold)
         values ($1, $2, $3, $4, $5, $6, $7, $8)
         on conflict (user_id, key) do update set
             status = excluded.status, stripe_subscription_id = excluded.stripe_subscription_id,
             order_id = excluded.order_id, current_period_end = excluded.current_period_end,
             cancel_at_period_end = excluded.cancel_at_period_end, hold = excluded.hold, updated_at = now()",
    )
    .bind(&user_id)
    .bind(&key)
    .bind(status)
    .bind(&best.stripe_subscription_id)
    .bind(best.order_id)
    .bind(period_end)
    .bind(cancel_at_period_end)
    .bind(best.hold)
    .execute(&mut *conn)
    .await?;

    // A first grant is recorded by fulfilment as `grant`; later changes are recorded here.
    let Some(stored) = stored else {
        return Ok(true);
    };
    let change = if status != stored.status {
        status
    } else if period_end > stored.current_period_end {
        "period_extended"
    } else if cancel_at_period_end != stored.cancel_at_period_end {
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

#[cfg(test)]
mod tests {
    use super::{Hold, entitlement_status};

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
        assert_eq!(entitlement_status(Some("active"), Some(Hold::Disputed)), "suspended");
        assert_eq!(entitlement_status(Some("active"), Some(Hold::Refunded)), "revoked");
        assert_eq!(entitlement_status(None, Some(Hold::DisputeLost)), "revoked");
    }
}
