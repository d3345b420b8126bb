//! `subscriptions` (each subscription as Stripe last answered for it, kept by id even before its
//! checkout completes) and `subscription_payments` (which subscription a payment paid for), with
//! the locks that serialise work on one subscription.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

/// Serialises everything done to one subscription, whichever event or path does it, until commit.
/// Taken after the order's lock and before the entitlement row is touched, everywhere, so two
/// paths cannot deadlock.
pub async fn lock(conn: &mut PgConnection, subscription_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "select pg_advisory_xact_lock(hashtext('subscription:' || $1))",
        subscription_id
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Locks the order the subscription belongs to, if we know it: by the order id checkout put in
/// its metadata, or by the order that recorded it.
pub async fn lock_order_of(
    conn: &mut PgConnection,
    subscription_id: &str,
    from_metadata: Option<Uuid>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "select 1 as locked from orders
         where id = coalesce($2, (select id from orders where stripe_subscription_id = $1 limit 1))
         for no key update",
        subscription_id,
        from_metadata
    )
    .fetch_all(conn)
    .await?;
    Ok(())
}

pub async fn on_file(conn: &mut PgConnection, subscription_id: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"select exists (select 1 from subscriptions where stripe_subscription_id = $1) as "on_file!""#,
        subscription_id
    )
    .fetch_one(conn)
    .await
}

/// One answer from Stripe about a subscription, with when it arrived.
pub struct AnsweredState<'a> {
    pub subscription_id: &'a str,
    /// The order checkout put in the subscription's metadata, when it names one.
    pub order_from_metadata: Option<Uuid>,
    pub user_id: Option<&'a str>,
    /// The plan checkout named in the subscription's metadata: the plan it started on.
    pub plan_id: Option<&'a str>,
    /// The plan the subscription's item price maps to now, when it maps to one.
    pub plan_from_price: Option<&'a str>,
    pub status: &'a str,
    pub current_period_end: Option<DateTime<Utc>>,
    pub cancel_at_period_end: bool,
    pub event_id: &'a str,
    pub answered_at: DateTime<Utc>,
}

/// Writes Stripe's answer unless a later one is on file; the period end only moves forward.
/// Returns the order it belongs to, from the metadata or from the order that recorded it.
pub async fn store_state(conn: &mut PgConnection, state: &AnsweredState<'_>) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        // `newer`: no answer on file arrived after this one (null for rows from before the column).
        "insert into subscriptions as s
             (stripe_subscription_id, order_id, user_id, plan_id, status, current_period_end,
              cancel_at_period_end, stripe_event_id, stripe_answered_at)
         values ($1, coalesce($2, (select id from orders where stripe_subscription_id = $1 limit 1)),
                 $3, coalesce($10, $4), $5, $6, $7, $8, $9)
         on conflict (stripe_subscription_id) do update set
             order_id = coalesce(s.order_id, excluded.order_id),
             user_id = coalesce(s.user_id, excluded.user_id),
             -- The plan follows the item's price, so the newest answer whose price maps to a plan
             -- names it; checkout's metadata only fills a row that has none (it never changes).
             plan_id = case when s.stripe_answered_at > excluded.stripe_answered_at
                            then coalesce(s.plan_id, excluded.plan_id)
                            else coalesce($10, s.plan_id, excluded.plan_id) end,
             status = case when s.stripe_answered_at > excluded.stripe_answered_at
                           then s.status else excluded.status end,
             current_period_end = greatest(s.current_period_end, excluded.current_period_end),
             cancel_at_period_end = case when s.stripe_answered_at > excluded.stripe_answered_at
                                         then s.cancel_at_period_end else excluded.cancel_at_period_end end,
             stripe_event_id = case when s.stripe_answered_at > excluded.stripe_answered_at
                                    then s.stripe_event_id else excluded.stripe_event_id end,
             stripe_answered_at = greatest(s.stripe_answered_at, excluded.stripe_answered_at),
             updated_at = now()
         returning order_id",
        state.subscription_id,
        state.order_from_metadata,
        state.user_id,
        state.plan_id,
        state.status,
        state.current_period_end,
        state.cancel_at_period_end,
        state.event_id,
        state.answered_at,
        state.plan_from_price,
    )
    .fetch_one(conn)
    .await
}

/// One paid invoice of a subscription: its id and why Stripe issued it.
pub struct PaidInvoice<'a> {
    pub subscription_id: &'a str,
    pub invoice_id: &'a str,
    pub billing_reason: Option<&'a str>,
    pub event_id: &'a str,
}

/// Links each payment of a paid invoice to its subscription, once: a refund or dispute of one of
/// them then finds the order.
pub async fn record_payments(
    conn: &mut PgConnection,
    payment_intents: &[&str],
    invoice: &PaidInvoice<'_>,
) -> Result<(), sqlx::Error> {
    for payment_intent_id in payment_intents {
        sqlx::query!(
            "insert into subscription_payments
                 (stripe_payment_intent_id, stripe_subscription_id, stripe_invoice_id, stripe_event_id, billing_reason)
             values ($1, $2, $3, $4, $5)
             on conflict do nothing",
            payment_intent_id,
            invoice.subscription_id,
            invoice.invoice_id,
            invoice.event_id,
            invoice.billing_reason,
        )
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Called when a subscription's checkout completes, under the subscription's lock: the state its
/// earlier events stored now belongs to the order.
pub async fn adopt_stored_state(
    conn: &mut PgConnection,
    subscription_id: &str,
    order_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update subscriptions set order_id = coalesce(order_id, $2) where stripe_subscription_id = $1",
        subscription_id,
        order_id
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The invoices whose payments were recorded for the subscription, with the period end stored
/// for it: the periods paid before its checkout completed. A proration invoice
/// (`subscription_update`) pays for part of a period already paid, so it is none of them.
pub struct PaidPeriods {
    pub invoice_ids: Vec<String>,
    pub current_period_end: Option<DateTime<Utc>>,
}

pub async fn paid_periods(conn: &mut PgConnection, subscription_id: &str) -> Result<PaidPeriods, sqlx::Error> {
    sqlx::query_as!(
        PaidPeriods,
        r#"select coalesce(array(select distinct stripe_invoice_id from subscription_payments
                                 where stripe_subscription_id = $1
                                   and billing_reason is distinct from 'subscription_update'
                                 order by 1), '{}') as "invoice_ids!",
                  (select current_period_end from subscriptions where stripe_subscription_id = $1) as current_period_end"#,
        subscription_id
    )
    .fetch_one(conn)
    .await
}

/// The payments that paid an invoice.
pub async fn invoice_payment_intents(conn: &mut PgConnection, invoice_id: &str) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar!(
        "select stripe_payment_intent_id from subscription_payments where stripe_invoice_id = $1 order by 1",
        invoice_id
    )
    .fetch_all(conn)
    .await
}

/// A subscription as stored, for the drift check.
pub struct StoredSubscription {
    pub stripe_subscription_id: String,
    pub order_id: Option<Uuid>,
    pub status: String,
    pub current_period_end: Option<DateTime<Utc>>,
    pub cancel_at_period_end: bool,
    pub plan_id: Option<String>,
}

/// Every subscription not yet over, as we last stored it.
pub async fn live(db: &sqlx::PgPool) -> Result<Vec<StoredSubscription>, sqlx::Error> {
    sqlx::query_as!(
        StoredSubscription,
        "select stripe_subscription_id, order_id, status, current_period_end, cancel_at_period_end, plan_id
         from subscriptions where status not in ('canceled', 'incomplete_expired')
         order by stripe_subscription_id"
    )
    .fetch_all(db)
    .await
}

/// The payments recorded for a subscription's invoices.
pub async fn payment_intents_of(db: &sqlx::PgPool, subscription_id: &str) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar!(
        "select stripe_payment_intent_id from subscription_payments where stripe_subscription_id = $1 order by 1",
        subscription_id
    )
    .fetch_all(db)
    .await
}

/// Whether a payment of the invoice was recorded.
pub async fn invoice_recorded(db: &sqlx::PgPool, invoice_id: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"select exists (select 1 from subscription_payments where stripe_invoice_id = $1) as "recorded!""#,
        invoice_id
    )
    .fetch_one(db)
    .await
}

/// A user's subscription that is still running, with the plan it is on.
pub struct LiveSubscription {
    pub stripe_subscription_id: String,
    pub order_id: Uuid,
    pub plan_id: Option<String>,
}

/// The user's running subscription (active, trialing or past due) whose order was fulfilled; of
/// several, the one paid furthest ahead.
pub async fn live_of_user(conn: &mut PgConnection, user_id: &str) -> Result<Option<LiveSubscription>, sqlx::Error> {
    sqlx::query_as!(
        LiveSubscription,
        r#"select s.stripe_subscription_id, o.id as order_id, s.plan_id
           from subscriptions s join orders o on o.stripe_subscription_id = s.stripe_subscription_id
           where o.user_id = $1 and o.status = 'paid' and s.status in ('active', 'trialing', 'past_due')
           order by s.current_period_end desc nulls last, s.stripe_subscription_id
           limit 1"#,
        user_id
    )
    .fetch_optional(conn)
    .await
}
