//! Refunds and disputes, in any order. A refund or dispute event only records what it says
//! (`payment_facts`); the order it reverses then has its standing derived again from everything
//! on file (`settle_order`): how much was refunded, whether a full refund, an open or a lost dispute
//! stands, what credits it still gives, and from that its status and hold. The same derivation runs
//! when the order is fulfilled, so a reversal that arrived before its payment takes effect then.
//! Because the standing is a function of the facts and the facts merge whatever the order, any
//! delivery of a purchase's events, in any order and any number of times, ends where in-order
//! delivery ends.

use sqlx::PgConnection;
use uuid::Uuid;

use super::{
    entitlement_state::refresh_entitlement,
    payment_facts::{self, ChargeFact, PaymentFacts, REFUND_UNDONE, RefundFact},
    payment_owner::{LockedPaidOrder, lock_order_for_payment},
};
pub use crate::orders::Hold;
use crate::{
    orders::OrderStatus,
    outcome::Outcome,
    store::{
        credit_ledger::{self, LedgerKind},
        order_standing, subscriptions,
    },
    stripe::{
        event::{EventKind, WebhookEvent},
        lifecycle_objects::{ChargeObject, DisputeObject, RefundObject},
    },
};

/// Where a dispute stands, from its Stripe status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisputeState {
    Open,
    /// Won, or an inquiry closed without a chargeback, or prevented.
    ClosedKept,
    Lost,
}

pub fn dispute_state(status: &str) -> DisputeState {
    match status {
        "lost" => DisputeState::Lost,
        "won" | "warning_closed" | "prevented" | "charge_refunded" => DisputeState::ClosedKept,
        // needs_response, under_review, their warning_ (inquiry) forms, and anything Stripe adds.
        _ => DisputeState::Open,
    }
}

/// An order's standing, derived from its payments' facts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    /// Minor units refunded and still refunded (a failed refund no longer counts).
    pub refunded: i64,
    pub hold: Option<Hold>,
    /// Credits the purchase no longer gives.
    pub credits_taken: i64,
}

/// The standing of an order that bought `purchased` credits for `order_amount`, from the facts
/// about its payments. Pure, so that what "in any order" means can be read and tested here.
pub fn derive_standing(facts: &PaymentFacts, purchased: i64, order_amount: i64) -> Standing {
    let mut refunded = 0;
    let mut charged = 0;
    let mut any_full = false;
    let payments = payment_keys(facts);
    for payment in &payments {
        let (payment_refunded, payment_charged) = refunded_of(facts, payment, order_amount);
        any_full |= payment_charged > 0 && payment_refunded >= payment_charged;
        refunded += payment_refunded;
        charged += payment_charged;
    }
    let disputes: Vec<DisputeState> = facts.disputes.iter().map(|s| dispute_state(s)).collect();
    let hold = if disputes.contains(&DisputeState::Lost) {
        Some(Hold::DisputeLost)
    } else if any_full {
        Some(Hold::Refunded)
    } else if disputes.contains(&DisputeState::Open) {
        Some(Hold::Disputed)
    } else {
        None
    };
    let credits_taken = match hold {
        Some(_) => purchased,
        None => credits_owed_back(purchased, refunded, charged),
    };
    Standing {
        refunded,
        hold,
        credits_taken,
    }
}

/// The payment a charge belongs to: its payment intent, else the charge itself.
fn charge_payment(charge: &ChargeFact) -> &str {
    charge
        .stripe_payment_intent_id
        .as_deref()
        .unwrap_or(&charge.stripe_charge_id)
}

/// The payment a refund belongs to: its payment intent, else its charge's, else its charge.
fn refund_payment<'a>(facts: &'a PaymentFacts, refund: &'a RefundFact) -> Option<&'a str> {
    refund.stripe_payment_intent_id.as_deref().or_else(|| {
        let charge = refund.stripe_charge_id.as_deref()?;
        Some(
            facts
                .charges
                .iter()
                .find(|c| c.stripe_charge_id == charge)
                .map_or(charge, charge_payment),
        )
    })
}

/// The payments the facts speak of.
fn payment_keys(facts: &PaymentFacts) -> Vec<&str> {
    let mut keys: Vec<&str> = facts
        .charges
        .iter()
        .map(charge_payment)
        .chain(facts.refunds.iter().filter_map(|r| refund_payment(facts, r)))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// (refunded, charged) for one payment. The latest charge snapshot's running total counts, less
/// any refund seen undone at or after that snapshot (the snapshot still counted it); never less
/// than the refunds known to stand. Without a snapshot (its `charge.refunded` is still on its way),
/// the standing refunds count against the order's amount.
fn refunded_of(facts: &PaymentFacts, payment: &str, order_amount: i64) -> (i64, i64) {
    let refunds: Vec<_> = facts
        .refunds
        .iter()
        .filter(|r| refund_payment(facts, r) == Some(payment))
        .collect();
    let standing: i64 = refunds
        .iter()
        .filter(|r| !REFUND_UNDONE.contains(&r.status.as_str()))
        .map(|r| r.amount)
        .sum();
    let snapshots: Vec<_> = facts.charges.iter().filter(|c| charge_payment(c) == payment).collect();
    if snapshots.is_empty() {
        return (standing, order_amount);
    }
    let mut refunded = 0;
    let mut charged = 0;
    for snapshot in snapshots {
        let undone_since: i64 = refunds
            .iter()
            .filter(|r| r.stripe_charge_id.as_deref() == Some(snapshot.stripe_charge_id.as_str()))
            .filter(|r| r.failed_at.is_some_and(|at| at >= snapshot.seen_at))
            .map(|r| r.amount)
            .sum();
        refunded += (snapshot.amount_refunded - undone_since).max(0);
        charged += snapshot.amount;
    }
    (refunded.max(standing), charged)
}

/// Each subscription period's credits follow its own payment as a purchase's follow the order's:
/// a part refunded takes that share back, a full refund or a dispute all of it, and what a failed
/// refund or a won dispute gives back returns.
async fn settle_period_credits(
    conn: &mut PgConnection,
    order: &LockedPaidOrder,
    period_amount: i64,
    event_id: &str,
    cause: Cause,
) -> Result<(), sqlx::Error> {
    for grant in credit_ledger::period_grants_of_order(conn, order.id).await? {
        let intents = subscriptions::invoice_payment_intents(conn, &grant.stripe_invoice_id).await?;
        let facts = payment_facts::facts_for(conn, &intents).await?;
        let standing = derive_standing(&facts, grant.granted, period_amount);
        let delta = grant.taken - standing.credits_taken;
        if delta != 0 {
            let kind = adjustment_kind(cause, delta, standing.hold);
            credit_ledger::adjust_grant(conn, &order.user_id, grant.id, kind, delta, event_id).await?;
        }
    }
    Ok(())
}

/// The ledger's name for an adjustment of `delta` credits made for `cause`.
fn adjustment_kind(cause: Cause, delta: i64, hold: Option<Hold>) -> LedgerKind {
    match (cause, delta < 0) {
        (Cause::Dispute, true) => LedgerKind::Dispute,
        (Cause::Dispute, false) => LedgerKind::DisputeReversal,
        (Cause::Refund, true) => LedgerKind::Refund,
        (Cause::Refund, false) => LedgerKind::RefundReversal,
        (Cause::Fulfilment, _) => match hold {
            Some(Hold::Disputed | Hold::DisputeLost) => LedgerKind::Dispute,
            _ => LedgerKind::Refund,
        },
    }
}

/// The credits a refund of `refunded` out of `charged` takes back, rounded down, so a buyer never
/// loses more than the share they got back.
pub fn credits_owed_back(purchased: i64, refunded: i64, charged: i64) -> i64 {
    if refunded <= 0 {
        return 0;
    }
    if charged <= 0 || refunded >= charged {
        return purchased;
    }
    (i128::from(purchased) * i128::from(refunded) / i128::from(charged)) as i64
}

/// What caused a settlement, which names the ledger row it may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    Fulfilment,
    Refund,
    Dispute,
}

/// What a refund or dispute event reports: the charge with its running total, a refund, or a
/// dispute.
enum Reported {
    Charge(ChargeObject),
    Refund(RefundObject),
    Dispute(DisputeObject),
}

impl Reported {
    fn read(event: &WebhookEvent, kind: EventKind) -> Option<Self> {
        if kind == EventKind::ChargeRefunded {
            event.object_as().map(Self::Charge)
        } else if kind.is_refund() {
            event.object_as().map(Self::Refund)
        } else {
            event.object_as().map(Self::Dispute)
        }
    }

    fn charge_id(&self) -> Option<&str> {
        match self {
            Self::Charge(charge) => Some(&charge.id),
            Self::Refund(refund) => refund.charge.as_ref().map(|c| c.id()),
            Self::Dispute(dispute) => dispute.charge.as_ref().map(|c| c.id()),
        }
    }

    fn payment_intent(&self) -> Option<&str> {
        match self {
            Self::Charge(charge) => charge.payment_intent.as_ref(),
            Self::Refund(refund) => refund.payment_intent.as_ref(),
            Self::Dispute(dispute) => dispute.payment_intent.as_ref(),
        }
        .map(|p| p.id())
    }
}

/// Applies a refund or dispute event: records it, then settles the order it reverses, if that
/// order is known and fulfilled. Otherwise the facts wait for the order's fulfilment. `kind` is
/// a refund or a dispute kind.
pub async fn apply_reversal_event(
    conn: &mut PgConnection,
    event: &WebhookEvent,
    kind: EventKind,
) -> Result<(Outcome, Option<Uuid>), sqlx::Error> {
    let Some(reported) = Reported::read(event, kind) else {
        return Ok((Outcome::MalformedObject, None));
    };
    if let Some(charge_id) = reported.charge_id() {
        payment_facts::lock_payment(conn, "charge", charge_id).await?;
    }
    match &reported {
        Reported::Charge(charge) => payment_facts::record_charge(conn, charge, event.created).await?,
        Reported::Refund(refund) => payment_facts::record_refund(conn, refund, None, event.created).await?,
        Reported::Dispute(dispute) => payment_facts::record_dispute(conn, dispute, event.created).await?,
    }
    let payment_intent = match (reported.payment_intent(), reported.charge_id()) {
        (Some(intent), _) => Some(intent.to_owned()),
        (None, Some(charge_id)) => payment_facts::payment_intent_of_charge(conn, charge_id).await?,
        (None, None) => None,
    };
    let Some(payment_intent) = payment_intent else {
        // Recorded by charge; a later event naming the charge's payment intent links it.
        return Ok((Outcome::AwaitingOrder, None));
    };
    payment_facts::lock_payment(conn, "payment", &payment_intent).await?;
    let Some(order) = lock_order_for_payment(conn, &payment_intent).await? else {
        return Ok((Outcome::AwaitingOrder, None));
    };
    if !order.status.is_fulfilled() && order.status != OrderStatus::UnderReview {
        return Ok((Outcome::AwaitingOrder, Some(order.id)));
    }
    let cause = match reported {
        Reported::Dispute(_) => Cause::Dispute,
        _ => Cause::Refund,
    };
    let standing = settle_order(conn, &order, &event.id, cause).await?;
    // What the event said; the order's standing may rest on more than it.
    let outcome = match &reported {
        Reported::Dispute(dispute) => match dispute_state(&dispute.status) {
            DisputeState::Open => Outcome::Disputed,
            DisputeState::Lost => Outcome::DisputeLost,
            DisputeState::ClosedKept => Outcome::DisputeWon,
        },
        Reported::Refund(refund) if refund.status.as_deref().is_some_and(|s| REFUND_UNDONE.contains(&s)) => {
            Outcome::RefundReversed
        }
        _ if standing.hold == Some(Hold::Refunded) => Outcome::Refunded,
        _ => Outcome::PartiallyRefunded,
    };
    Ok((outcome, Some(order.id)))
}

/// Derives the order's standing from its payments' facts and brings the order, its credits and
/// its entitlement in line with it. The caller holds the order's lock. Idempotent: a second call
/// with the same facts changes nothing.
pub async fn settle_order(
    conn: &mut PgConnection,
    order: &LockedPaidOrder,
    event_id: &str,
    cause: Cause,
) -> Result<Standing, sqlx::Error> {
    let intents = order_standing::payment_intents_of(conn, order.id).await?;
    let facts = payment_facts::facts_for(conn, &intents).await?;
    let current = order_standing::standing(conn, order.id).await?;
    let credits = credit_ledger::order_credits(conn, order.id).await?;
    let mut standing = derive_standing(&facts, credits.purchased, current.amount);
    if let Some(legacy) = current.legacy_hold {
        // Decided before facts were kept (see the migration): it stands whatever comes later.
        standing.hold = Some(standing.hold.map_or(legacy, |hold| hold.min(legacy)));
        standing.credits_taken = credits.purchased;
    }

    let target_held = credits.purchased - standing.credits_taken;
    if target_held != credits.held {
        let delta = target_held - credits.held;
        let kind = adjustment_kind(cause, delta, standing.hold);
        credit_ledger::adjust_order(conn, &order.user_id, order.id, kind, delta, event_id).await?;
    }
    settle_period_credits(conn, order, current.amount, event_id, cause).await?;

    // An order whose payment did not match was never granted: refunded in full it is settled,
    // otherwise it waits for a person, under review, whatever else happens to the payment.
    let unreviewed = current.review_reason.is_some() && current.paid_at.is_none();
    let status = match standing.hold {
        Some(Hold::Refunded | Hold::DisputeLost) => OrderStatus::Refunded,
        _ if unreviewed => OrderStatus::UnderReview,
        Some(Hold::Disputed) => OrderStatus::Disputed,
        None => OrderStatus::Paid,
    };
    if status != order.status || standing.refunded != current.amount_refunded || standing.hold != current.hold {
        // Every status change wakes the long-polls waiting on the order.
        let notify = status != order.status;
        order_standing::set_standing(conn, order.id, status, standing.refunded, standing.hold, notify).await?;
    }
    if standing.hold != current.hold && current.entitlement.is_some() && cause != Cause::Fulfilment {
        let detail = describe(&standing);
        refresh_entitlement(conn, order.id, event_id, &detail).await?;
    }
    Ok(standing)
}

fn describe(standing: &Standing) -> String {
    match standing.hold {
        Some(Hold::DisputeLost) => "dispute lost".to_owned(),
        Some(Hold::Refunded) => "refunded in full".to_owned(),
        Some(Hold::Disputed) => "dispute open".to_owned(),
        None if standing.refunded > 0 => format!("{} refunded; nothing else stands", standing.refunded),
        None => "no refund or dispute stands".to_owned(),
    }
}

/// Settles a just-fulfilled order if anything about its payment is already on file (a refund or
/// dispute that outran the payment). The common case costs one lookup.
pub async fn settle_if_reversed(
    conn: &mut PgConnection,
    order: &LockedPaidOrder,
    payment_intent: Option<&str>,
    event_id: &str,
) -> Result<Option<Standing>, sqlx::Error> {
    let on_file = match payment_intent {
        Some(intent) => payment_facts::any_facts_for(conn, intent).await?,
        // A subscription's payments are settled as their invoices are recorded.
        None => false,
    };
    if !on_file {
        return Ok(None);
    }
    settle_order(conn, order, event_id, Cause::Fulfilment).await.map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn charge(refunded: i64, seen_at: i64) -> ChargeFact {
        ChargeFact {
            stripe_charge_id: "ch_1".into(),
            stripe_payment_intent_id: Some("pi_1".into()),
            amount: 500,
            amount_refunded: refunded,
            seen_at,
        }
    }

    fn refund(amount: i64, status: &str, failed_at: Option<i64>) -> RefundFact {
        RefundFact {
            stripe_charge_id: Some("ch_1".into()),
            stripe_payment_intent_id: Some("pi_1".into()),
            amount,
            status: status.into(),
            failed_at,
        }
    }

    #[test]
    fn refunds_claw_back_proportionally_rounded_down() {
        assert_eq!(credits_owed_back(100, 500, 500), 100);
        assert_eq!(credits_owed_back(100, 250, 500), 50);
        assert_eq!(credits_owed_back(100, 333, 500), 66);
        assert_eq!(credits_owed_back(100, 1, 500), 0);
        assert_eq!(credits_owed_back(100, 600, 500), 100);
        assert_eq!(credits_owed_back(100, 0, 500), 0);
    }

    #[test]
    fn a_refund_that_failed_after_the_snapshot_no_longer_counts() {
        let facts = PaymentFacts {
            charges: vec![charge(500, 10)],
            refunds: vec![refund(500, "failed", Some(20))],
            disputes: vec![],
        };
        assert_eq!(
            derive_standing(&facts, 100, 500),
            Standing {
                refunded: 0,
                hold: None,
                credits_taken: 0
            }
        );
        // A snapshot taken after the failure already left it out.
        let later = PaymentFacts {
            charges: vec![charge(200, 30)],
            refunds: vec![refund(500, "failed", Some(20)), refund(200, "succeeded", None)],
            disputes: vec![],
        };
        assert_eq!(derive_standing(&later, 100, 500).refunded, 200);
    }

    #[test]
    fn a_full_refund_during_an_inquiry_stands_after_the_inquiry_closes() {
        let facts = PaymentFacts {
            charges: vec![charge(500, 10)],
            refunds: vec![],
            disputes: vec!["warning_closed".into()],
        };
        let standing = derive_standing(&facts, 100, 500);
        assert_eq!((standing.hold, standing.credits_taken), (Some(Hold::Refunded), 100));
    }

    #[test]
    fn a_won_dispute_on_a_refunded_charge_does_not_lift_the_refund() {
        let facts = PaymentFacts {
            charges: vec![charge(500, 10)],
            refunds: vec![],
            disputes: vec!["won".into()],
        };
        assert_eq!(derive_standing(&facts, 100, 500).hold, Some(Hold::Refunded));
    }

    #[test]
    fn a_lost_dispute_outranks_everything_and_an_open_one_suspends() {
        let lost = PaymentFacts {
            charges: vec![charge(100, 10)],
            refunds: vec![],
            disputes: vec!["lost".into()],
        };
        assert_eq!(derive_standing(&lost, 100, 500).hold, Some(Hold::DisputeLost));
        let open = PaymentFacts {
            charges: vec![charge(100, 10)],
            refunds: vec![],
            disputes: vec!["warning_needs_response".into()],
        };
        let standing = derive_standing(&open, 100, 500);
        assert_eq!(
            (standing.hold, standing.credits_taken, standing.refunded),
            (Some(Hold::Disputed), 100, 100)
        );
    }

    #[test]
    fn refunds_known_before_their_charge_snapshot_count_against_the_order_amount() {
        let facts = PaymentFacts {
            charges: vec![],
            refunds: vec![refund(250, "succeeded", None)],
            disputes: vec![],
        };
        assert_eq!(derive_standing(&facts, 100, 500).credits_taken, 50);
    }
}
