//! What Stripe told us about a payment's refunds and disputes, kept as facts keyed by Stripe's own
//! ids whether or not the order they reverse is known yet. Each fact merges so that the result does
//! not depend on the order events arrive in, or how often: a charge keeps its latest snapshot, a
//! refund's and a dispute's status only move forward. `reversals` derives an order's standing from
//! them.

use sqlx::PgConnection;

use crate::stripe::lifecycle_objects::{ChargeObject, DisputeObject, RefundObject};

/// A refund that no longer takes money back.
pub const REFUND_UNDONE: &[&str] = &["failed", "canceled"];

/// Serialises everything done about one charge or one payment intent, until commit. A reversal
/// takes its charge's lock, then its payment intent's, before it looks for the order; fulfilment
/// and an invoice naming its payments take the payment intent's before the order's. So a refund
/// committing while its payment is being fulfilled is seen by one or the other, never by neither.
/// Always charge, then payment intent, then order.
pub async fn lock_payment(conn: &mut PgConnection, kind: &str, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("select pg_advisory_xact_lock(hashtext($1 || ':' || $2))")
        .bind(kind)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// A charge as an event showed it, `seen_at` being that event's `created`.
pub async fn record_charge(conn: &mut PgConnection, charge: &ChargeObject, seen_at: i64) -> Result<(), sqlx::Error> {
    let payment_intent = charge.payment_intent.as_ref().map(|p| p.id());
    sqlx::query(
        // Of two snapshots the later one wins; in the same second, the one that refunded more (a
        // charge's refunded total only drops when a refund fails, which Stripe reports as a refund).
        "insert into payment_charges as c
             (stripe_charge_id, stripe_payment_intent_id, amount, amount_refunded, seen_at)
         values ($1, $2, $3, $4, $5)
         on conflict (stripe_charge_id) do update set
             stripe_payment_intent_id = coalesce(c.stripe_payment_intent_id, excluded.stripe_payment_intent_id),
             amount = case when (excluded.seen_at, excluded.amount_refunded) > (c.seen_at, c.amount_refunded)
                           then excluded.amount else c.amount end,
             amount_refunded = case when (excluded.seen_at, excluded.amount_refunded) > (c.seen_at, c.amount_refunded)
                                    then excluded.amount_refunded else c.amount_refunded end,
             seen_at = greatest(c.seen_at, excluded.seen_at),
             updated_at = now()",
    )
    .bind(&charge.id)
    .bind(payment_intent)
    .bind(charge.amount.max(0))
    .bind(charge.amount_refunded.max(0))
    .bind(seen_at)
    .execute(&mut *conn)
    .await?;
    if let Some(payment_intent) = payment_intent {
        link_charge(conn, &charge.id, payment_intent).await?;
        // The charge's own running total replaces what an order refunded before facts were kept.
        sqlx::query("delete from payment_charges where stripe_charge_id = 'legacy:' || $1")
            .bind(payment_intent)
            .execute(&mut *conn)
            .await?;
    }
    for refund in charge.refunds.iter().flat_map(|list| &list.data) {
        record_refund(conn, refund, Some(&charge.id), seen_at).await?;
    }
    Ok(())
}

/// A refund as an event showed it. Its status only moves forward: pending or requires_action, then
/// succeeded, then failed or canceled; `failed_at` keeps the earliest event that saw it undone.
pub async fn record_refund(
    conn: &mut PgConnection,
    refund: &RefundObject,
    charge_id: Option<&str>,
    seen_at: i64,
) -> Result<(), sqlx::Error> {
    let charge_id = refund.charge.as_ref().map(|c| c.id()).or(charge_id);
    let status = refund.status.as_deref().unwrap_or("pending");
    let payment_intent = match (refund.payment_intent.as_ref(), charge_id) {
        (Some(intent), _) => Some(intent.id().to_owned()),
        (None, Some(charge_id)) => payment_intent_of_charge(conn, charge_id).await?,
        (None, None) => None,
    };
    sqlx::query(
        "insert into payment_refunds as r
             (stripe_refund_id, stripe_charge_id, stripe_payment_intent_id, amount, status, failed_at)
         values ($1, $2, $3, $4, $5, case when $5 = any($7) then $6 end)
         on conflict (stripe_refund_id) do update set
             stripe_charge_id = coalesce(r.stripe_charge_id, excluded.stripe_charge_id),
             stripe_payment_intent_id = coalesce(r.stripe_payment_intent_id, excluded.stripe_payment_intent_id),
             status = case when refund_rank(excluded.status) > refund_rank(r.status)
                           then excluded.status else r.status end,
             failed_at = least(r.failed_at, excluded.failed_at),
             updated_at = now()",
    )
    .bind(&refund.id)
    .bind(charge_id)
    .bind(payment_intent)
    .bind(refund.amount.max(0))
    .bind(status)
    .bind(seen_at)
    .bind(REFUND_UNDONE)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A dispute as an event showed it. Its status only moves forward: an inquiry, then a chargeback,
/// then closed (won, lost, warning_closed, …); a closed dispute never reopens.
pub async fn record_dispute(conn: &mut PgConnection, dispute: &DisputeObject, seen_at: i64) -> Result<(), sqlx::Error> {
    let payment_intent = dispute.payment_intent.as_ref().map(|p| p.id());
    let charge_id = dispute.charge.as_ref().map(|c| c.id());
    sqlx::query(
        "insert into disputes as d (stripe_dispute_id, stripe_payment_intent_id, stripe_charge_id, status, seen_at)
         values ($1, $2, $3, $4, $5)
         on conflict (stripe_dispute_id) do update set
             stripe_payment_intent_id = coalesce(d.stripe_payment_intent_id, excluded.stripe_payment_intent_id),
             stripe_charge_id = coalesce(d.stripe_charge_id, excluded.stripe_charge_id),
             status = case when (dispute_rank(excluded.status), excluded.seen_at) > (dispute_rank(d.status), d.seen_at)
                           then excluded.status else d.status end,
             seen_at = greatest(d.seen_at, excluded.seen_at),
             updated_at = now()",
    )
    .bind(&dispute.id)
    .bind(payment_intent)
    .bind(charge_id)
    .bind(&dispute.status)
    .bind(seen_at)
    .execute(&mut *conn)
    .await?;
    if let (Some(charge_id), Some(payment_intent)) = (charge_id, payment_intent) {
        link_charge(conn, charge_id, payment_intent).await?;
    }
    Ok(())
}

/// Refund objects name their charge but often not its payment intent (Stripe's own fixture has
/// it null): once a charge or dispute tells us which payment intent a charge belongs to, every
/// fact about that charge is found by it.
async fn link_charge(conn: &mut PgConnection, charge_id: &str, payment_intent: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update payment_refunds set stripe_payment_intent_id = $2
         where stripe_charge_id = $1 and stripe_payment_intent_id is null",
    )
    .bind(charge_id)
    .bind(payment_intent)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "update disputes set stripe_payment_intent_id = $2
         where stripe_charge_id = $1 and stripe_payment_intent_id is null",
    )
    .bind(charge_id)
    .bind(payment_intent)
    .execute(conn)
    .await?;
    Ok(())
}

/// The payment intent behind a charge, from any fact that named both.
pub async fn payment_intent_of_charge(conn: &mut PgConnection, charge_id: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "select stripe_payment_intent_id from payment_charges
         where stripe_charge_id = $1 and stripe_payment_intent_id is not null
         union all
         select stripe_payment_intent_id from disputes
         where stripe_charge_id = $1 and stripe_payment_intent_id is not null
         union all
         select stripe_payment_intent_id from payment_refunds
         where stripe_charge_id = $1 and stripe_payment_intent_id is not null
         limit 1",
    )
    .bind(charge_id)
    .fetch_optional(conn)
    .await
}

/// Everything on file about the given payment intents' charges.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PaymentFacts {
    pub charges: Vec<ChargeFact>,
    pub refunds: Vec<RefundFact>,
    /// Each dispute's status.
    pub disputes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ChargeFact {
    pub stripe_charge_id: String,
    pub stripe_payment_intent_id: Option<String>,
    pub amount: i64,
    pub amount_refunded: i64,
    pub seen_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RefundFact {
    pub stripe_charge_id: Option<String>,
    pub stripe_payment_intent_id: Option<String>,
    pub amount: i64,
    pub status: String,
    pub failed_at: Option<i64>,
}

pub async fn facts_for(conn: &mut PgConnection, payment_intents: &[String]) -> Result<PaymentFacts, sqlx::Error> {
    if payment_intents.is_empty() {
        return Ok(PaymentFacts::default());
    }
    let charges: Vec<ChargeFact> = sqlx::query_as(
        "select stripe_charge_id, stripe_payment_intent_id, amount, amount_refunded, seen_at
         from payment_charges where stripe_payment_intent_id = any($1)",
    )
    .bind(payment_intents)
    .fetch_all(&mut *conn)
    .await?;
    let charge_ids: Vec<&str> = charges.iter().map(|c| c.stripe_charge_id.as_str()).collect();
    let refunds: Vec<RefundFact> = sqlx::query_as(
        "select stripe_charge_id, stripe_payment_intent_id, amount, status, failed_at
         from payment_refunds where stripe_payment_intent_id = any($1) or stripe_charge_id = any($2)",
    )
    .bind(payment_intents)
    .bind(&charge_ids)
    .fetch_all(&mut *conn)
    .await?;
    let disputes: Vec<String> =
        sqlx::query_scalar("select status from disputes where stripe_payment_intent_id = any($1)")
            .bind(payment_intents)
            .fetch_all(conn)
            .await?;
    Ok(PaymentFacts {
        charges,
        refunds,
        disputes,
    })
}

/// Whether anything at all is on file for the payment intent: the common case at fulfilment is
/// nothing, and then the order's standing needs no derivation.
pub async fn any_facts_for(conn: &mut PgConnection, payment_intent: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "select exists (select 1 from payment_charges where stripe_payment_intent_id = $1)
             or exists (select 1 from payment_refunds where stripe_payment_intent_id = $1)
             or exists (select 1 from disputes where stripe_payment_intent_id = $1)",
    )
    .bind(payment_intent)
    .fetch_one(conn)
    .await
}
