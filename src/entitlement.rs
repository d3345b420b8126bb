//! An entitlement's stored status, and the one rule for whether it grants access now: every reader
//! (`GET /entitlements`, checkout's "already subscribed" check) asks `access`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// As stored: the subscription's state as Stripe last reported it, overridden by a hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum EntitlementStatus {
    Active,
    /// A renewal failed; access continues until the period end plus the grace.
    PastDue,
    /// A dispute is open.
    Suspended,
    Revoked,
}

impl EntitlementStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::PastDue => "past_due",
            Self::Suspended => "suspended",
            Self::Revoked => "revoked",
        }
    }
}

/// A row of `entitlement_history`: what changed, beside the event that changed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum EntitlementChange {
    /// A purchase granted it (once per order).
    Grant,
    Active,
    PastDue,
    Suspended,
    Revoked,
    PeriodExtended,
    CancelScheduled,
    CancelWithdrawn,
}

impl From<EntitlementStatus> for EntitlementChange {
    fn from(status: EntitlementStatus) -> Self {
        match status {
            EntitlementStatus::Active => Self::Active,
            EntitlementStatus::PastDue => Self::PastDue,
            EntitlementStatus::Suspended => Self::Suspended,
            EntitlementStatus::Revoked => Self::Revoked,
        }
    }
}

/// What an entitlement means at a given moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    /// It grants access now.
    pub active: bool,
    /// Its paid period (plus the grace) is over and Stripe has not said more: shown as `expired`.
    pub lapsed: bool,
}

/// An `active` or `past_due` entitlement grants until its period end plus `grace`, or exactly until
/// the period end once it is set to cancel; one without a period end (a one-time purchase) for good.
pub fn access(
    status: EntitlementStatus,
    current_period_end: Option<DateTime<Utc>>,
    cancel_at_period_end: bool,
    now: DateTime<Utc>,
    grace: Duration,
) -> Access {
    let billing = matches!(status, EntitlementStatus::Active | EntitlementStatus::PastDue);
    let grace = if cancel_at_period_end {
        chrono::Duration::zero()
    } else {
        chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX)
    };
    let lapsed =
        billing && current_period_end.is_some_and(|end| end.checked_add_signed(grace).is_none_or(|until| now >= until));
    Access {
        active: billing && !lapsed,
        lapsed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn a_subscription_grants_until_its_period_end_plus_the_grace_or_just_the_end_when_canceling() {
        let end = Utc::now();
        let just_after = end + chrono::Duration::hours(1);
        let active = EntitlementStatus::Active;
        assert!(access(active, Some(end), false, just_after, DAY).active);
        assert!(!access(active, Some(end), true, just_after, DAY).active);
        let past_grace = end + chrono::Duration::days(2);
        let lapsed = access(EntitlementStatus::PastDue, Some(end), false, past_grace, DAY);
        assert_eq!(
            lapsed,
            Access {
                active: false,
                lapsed: true
            }
        );
    }

    #[test]
    fn a_one_time_purchase_grants_for_good_and_a_hold_never_grants() {
        let now = Utc::now();
        assert!(access(EntitlementStatus::Active, None, false, now, DAY).active);
        for held in [EntitlementStatus::Suspended, EntitlementStatus::Revoked] {
            assert_eq!(
                access(held, None, false, now, DAY),
                Access {
                    active: false,
                    lapsed: false
                }
            );
        }
    }
}
