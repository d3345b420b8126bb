//! The one rule for an entitlement's status. Each order that grants it gives a status: the
//! subscription's state as Stripe last reported it, overridden by the order's hold when its payment
//! was refunded or disputed. The entitlement takes the best of them, so a user who bought it twice
//! keeps it when one purchase is reversed. Every write goes through `refresh_entitlement`, which
//! records a history row naming the event for each change.

use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    entitlement::{EntitlementChange, EntitlementStatus},
    orders::Hold,
    store::entitlements,
};

/// The stored status. `past_due` still grants until the period end plus the grace; the readers
/// apply the clock (`entitlement::access`).
pub fn entitlement_status(stripe_status: Option<&str>, hold: Option<Hold>) -> EntitlementStatus {
    match hold {
        Some(Hold::Disputed) => return EntitlementStatus::Suspended,
        Some(Hold::Refunded | Hold::DisputeLost) => return EntitlementStatus::Revoked,
        None => {}
    }
    match stripe_status {
        // No subscription: a one-time purchase, held for good once paid.
        None | Some("active" | "trialing") => EntitlementStatus::Active,
        Some("past_due" | "incomplete") => EntitlementStatus::PastDue,
        // canceled, unpaid, incomplete_expired, paused, and anything Stripe adds later.
        Some(_) => EntitlementStatus::Revoked,
    }
}

/// How much a status grants, to pick the best of several purchases.
fn rank(status: EntitlementStatus) -> u8 {
    match status {
        EntitlementStatus::Active => 3,
        EntitlementStatus::PastDue => 2,
        EntitlementStatus::Suspended => 1,
        EntitlementStatus::Revoked => 0,
    }
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
    let Some(entitlements::Grantee {
        user_id,
        entitlement: Some(key),
    }) = entitlements::grantee(conn, order_id).await?
    else {
        return Ok(false);
    };
    refresh_entitlement_key(conn, &user_id, &key, order_id, event_id, detail).await
}

/// `refresh_entitlement` for one key of the user, `order_id` being the order whose change caused
/// it. A key no order grants any more (its subscription moved to a plan with another key) is
/// revoked. Returns whether anything changed; for a key first written here (one a plan change
/// brought), that is the write itself, and the caller records why.
pub async fn refresh_entitlement_key(
    conn: &mut PgConnection,
    user_id: &str,
    key: &str,
    order_id: Uuid,
    event_id: &str,
    detail: &str,
) -> Result<bool, sqlx::Error> {
    let stored = entitlements::lock_stored(conn, user_id, key).await?;
    let grants = entitlements::grants(conn, user_id, key).await?;
    // The best claim: the status that grants most; then one that never lapses (a one-time
    // purchase); then the latest period end.
    let Some(best) = grants.iter().max_by_key(|g| {
        let status = entitlement_status(g.stripe_status.as_deref(), g.hold);
        let lifetime = g.stripe_subscription_id.is_none();
        (rank(status), lifetime, g.current_period_end)
    }) else {
        return revoke_ungranted(conn, user_id, key, stored, order_id, event_id, detail).await;
    };
    let status = entitlement_status(best.stripe_status.as_deref(), best.hold);
    let period_end = match &stored {
        // The same subscription keeps the period it had if Stripe's answer lacks one.
        Some(stored) if stored.order_id == Some(best.order_id) => best.current_period_end.or(stored.current_period_end),
        _ => best.current_period_end,
    };
    let cancel_at_period_end = best.cancel_at_period_end.unwrap_or(false);
    let derived = entitlements::Derived {
        status,
        stripe_subscription_id: best.stripe_subscription_id.as_deref(),
        order_id: best.order_id,
        current_period_end: period_end,
        cancel_at_period_end,
        hold: best.hold,
    };
    entitlements::write(conn, user_id, key, &derived).await?;

    // A first grant is recorded by fulfilment as `grant`; later changes are recorded here.
    let Some(stored) = stored else {
        return Ok(true);
    };
    let change = if status != stored.status {
        EntitlementChange::from(status)
    } else if period_end > stored.current_period_end {
        EntitlementChange::PeriodExtended
    } else if cancel_at_period_end != stored.cancel_at_period_end {
        if cancel_at_period_end {
            EntitlementChange::CancelScheduled
        } else {
            EntitlementChange::CancelWithdrawn
        }
    } else {
        return Ok(false);
    };
    write_history(conn, user_id, key, order_id, change, event_id, detail).await?;
    Ok(true)
}

/// A key that no order grants any more ends now, unless it had already.
async fn revoke_ungranted(
    conn: &mut PgConnection,
    user_id: &str,
    key: &str,
    stored: Option<entitlements::Stored>,
    order_id: Uuid,
    event_id: &str,
    detail: &str,
) -> Result<bool, sqlx::Error> {
    let Some(stored) = stored.filter(|s| s.status != EntitlementStatus::Revoked) else {
        return Ok(false);
    };
    let derived = entitlements::Derived {
        status: EntitlementStatus::Revoked,
        stripe_subscription_id: None,
        order_id: stored.order_id.unwrap_or(order_id),
        current_period_end: stored.current_period_end,
        cancel_at_period_end: false,
        hold: None,
    };
    entitlements::write(conn, user_id, key, &derived).await?;
    write_history(
        conn,
        user_id,
        key,
        order_id,
        EntitlementChange::Revoked,
        event_id,
        detail,
    )
    .await?;
    Ok(true)
}

/// One history row naming the event that made the change.
pub async fn write_history(
    conn: &mut PgConnection,
    user_id: &str,
    key: &str,
    order_id: Uuid,
    change: EntitlementChange,
    event_id: &str,
    detail: &str,
) -> Result<(), sqlx::Error> {
    let change = entitlements::Change {
        user_id,
        key,
        order_id,
        change,
        event_id,
        detail: Some(detail),
    };
    entitlements::record(conn, &change).await
}

#[cfg(test)]
mod tests {
    use super::{EntitlementStatus, Hold, entitlement_status};

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
            assert_eq!(entitlement_status(stripe, None).as_str(), expected, "{stripe:?}");
        }
    }

    #[test]
    fn a_hold_overrides_the_subscription() {
        assert_eq!(
            entitlement_status(Some("active"), Some(Hold::Disputed)),
            EntitlementStatus::Suspended
        );
        assert_eq!(
            entitlement_status(Some("active"), Some(Hold::Refunded)),
            EntitlementStatus::Revoked
        );
        assert_eq!(
            entitlement_status(None, Some(Hold::DisputeLost)),
            EntitlementStatus::Revoked
        );
    }
}
