//! `payment_charges`, `payment_refunds` and `disputes`: what Stripe told us about a payment's
//! refunds and disputes, each row merged so that arrival order and repetition do not matter.

use sqlx::PgConnection;

/// Refund statuses that no longer take money back.
pub const REFUND_UNDONE: &[&str] = &["failed", "canceled"];

/// Serialises everything done about one charge (`kind` "charge") or payment intent ("payment")
/// until commit.
pub async fn lock(conn: &mut PgConnection, kind: &str, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query!("select pg_advisory_xact_lock(hashtext($1 || ':' || $2))", kind, id)
        .execute(conn)
        .await?;
    Ok(())
}

pub struct ChargeSnapshot<'a> {
    pub charge_id: &'a str,
    pub payment_intent: Option<&'a str>,
    pub amount: i64,
    pub amount_refunded: i64,
    pub seen_at: i64,
}

/// Of two snapshots of a charge the later one wins; in the same second, the one that refunded more
/// (a charge's refunded total only drops when a refund fails, which Stripe reports as a refund).
pub async fn upsert_charge(conn: &mut PgConnection, charge: &ChargeSnapshot<'_>) -> Result<(), sqlx::Error> {
    sqlx::query!(
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
        charge.charge_id,
        charge.payment_intent,
        charge.amount.max(0),
        charge.amount_refunded.max(0),
        charge.seen_at,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The charge's own running total replaces the snapshot the migration made of an order refunded
/// before facts were kept.
pub async fn drop_legacy_snapshot(conn: &mut PgConnection, payment_intent: &str) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "delete from payment_charges where stripe_charge_id = 'legacy:' || $1",
        payment_intent
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub struct RefundReport<'a> {
    pub refund_id: &'a str,
    pub charge_id: Option<&'a str>,
    pub payment_intent: Option<&'a str>,
    pub amount: i64,
    pub status: &'a str,
    pub seen_at: i64,
}

/// A refund's status only moves forward (pending or requires_action, succeeded, then failed or
/// canceled); `failed_at` keeps the earliest event that saw it undone.
pub async fn upsert_refund(conn: &mut PgConnection, refund: &RefundReport<'_>) -> Result<(), sqlx::Error> {
    let undone: Vec<String> = REFUND_UNDONE.iter().map(|s| (*s).to_owned()).collect();
    sqlx::query!(
        "insert into payment_refunds as r
             (stripe_refund_id, stripe_charge_id, stripe_payment_intent_id, amount, status, failed_at)
         values ($1, $2, $3, $4, $5::text, case when $5::text = any($7::text[]) then $6::bigint end)
         on conflict (stripe_refund_id) do update set
             stripe_charge_id = coalesce(r.stripe_charge_id, excluded.stripe_charge_id),
             stripe_payment_intent_id = coalesce(r.stripe_payment_intent_id, excluded.stripe_payment_intent_id),
             status = case when refund_rank(excluded.status) > refund_rank(r.status)
                           then excluded.status else r.status end,
             failed_at = least(r.failed_at, excluded.failed_at),
             updated_at = now()",
        refund.refund_id,
        refund.charge_id,
        refund.payment_intent,
        refund.amount.max(0),
        refund.status,
        refund.seen_at,
        &undone,
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub struct DisputeReport<'a> {
    pub dispute_id: &'a str,
    pub charge_id: Option<&'a str>,
    pub payment_intent: Option<&'a str>,
    pub status: &'a str,
    pub seen_at: i64,
}

/// A dispute's status only moves forward (inquiry, chargeback, closed); a closed one never reopens.
pub async fn upsert_dispute(conn: &mut PgConnection, dispute: &DisputeReport<'_>) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "insert into disputes as d (stripe_dispute_id, stripe_payment_intent_id, stripe_charge_id, status, seen_at)
         values ($1, $2, $3, $4, $5)
         on conflict (stripe_dispute_id) do update set
             stripe_payment_intent_id = coalesce(d.stripe_payment_intent_id, excluded.stripe_payment_intent_id),
             stripe_charge_id = coalesce(d.stripe_charge_id, excluded.stripe_charge_id),
             status = case when (dispute_rank(excluded.status), excluded.seen_at) > (dispute_rank(d.status), d.seen_at)
                           then excluded.status else d.status end,
             seen_at = greatest(d.seen_at, excluded.seen_at),
             updated_at = now()",
        dispute.dispute_id,
        dispute.payment_intent,
        dispute.charge_id,
        dispute.status,
        dispute.seen_at,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Once a charge's payment intent is known, every fact about the charge is found by it.
pub async fn link_charge(conn: &mut PgConnection, charge_id: &str, payment_intent: &str) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update payment_refunds set stripe_payment_intent_id = $2
         where stripe_charge_id = $1 and stripe_payment_intent_id is null",
        charge_id,
        payment_intent
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "update disputes set stripe_payment_intent_id = $2
         where stripe_charge_id = $1 and stripe_payment_intent_id is null",
        charge_id,
        payment_intent
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The payment intent behind a charge, from any fact that named both.
pub async fn payment_intent_of_charge(conn: &mut PgConnection, charge_id: &str) -> Result<Option<String>, sqlx::Error> {
    let found = sqlx::query_scalar!(
        r#"select stripe_payment_intent_id as "id!" from payment_charges
           where stripe_charge_id = $1 and stripe_payment_intent_id is not null
           union all
           select stripe_payment_intent_id from disputes
           where stripe_charge_id = $1 and stripe_payment_intent_id is not null
           union all
           select stripe_payment_intent_id from payment_refunds
           where stripe_charge_id = $1 and stripe_payment_intent_id is not null
           limit 1"#,
        charge_id
    )
    .fetch_optional(conn)
    .await?;
    Ok(found)
}

/// Everything on file about some payment intents' charges.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PaymentFacts {
    pub charges: Vec<ChargeFact>,
    pub refunds: Vec<RefundFact>,
    /// Each dispute's status.
    pub disputes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeFact {
    pub stripe_charge_id: String,
    pub stripe_payment_intent_id: Option<String>,
    pub amount: i64,
    pub amount_refunded: i64,
    pub seen_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
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
    let charges = sqlx::query_as!(
        ChargeFact,
        "select stripe_charge_id, stripe_payment_intent_id, amount, amount_refunded, seen_at
         from payment_charges where stripe_payment_intent_id = any($1)",
        payment_intents
    )
    .fetch_all(&mut *conn)
    .await?;
    let charge_ids: Vec<String> = charges.iter().map(|c| c.stripe_charge_id.clone()).collect();
    let refunds = sqlx::query_as!(
        RefundFact,
        "select stripe_charge_id, stripe_payment_intent_id, amount, status, failed_at
         from payment_refunds where stripe_payment_intent_id = any($1) or stripe_charge_id = any($2)",
        payment_intents,
        &charge_ids
    )
    .fetch_all(&mut *conn)
    .await?;
    let disputes = sqlx::query_scalar!(
        "select status from disputes where stripe_payment_intent_id = any($1)",
        payment_intents
    )
    .fetch_all(conn)
    .await?;
    Ok(PaymentFacts {
        charges,
        refunds,
        disputes,
    })
}

/// Whether anything at all is on file for the payment intent.
pub async fn any_facts_for(conn: &mut PgConnection, payment_intent: &str) -> Result<bool, sqlx::Error> {
    let any = sqlx::query_scalar!(
        r#"select (exists (select 1 from payment_charges where stripe_payment_intent_id = $1)
              or exists (select 1 from payment_refunds where stripe_payment_intent_id = $1)
              or exists (select 1 from disputes where stripe_payment_intent_id = $1)) as "any!""#,
        payment_intent
    )
    .fetch_one(conn)
    .await?;
    Ok(any)
}

/// A dispute as stored: its id and status.
pub struct StoredDispute {
    pub stripe_dispute_id: String,
    pub status: String,
}

/// The disputes on file for some payment intents.
pub async fn disputes_of(
    conn: &mut PgConnection,
    payment_intents: &[String],
) -> Result<Vec<StoredDispute>, sqlx::Error> {
    sqlx::query_as!(
        StoredDispute,
        "select stripe_dispute_id, status from disputes where stripe_payment_intent_id = any($1) order by 1",
        payment_intents
    )
    .fetch_all(conn)
    .await
}
