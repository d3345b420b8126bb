//! `orders` on its checkout side: the pending order a checkout writes and the session Stripe gives
//! it, what checkout events and the return page's sync do to it, and the owner-scoped reads behind
//! `/order-status` and `/cancel-checkout`. Reversals' side of the order is `order_standing`.
//!
//! Every status change here ends in `returning pg_notify('order_status', id::text)`: Postgres sends
//! it only for a row that changed, at commit, so a waiting `/order-status` hears of every change
//! and of nothing that did not happen. The one on fulfilment's hot path (`mark_paid`) stands down
//! when the caller sends it after the commit instead (`crate::wakeups`).

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::orders::{OrderStatus, OrderView};

/// An order as a checkout writes it: what it costs and grants is fixed here, so a catalog edited
/// before the payment arrives changes nothing for it.
pub struct NewOrder<'a> {
    pub id: Uuid,
    pub user_id: &'a str,
    pub plan_id: &'a str,
    pub amount: i64,
    pub currency: &'a str,
    pub credits: i64,
    pub credits_expire_after_days: Option<i32>,
    pub credits_per_period: i64,
    pub entitlement: Option<&'a str>,
    /// Subscriptions with a trial: the only orders a session that charged nothing may grant.
    pub trial_days: Option<i32>,
    /// Named only for subscriptions: a unique index allows one open checkout per user and
    /// entitlement (see `subscription_checkout`).
    pub subscription_entitlement: Option<&'a str>,
}

pub async fn insert_pending(conn: &mut PgConnection, order: &NewOrder<'_>) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "insert into orders (id, user_id, plan_id, status, amount, currency, credits, credits_expire_after_days,
                             credits_per_period, entitlement, subscription_entitlement, trial_days)
         values ($1, $2, $3, 'pending', $4, $5, $6, $7, $8, $9, $10, $11)",
        order.id,
        order.user_id,
        order.plan_id,
        order.amount,
        order.currency,
        order.credits,
        order.credits_expire_after_days,
        order.credits_per_period,
        order.entitlement,
        order.subscription_entitlement,
        order.trial_days,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Stores the session Stripe opened for the order. Setting a value, it is safe to send twice.
pub async fn set_session(db: &PgPool, order_id: Uuid, session_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update orders set stripe_checkout_session_id = $2, updated_at = now() where id = $1",
        order_id,
        session_id
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Serialises one user's checkouts until commit, so each counts the orders committed before it.
pub async fn lock_user_checkouts(conn: &mut PgConnection, user_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query!("select pg_advisory_xact_lock(hashtext('checkout:' || $1))", user_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Seconds until the user may open another checkout, if `limit` orders of theirs are already in
/// the last `window_secs`: the newest order that would make one more exceed the limit has to
/// leave the window first.
pub async fn seconds_until_room(
    conn: &mut PgConnection,
    user_id: &str,
    window_secs: f64,
    limit: i64,
) -> Result<Option<f64>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"select extract(epoch from created_at + make_interval(secs => $2) - now())::float8 as "room_in!"
           from orders
           where user_id = $1 and created_at > now() - make_interval(secs => $2)
           order by created_at desc
           offset $3 limit 1"#,
        user_id,
        window_secs,
        limit - 1
    )
    .fetch_optional(conn)
    .await
}

/// A user's open checkout for a subscription entitlement.
pub struct OpenCheckout {
    pub id: Uuid,
    pub session_id: Option<String>,
    /// Older than the caller's give-up age.
    pub old: bool,
}

pub async fn open_subscription_checkout(
    db: &PgPool,
    user_id: &str,
    entitlement: &str,
    old_after_secs: f64,
) -> Result<Option<OpenCheckout>, sqlx::Error> {
    sqlx::query_as!(
        OpenCheckout,
        r#"select id, stripe_checkout_session_id as session_id,
                  created_at < now() - make_interval(secs => $3) as "old!"
           from orders
           where user_id = $1 and subscription_entitlement = $2 and status = 'pending'"#,
        user_id,
        entitlement,
        old_after_secs
    )
    .fetch_optional(db)
    .await
}

/// What canceling a checkout needs to know about an order of the user's.
pub struct OwnedCheckout {
    pub status: OrderStatus,
    pub session_id: Option<String>,
}

pub async fn owned_checkout(db: &PgPool, order_id: Uuid, user_id: &str) -> Result<Option<OwnedCheckout>, sqlx::Error> {
    sqlx::query_as!(
        OwnedCheckout,
        r#"select status as "status: OrderStatus", stripe_checkout_session_id as session_id
           from orders where id = $1 and user_id = $2"#,
        order_id,
        user_id
    )
    .fetch_optional(db)
    .await
}

/// The order with this id, if it belongs to `user_id`.
pub async fn find_owned(db: &PgPool, order_id: Uuid, user_id: &str) -> Result<Option<OrderView>, sqlx::Error> {
    sqlx::query_as!(
        OrderView,
        r#"select id as order_id, status as "status: OrderStatus", plan_id, amount, currency, created_at, paid_at,
                  amount_refunded, amount_paid, amount_discount, amount_tax
           from orders where id = $1 and user_id = $2"#,
        order_id,
        user_id
    )
    .fetch_optional(db)
    .await
}

/// The order opened with this Checkout Session, if it belongs to `user_id`.
pub async fn find_owned_by_session(
    db: &PgPool,
    session_id: &str,
    user_id: &str,
) -> Result<Option<OrderView>, sqlx::Error> {
    sqlx::query_as!(
        OrderView,
        r#"select id as order_id, status as "status: OrderStatus", plan_id, amount, currency, created_at, paid_at,
                  amount_refunded, amount_paid, amount_discount, amount_tax
           from orders where stripe_checkout_session_id = $1 and user_id = $2"#,
        session_id,
        user_id
    )
    .fetch_optional(db)
    .await
}

/// An order found by `find_owned_batch`, with the owner it was asked for.
pub struct OwnedOrder {
    pub user_id: String,
    pub order: OrderView,
}

/// The flat row `query_as!` fills (it has no `flatten`).
struct OwnedOrderRow {
    user_id: String,
    order_id: Uuid,
    status: OrderStatus,
    plan_id: String,
    amount: i64,
    currency: String,
    created_at: DateTime<Utc>,
    paid_at: Option<DateTime<Utc>>,
    amount_refunded: i64,
    amount_paid: Option<i64>,
    amount_discount: Option<i64>,
    amount_tax: Option<i64>,
}

/// Many `find_owned` in one query: `order_ids[i]` is asked for `user_ids[i]`, and a row comes back
/// only for a pair that matches, so someone else's order is still not found.
pub async fn find_owned_batch(
    db: &PgPool,
    order_ids: &[Uuid],
    user_ids: &[String],
) -> Result<Vec<OwnedOrder>, sqlx::Error> {
    let rows = sqlx::query_as!(
        OwnedOrderRow,
        r#"select o.user_id, o.id as order_id, o.status as "status: OrderStatus", o.plan_id, o.amount, o.currency,
                  o.created_at, o.paid_at, o.amount_refunded, o.amount_paid, o.amount_discount, o.amount_tax
           from unnest($1::uuid[], $2::text[]) as asked (id, user_id)
           join orders o on o.id = asked.id and o.user_id = asked.user_id"#,
        order_ids,
        user_ids
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| OwnedOrder {
            user_id: row.user_id,
            order: OrderView {
                order_id: row.order_id,
                status: row.status,
                plan_id: row.plan_id,
                amount: row.amount,
                currency: row.currency,
                created_at: row.created_at,
                paid_at: row.paid_at,
                amount_refunded: row.amount_refunded,
                amount_paid: row.amount_paid,
                amount_discount: row.amount_discount,
                amount_tax: row.amount_tax,
            },
        })
        .collect())
}

/// What applying a checkout session to its order needs, read under the order's lock.
pub struct LockedOrder {
    pub id: Uuid,
    pub user_id: String,
    pub status: OrderStatus,
    pub amount: i64,
    pub currency: String,
    pub session_id: Option<String>,
    /// What the order grants, fixed when it was placed.
    pub credits: i64,
    pub credits_expire_after_days: Option<i32>,
    pub entitlement: Option<String>,
    pub trial_days: Option<i32>,
}

/// Locks the order opened with this session `for no key update`: it serialises everything that
/// changes the order yet lets other transactions insert rows that reference it (their foreign-key
/// check takes `key share`, which `for update` would block, deadlocking with a subscription event
/// that holds the subscription's lock).
pub async fn lock_by_session(conn: &mut PgConnection, session_id: &str) -> Result<Option<LockedOrder>, sqlx::Error> {
    sqlx::query_as!(
        LockedOrder,
        r#"select id, user_id, status as "status: OrderStatus", amount, currency,
                  stripe_checkout_session_id as session_id, credits, credits_expire_after_days, entitlement,
                  trial_days
           from orders where stripe_checkout_session_id = $1 for no key update"#,
        session_id
    )
    .fetch_optional(conn)
    .await
}

/// As `lock_by_session`, by the order's id.
pub async fn lock_by_id(conn: &mut PgConnection, order_id: Uuid) -> Result<Option<LockedOrder>, sqlx::Error> {
    sqlx::query_as!(
        LockedOrder,
        r#"select id, user_id, status as "status: OrderStatus", amount, currency,
                  stripe_checkout_session_id as session_id, credits, credits_expire_after_days, entitlement,
                  trial_days
           from orders where id = $1 for no key update"#,
        order_id
    )
    .fetch_optional(conn)
    .await
}

/// The Stripe ids a checkout session names, and the buyer's email it collected. Stored with
/// `coalesce`, so a value already on the order is never overwritten.
pub struct StripeIds<'a> {
    pub session_id: &'a str,
    pub payment_intent: Option<&'a str>,
    pub subscription: Option<&'a str>,
    pub customer: Option<&'a str>,
    pub buyer_email: Option<&'a str>,
}

pub async fn record_stripe_ids(
    conn: &mut PgConnection,
    order_id: Uuid,
    ids: &StripeIds<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update orders set
             stripe_checkout_session_id = coalesce(stripe_checkout_session_id, $2),
             stripe_payment_intent_id = coalesce(stripe_payment_intent_id, $3),
             stripe_subscription_id = coalesce(stripe_subscription_id, $4),
             stripe_customer_id = coalesce(stripe_customer_id, $5),
             buyer_email = coalesce(buyer_email, $6),
             updated_at = now()
         where id = $1",
        order_id,
        ids.session_id,
        ids.payment_intent,
        ids.subscription,
        ids.customer,
        ids.buyer_email,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// What the buyer was actually charged, in the order's currency: the total after discounts with
/// tax, and the discount and tax within it.
pub struct PaidAmounts {
    pub paid: i64,
    pub discount: i64,
    pub tax: i64,
}

/// Marks the order paid with what was charged and stores its Stripe ids as `record_stripe_ids`
/// does, in one statement (one round trip fewer on fulfilment's hot path). It notifies unless the
/// transaction began with `db::begin_waking_after_commit`, whose caller wakes the order's
/// long-polls after the commit instead (`crate::wakeups`).
pub async fn mark_paid(
    conn: &mut PgConnection,
    order_id: Uuid,
    ids: &StripeIds<'_>,
    amounts: &PaidAmounts,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update orders set
             status = 'paid', paid_at = now(), updated_at = now(),
             amount_paid = $7, amount_discount = $8, amount_tax = $9,
             stripe_checkout_session_id = coalesce(stripe_checkout_session_id, $2),
             stripe_payment_intent_id = coalesce(stripe_payment_intent_id, $3),
             stripe_subscription_id = coalesce(stripe_subscription_id, $4),
             stripe_customer_id = coalesce(stripe_customer_id, $5),
             buyer_email = coalesce(buyer_email, $6)
         where id = $1
         returning case when current_setting('entitle.wake_after_commit', true) is distinct from 'on'
                        then pg_notify('order_status', id::text) end",
        order_id,
        ids.session_id,
        ids.payment_intent,
        ids.subscription,
        ids.customer,
        ids.buyer_email,
        amounts.paid,
        amounts.discount,
        amounts.tax,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Puts the order under review with the reason a person will read; an order already under review
/// keeps its first reason and wakes nobody.
pub async fn put_under_review(conn: &mut PgConnection, order_id: Uuid, reason: &str) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update orders set status = 'under_review', review_reason = $2, updated_at = now()
         where id = $1 and status <> 'under_review'
         returning pg_notify('order_status', id::text)",
        order_id,
        reason
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Moves the order from `pending` to `to`; returns whether it was pending. Any other status stays,
/// so a late `expired` never takes `paid` back.
pub async fn move_pending(conn: &mut PgConnection, order_id: Uuid, to: OrderStatus) -> Result<bool, sqlx::Error> {
    let moved = sqlx::query!(
        "update orders set status = $2, updated_at = now() where id = $1 and status = 'pending'
         returning pg_notify('order_status', id::text)",
        order_id,
        to as OrderStatus
    )
    .execute(conn)
    .await?
    .rows_affected();
    Ok(moved == 1)
}

/// The return page's claim on asking Stripe about a pending order now.
pub struct SyncClaim {
    pub session_id: String,
    pub claimed_at: DateTime<Utc>,
    /// The stamp the claim replaced, put back if the claim is given up.
    pub synced_before: Option<DateTime<Utc>>,
}

/// Claims the order's sync slot by stamping the time of this check, if the order is pending, has a
/// session at least `min_age_secs` old and was not synced in the last `interval_secs`. Running it
/// again is harmless.
pub async fn claim_sync(
    db: &PgPool,
    order_id: Uuid,
    min_age_secs: f64,
    interval_secs: f64,
) -> Result<Option<SyncClaim>, sqlx::Error> {
    sqlx::query_as!(
        SyncClaim,
        r#"update orders o set stripe_synced_at = now()
           from orders before
           where o.id = $1 and before.id = o.id and o.status = 'pending'
             and o.stripe_checkout_session_id is not null
             and o.created_at < now() - make_interval(secs => $2)
             and (o.stripe_synced_at is null or o.stripe_synced_at < now() - make_interval(secs => $3))
           returning o.stripe_checkout_session_id as "session_id!", o.stripe_synced_at as "claimed_at!",
                     before.stripe_synced_at as "synced_before?""#,
        order_id,
        min_age_secs,
        interval_secs
    )
    .fetch_optional(db)
    .await
}

/// Gives a claim back, unless another poller has claimed the slot since.
pub async fn release_sync(db: &PgPool, order_id: Uuid, claim: &SyncClaim) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update orders set stripe_synced_at = $3 where id = $1 and stripe_synced_at = $2",
        order_id,
        claim.claimed_at,
        claim.synced_before
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The credits each paid period of the order's subscription grants, fixed when it was placed.
pub async fn period_credits(conn: &mut PgConnection, order_id: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!("select credits_per_period from orders where id = $1", order_id)
        .fetch_one(conn)
        .await
}

/// An order paid within the drift check's window, with the payments it compares with Stripe's.
pub struct PaidOrderRef {
    pub id: Uuid,
    pub payment_intent: Option<String>,
    pub subscription_id: Option<String>,
}

/// Orders first paid at or after `since`, oldest first (refunded and disputed ones included: they
/// were paid). Only the drift check reads this, once per run, so it scans rather than index paid_at.
pub async fn paid_since(db: &PgPool, since: DateTime<Utc>) -> Result<Vec<PaidOrderRef>, sqlx::Error> {
    sqlx::query_as!(
        PaidOrderRef,
        r#"select id, stripe_payment_intent_id as payment_intent, stripe_subscription_id as subscription_id
           from orders where paid_at >= $1 order by paid_at, id"#,
        since
    )
    .fetch_all(db)
    .await
}

/// A pending order with its session, for the drift check.
pub struct PendingCheckout {
    pub id: Uuid,
    pub session_id: String,
}

/// Pending orders with a session, created in `[from, to)`.
pub async fn pending_checkouts_between(
    db: &PgPool,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<PendingCheckout>, sqlx::Error> {
    sqlx::query_as!(
        PendingCheckout,
        r#"select id, stripe_checkout_session_id as "session_id!" from orders
           where status = 'pending' and stripe_checkout_session_id is not null
             and created_at >= $1 and created_at < $2
           order by created_at, id"#,
        from,
        to
    )
    .fetch_all(db)
    .await
}

/// What an order grants once its subscription moved to another plan.
pub struct FollowedPlan {
    pub user_id: String,
    pub plan_id: String,
    pub old_entitlement: Option<String>,
    pub new_entitlement: Option<String>,
}

/// Makes the order grant what its subscription's plan (as last stored) grants: the plan's
/// entitlement key and period credits. `None` when it already does, or the plan is unknown.
/// The order's `plan_id` stays the plan it was bought as.
pub async fn follow_subscription_plan(
    conn: &mut PgConnection,
    order_id: Uuid,
    subscription_id: &str,
) -> Result<Option<FollowedPlan>, sqlx::Error> {
    sqlx::query_as!(
        FollowedPlan,
        r#"with target as (
               select p.id, p.entitlement, p.credits_per_period
               from subscriptions s join plans p on p.id = s.plan_id
               where s.stripe_subscription_id = $2 and p.kind = 'subscription'
           ), before as (
               select entitlement from orders where id = $1
           )
           update orders o set entitlement = t.entitlement, credits_per_period = t.credits_per_period,
                               updated_at = now()
           from target t, before b
           where o.id = $1
             and (o.entitlement is distinct from t.entitlement or o.credits_per_period <> t.credits_per_period)
           returning o.user_id, t.id as plan_id, b.entitlement as old_entitlement, o.entitlement as new_entitlement"#,
        order_id,
        subscription_id
    )
    .fetch_optional(conn)
    .await
}

/// A paid one-time checkout as `fulfil_one_time_checkout` takes it: the event, and the session
/// as `fulfillment` reads it.
pub struct OneTimeCheckout<'a> {
    pub event_id: &'a str,
    pub event_type: &'a str,
    pub event_created: i64,
    pub session_id: &'a str,
    /// The order id the session names (its client reference, else its metadata).
    pub order_id: Option<Uuid>,
    pub payment_intent: &'a str,
    pub customer: Option<&'a str>,
    pub buyer_email: Option<&'a str>,
    pub currency: Option<&'a str>,
    pub subtotal: Option<i64>,
    pub total: Option<i64>,
    pub discount: i64,
    pub tax: i64,
    pub adds_up: bool,
}

/// What the one-statement fulfilment did.
#[derive(Debug, PartialEq, Eq)]
pub enum OneStatement {
    /// The event's id was already taken; nothing written.
    Duplicate,
    /// Paid, granted and the outcome recorded: the transaction only has to commit.
    Fulfilled {
        order_id: Uuid,
        user_id: String,
        credits: i64,
    },
    /// Not the common case: the id is claimed and the payment's and order's locks are held, nothing
    /// else is written, and the event is the caller's to apply.
    Claimed,
}

/// The migration `one_statement_fulfilment`'s function: a paid one-time checkout's claim, locks,
/// payment and grant in one round trip, when nothing about it needs the Rust path's judgement.
pub async fn fulfil_one_time_checkout(
    conn: &mut PgConnection,
    checkout: &OneTimeCheckout<'_>,
) -> Result<OneStatement, sqlx::Error> {
    let row = sqlx::query!(
        r#"select outcome as "outcome!", order_id, user_id, credits
           from fulfil_one_time_checkout($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"#,
        checkout.event_id,
        checkout.event_type,
        checkout.event_created,
        checkout.session_id,
        checkout.order_id,
        checkout.payment_intent,
        checkout.customer,
        checkout.buyer_email,
        checkout.currency,
        checkout.subtotal,
        checkout.total,
        checkout.discount,
        checkout.tax,
        checkout.adds_up,
    )
    .fetch_one(conn)
    .await?;
    Ok(match (row.outcome.as_str(), row.order_id, row.user_id, row.credits) {
        ("duplicate", ..) => OneStatement::Duplicate,
        ("fulfilled", Some(order_id), Some(user_id), Some(credits)) => OneStatement::Fulfilled {
            order_id,
            user_id,
            credits,
        },
        ("claimed", ..) => OneStatement::Claimed,
        (other, ..) => {
            return Err(sqlx::Error::Protocol(format!(
                "fulfil_one_time_checkout answered {other:?}"
            )));
        }
    })
}
