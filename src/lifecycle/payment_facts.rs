//! What Stripe told us about a payment's refunds and disputes, kept as facts keyed by Stripe's own
//! ids whether or not the order they reverse is known yet (`store::payment_facts` merges each so
//! that the result does not depend on the order events arrive in, or how often: a charge keeps its
//! latest snapshot, a refund's and a dispute's status only move forward). `reversals` derives an
//! order's standing from them.

use sqlx::PgConnection;

pub use crate::store::payment_facts::{
    ChargeFact, PaymentFacts, REFUND_UNDONE, RefundFact, any_facts_for, facts_for, payment_intent_of_charge,
};
use crate::{
    store::payment_facts::{self as store, ChargeSnapshot, DisputeReport, RefundReport},
    stripe::lifecycle_objects::{ChargeObject, DisputeObject, RefundObject},
};

/// Serialises everything done about one charge or one payment intent, until commit. A reversal
/// takes its charge's lock, then its payment intent's, before it looks for the order; fulfilment
/// and an invoice naming its payments take the payment intent's before the order's. So a refund
/// committing while its payment is being fulfilled is seen by one or the other, never by neither.
/// Always charge, then payment intent, then order.
pub async fn lock_payment(conn: &mut PgConnection, kind: &str, id: &str) -> Result<(), sqlx::Error> {
    store::lock(conn, kind, id).await
}

/// A charge as an event showed it, `seen_at` being that event's `created`.
pub async fn record_charge(conn: &mut PgConnection, charge: &ChargeObject, seen_at: i64) -> Result<(), sqlx::Error> {
    let payment_intent = charge.payment_intent.as_ref().map(|p| p.id());
    let snapshot = ChargeSnapshot {
        charge_id: &charge.id,
        payment_intent,
        amount: charge.amount,
        amount_refunded: charge.amount_refunded,
        seen_at,
    };
    store::upsert_charge(conn, &snapshot).await?;
    if let Some(payment_intent) = payment_intent {
        // Refund objects name their charge but often not its payment intent (Stripe's own
        // fixture has it null): from now on every fact about the charge is found by it.
        store::link_charge(conn, &charge.id, payment_intent).await?;
        store::drop_legacy_snapshot(conn, payment_intent).await?;
    }
    for refund in charge.refunds.iter().flat_map(|list| &list.data) {
        record_refund(conn, refund, Some(&charge.id), seen_at).await?;
    }
    Ok(())
}

/// A refund as an event showed it, with the payment intent of its charge when it names none.
pub async fn record_refund(
    conn: &mut PgConnection,
    refund: &RefundObject,
    charge_id: Option<&str>,
    seen_at: i64,
) -> Result<(), sqlx::Error> {
    let charge_id = refund.charge.as_ref().map(|c| c.id()).or(charge_id);
    let payment_intent = match (refund.payment_intent.as_ref(), charge_id) {
        (Some(intent), _) => Some(intent.id().to_owned()),
        (None, Some(charge_id)) => payment_intent_of_charge(conn, charge_id).await?,
        (None, None) => None,
    };
    let report = RefundReport {
        refund_id: &refund.id,
        charge_id,
        payment_intent: payment_intent.as_deref(),
        amount: refund.amount,
        status: refund.status.as_deref().unwrap_or("pending"),
        seen_at,
    };
    store::upsert_refund(conn, &report).await
}

/// A dispute as an event showed it.
pub async fn record_dispute(conn: &mut PgConnection, dispute: &DisputeObject, seen_at: i64) -> Result<(), sqlx::Error> {
    let payment_intent = dispute.payment_intent.as_ref().map(|p| p.id());
    let charge_id = dispute.charge.as_ref().map(|c| c.id());
    let report = DisputeReport {
        dispute_id: &dispute.id,
        charge_id,
        payment_intent,
        status: &dispute.status,
        seen_at,
    };
    store::upsert_dispute(conn, &report).await?;
    if let (Some(charge_id), Some(payment_intent)) = (charge_id, payment_intent) {
        store::link_charge(conn, charge_id, payment_intent).await?;
    }
    Ok(())
}
