//! What a Stripe event does to orders, credits and entitlements: the one place that decides.
//!
//! Each event is applied in one transaction that first claims its id in `processed_webhook_events`.
//! A redelivery finds the id taken and changes nothing; a concurrent delivery of the same event
//! waits on that row and then finds it taken. Different events about one order (`completed` and
//! `async_payment_succeeded`, say) are serialised by locking the order row, and the grant tables'
//! unique keys make a second grant impossible even if a future path forgets the lock.
//!
//! Every status change also sends `pg_notify('order_status', <order id>)` from its `update …
//! returning` in `store::orders` (no extra round trip; an update that matched no row sends
//! nothing). Postgres delivers it at commit and drops it on rollback, so a waiting
//! `/order-status` request (see `order_events`) never hears of a change that did not happen.
//! The webhook instead wakes the order's waiters after its commit (`crate::wakeups`): a
//! notification inside the transaction would make every fulfilment commit alone.
//!
//! The most common event of all, a paid one-time checkout of credits, is applied by one SQL
//! function in one round trip (`orders::fulfil_one_time_checkout`) when the order is pending and
//! priced as placed with nothing on file about its payment; it hands anything else back, claimed
//! and locked, to the code below. The function repeats this module's statements for that one
//! case, step for step, and the suite exercises both paths.

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::{
    credits, db,
    domain_error::DomainError,
    entitlement::EntitlementChange,
    lifecycle::{
        self,
        entitlement_state::refresh_entitlement,
        payment_owner::LockedPaidOrder,
        reversals::{Cause, settle_if_reversed, settle_order},
        subscriptions::{self, FetchedForEvent},
    },
    orders::OrderStatus,
    outcome::Outcome,
    store::{
        entitlements,
        orders::{self, LockedOrder, OneStatement, OneTimeCheckout, StripeIds},
        processed_events,
    },
    stripe::event::{Charged, CheckoutSessionObject, EventKind, WebhookEvent},
    wakeups::Wakeups,
};

/// Applies a verified event exactly once. Errors are transient (the database, or Stripe when a
/// subscription's current state is fetched): nothing is committed, so the caller answers 5xx and
/// Stripe's retry applies the event later. The webhook, the reconciler and `entitle replay` all
/// come through here.
///
/// With `wakeups` (the webhook's hot path), the transaction notifies nobody itself: the order's
/// long-polls and the outbox's senders are woken once it has committed (`crate::wakeups`), so
/// concurrent deliveries commit together. Without, the SQL notifies at commit as it always did.
pub async fn process_event(
    pool: &PgPool,
    stripe: &crate::stripe::StripeApi,
    event: &WebhookEvent,
    wakeups: Option<&Wakeups>,
) -> Result<Outcome, DomainError> {
    // Stripe is asked before the transaction opens, never inside one: a slow answer then holds no
    // pooled connection and no lock. A redelivery is recognised first, so it costs Stripe nothing.
    let kind = event.kind();
    let fetched = match kind {
        Some(kind) if kind.is_subscription() => {
            if already_processed(pool, &event.id).await? {
                return Ok(Outcome::Duplicate);
            }
            Some(subscriptions::fetch_for_event(stripe, event, kind).await?)
        }
        _ => None,
    };

    let mut tx = match wakeups {
        Some(_) => db::begin_waking_after_commit(pool).await?,
        None => db::begin(pool).await?,
    };

    let claimed = match paid_one_time_checkout(event, kind) {
        Some(session) => orders::fulfil_one_time_checkout(&mut tx, &one_time_checkout(event, &session)).await?,
        None => match processed_events::claim(&mut tx, &event.id, &event.event_type, event.created).await? {
            true => OneStatement::Claimed,
            false => OneStatement::Duplicate,
        },
    };
    let (outcome, order_id) = match claimed {
        OneStatement::Duplicate => {
            tx.commit().await?;
            return Ok(Outcome::Duplicate);
        }
        // Its outcome is recorded too.
        OneStatement::Fulfilled {
            order_id,
            user_id,
            credits,
        } => {
            tracing::info!(%order_id, %user_id, credits, "order fulfilled");
            (Outcome::Fulfilled, Some(order_id))
        }
        OneStatement::Claimed => {
            let (outcome, order_id) = match kind {
                Some(kind) => apply_event(&mut tx, event, kind, fetched).await?,
                None => (Outcome::IgnoredType, None),
            };
            processed_events::record_outcome(&mut tx, &event.id, outcome, order_id).await?;
            (outcome, order_id)
        }
    };
    tracing::Span::current().record(
        "order_id",
        tracing::field::display(order_id.map(|id| id.to_string()).unwrap_or_default()),
    );
    tx.commit().await?;
    if let Some(wakeups) = wakeups {
        // Whatever the event did, it may have changed the order and written outbox messages; a
        // wake-up too many costs a re-read, one too few a waiter's timer.
        wakeups.after_commit(order_id, true);
    }
    Ok(outcome)
}

/// The common webhook, which one statement can apply (`orders::fulfil_one_time_checkout`): a
/// paid checkout of a one-time payment. The statement looks at the order and hands back whatever
/// else it finds (see the migration `one_statement_fulfilment`); the rest of this module decides
/// those, and every event that is not this one.
fn paid_one_time_checkout(event: &WebhookEvent, kind: Option<EventKind>) -> Option<CheckoutSessionObject> {
    let paying = matches!(
        kind,
        Some(EventKind::CheckoutSessionCompleted | EventKind::CheckoutSessionAsyncPaymentSucceeded)
    );
    let session = paying.then(|| event.object_as::<CheckoutSessionObject>()).flatten()?;
    (session.is_paid() && session.subscription.is_none() && session.payment_intent.is_some()).then_some(session)
}

fn one_time_checkout<'a>(event: &'a WebhookEvent, session: &'a CheckoutSessionObject) -> OneTimeCheckout<'a> {
    let charged = session.charged();
    OneTimeCheckout {
        event_id: &event.id,
        event_type: &event.event_type,
        event_created: event.created,
        session_id: &session.id,
        order_id: named_order_id(session),
        payment_intent: session.payment_intent.as_ref().map_or("", |p| p.id()),
        customer: session.customer.as_ref().map(|c| c.id()),
        buyer_email: session.buyer_email(),
        currency: charged.currency,
        subtotal: charged.subtotal,
        total: charged.total,
        discount: charged.discount,
        tax: charged.tax,
        adds_up: charged.adds_up(),
    }
}

async fn already_processed(pool: &PgPool, event_id: &str) -> Result<bool, sqlx::Error> {
    db::retry_idempotent(pool, || processed_events::is_processed(pool, event_id)).await
}

async fn apply_event(
    conn: &mut PgConnection,
    event: &WebhookEvent,
    kind: EventKind,
    fetched: Option<FetchedForEvent>,
) -> Result<(Outcome, Option<Uuid>), DomainError> {
    let action = match kind {
        EventKind::CheckoutSessionCompleted => SessionAction::Complete,
        EventKind::CheckoutSessionAsyncPaymentSucceeded => SessionAction::Fulfil,
        EventKind::CheckoutSessionAsyncPaymentFailed => SessionAction::Fail,
        EventKind::CheckoutSessionExpired => SessionAction::Cancel,
        _ => return lifecycle::apply_lifecycle_event(conn, event, kind, fetched).await,
    };
    let Some(session) = event.object_as::<CheckoutSessionObject>() else {
        return Ok((Outcome::MalformedObject, None));
    };
    Ok(apply_session(conn, action, &session, &event.id).await?)
}

/// What a checkout session's new state does to its order. The webhook and the return page's sync
/// with Stripe both come here, so a payment is granted by one code path whichever notices it first.
pub async fn apply_session(
    conn: &mut PgConnection,
    action: SessionAction,
    session: &CheckoutSessionObject,
    event_id: &str,
) -> Result<(Outcome, Option<Uuid>), sqlx::Error> {
    if let Some(payment_intent) = &session.payment_intent {
        // Before the order's lock, as reversals take it: a refund of this payment committing
        // meanwhile is then seen here or sees the order paid.
        lifecycle::payment_facts::lock_payment(conn, "payment", payment_intent.id()).await?;
    }
    let Some(order) = lock_order_for_session(conn, session).await? else {
        return Ok((Outcome::NoMatchingOrder, None));
    };
    if order.session_id.as_deref().is_some_and(|stored| stored != session.id) {
        // The order was opened with another session; acting on this one could grant a purchase twice.
        tracing::warn!(order_id = %order.id, session_id = %session.id, "event names a session the order does not have");
        return Ok((Outcome::SessionMismatch, Some(order.id)));
    }
    let outcome = match action {
        SessionAction::Complete if !session.is_paid() => Outcome::AwaitingPayment,
        SessionAction::Complete | SessionAction::Fulfil => fulfil_order(conn, &order, session, event_id).await?,
        SessionAction::Fail => move_pending_order(conn, order.id, OrderStatus::Failed).await?,
        SessionAction::Cancel => move_pending_order(conn, order.id, OrderStatus::Canceled).await?,
    };
    if outcome != Outcome::Fulfilled {
        // Fulfilment stores them in its update to `paid`, one round trip fewer on the hot path.
        orders::record_stripe_ids(conn, order.id, &stripe_ids(session)).await?;
    }
    Ok((outcome, Some(order.id)))
}

pub enum SessionAction {
    /// `completed`: paid now, or still waiting for a delayed payment method.
    Complete,
    Fulfil,
    Fail,
    Cancel,
}

/// Finds the order by its stored session id, or else by the order id we sent to Stripe (for an event
/// that outran the write of the session id), and locks it for the rest of the transaction.
async fn lock_order_for_session(
    conn: &mut PgConnection,
    session: &CheckoutSessionObject,
) -> Result<Option<LockedOrder>, sqlx::Error> {
    if let Some(order) = orders::lock_by_session(conn, &session.id).await? {
        return Ok(Some(order));
    }
    match named_order_id(session) {
        None => Ok(None),
        Some(order_id) => orders::lock_by_id(conn, order_id).await,
    }
}

/// The order id we sent Stripe with the session: its client reference, else its metadata.
fn named_order_id(session: &CheckoutSessionObject) -> Option<Uuid> {
    session
        .client_reference_id
        .as_deref()
        .or_else(|| session.metadata_value("order_id"))
        .and_then(|id| Uuid::parse_str(id).ok())
}

/// The Stripe ids the session names; stored without overwriting ones the order already has.
fn stripe_ids(session: &CheckoutSessionObject) -> StripeIds<'_> {
    StripeIds {
        session_id: &session.id,
        payment_intent: session.payment_intent.as_ref().map(|p| p.id()),
        subscription: session.subscription.as_ref().map(|s| s.id()),
        customer: session.customer.as_ref().map(|c| c.id()),
        buyer_email: session.buyer_email(),
    }
}

/// Marks the order paid and grants what it was placed for, once. Stripe's subtotal (what it
/// priced before discounts and tax) and currency must match the order, and its total must add up
/// from the subtotal: a session that priced something else puts the order under review, for a
/// person to refund or grant by hand. What was actually charged is stored with the order. A refund
/// or dispute that outran the payment applies now.
async fn fulfil_order(
    conn: &mut PgConnection,
    order: &LockedOrder,
    session: &CheckoutSessionObject,
    event_id: &str,
) -> Result<Outcome, sqlx::Error> {
    if order.status.is_fulfilled() {
        return Ok(Outcome::AlreadyFulfilled);
    }
    let charged = session.charged();
    if !priced_as_ordered(order, session, &charged) {
        put_under_review(conn, order, session, &charged).await?;
        return Ok(Outcome::AmountMismatch);
    }
    let amounts = orders::PaidAmounts {
        paid: charged.total.unwrap_or_default(),
        discount: charged.discount,
        tax: charged.tax,
    };

    orders::mark_paid(conn, order.id, &stripe_ids(session), &amounts).await?;

    if order.credits > 0 {
        credits::grant_purchase(
            conn,
            &order.user_id,
            order.id,
            order.credits,
            order.credits_expire_after_days,
            event_id,
        )
        .await?;
    }
    let paid = LockedPaidOrder {
        id: order.id,
        user_id: order.user_id.clone(),
        status: OrderStatus::Paid,
    };
    match session.subscription.as_ref().map(|s| s.id()) {
        Some(subscription_id) => {
            // Taken before the entitlement row, in the order subscription events take them.
            lifecycle::subscriptions::lock_subscription(conn, subscription_id).await?;
            // Subscription events may have come first; what they stored (its state, the invoices'
            // payments and any reversal of them) now applies.
            lifecycle::subscriptions::adopt_stored_state(conn, subscription_id, order.id).await?;
            // Granted before the standing is settled, so a refund that came first takes it back.
            lifecycle::subscriptions::grant_paid_periods(conn, subscription_id, &paid, event_id, None).await?;
            settle_order(conn, &paid, event_id, Cause::Fulfilment).await?;
        }
        None => {
            let payment_intent = session.payment_intent.as_ref().map(|p| p.id());
            settle_if_reversed(conn, &paid, payment_intent, event_id).await?;
        }
    }
    if let Some(key) = &order.entitlement {
        // The history's `grant` row, once per order; the entitlement itself is derived from every
        // order that grants it.
        let grant = entitlements::Change {
            user_id: &order.user_id,
            key,
            order_id: order.id,
            change: EntitlementChange::Grant,
            event_id,
            detail: None,
        };
        entitlements::record(conn, &grant).await?;
        refresh_entitlement(conn, order.id, event_id, "checkout completed").await?;
    }
    tracing::info!(order_id = %order.id, user_id = %order.user_id, credits = order.credits, "order fulfilled");
    Ok(Outcome::Fulfilled)
}

/// Whether Stripe priced the session as the order was placed: the catalog price before discounts
/// and tax, in its currency, with a total that adds up. A discount or tax changes only the total,
/// so the security property holds: nobody is granted without Stripe having priced the catalog's
/// price. A trial is the one way to be granted for a subtotal of 0: nothing is due today, and only
/// an order placed with the plan's trial accepts it (the subscription then bills the price checkout
/// sent once the trial ends).
fn priced_as_ordered(order: &LockedOrder, session: &CheckoutSessionObject, charged: &Charged<'_>) -> bool {
    let currency_matches = charged
        .currency
        .is_some_and(|c| c.eq_ignore_ascii_case(&order.currency));
    let trial_started = order.trial_days.is_some()
        && session.needed_no_payment()
        && charged.subtotal == Some(0)
        && charged.total == Some(0);
    currency_matches && (charged.subtotal == Some(order.amount) || trial_started) && charged.adds_up()
}

/// Nothing is granted and the buyer is told the payment is being looked at; the operator's
/// `entitle review` lists the order with this reason.
async fn put_under_review(
    conn: &mut PgConnection,
    order: &LockedOrder,
    session: &CheckoutSessionObject,
    charged: &Charged<'_>,
) -> Result<(), sqlx::Error> {
    let amount = |value: Option<i64>| value.map_or("no amount".to_owned(), |a| a.to_string());
    let reason = format!(
        "session {} paid {} {} (subtotal {}, discount {}, tax {}); the order is {} {}",
        session.id,
        amount(charged.total),
        charged.currency.unwrap_or("no currency"),
        amount(charged.subtotal),
        charged.discount,
        charged.tax,
        order.amount,
        order.currency
    );
    tracing::error!(
        order_id = %order.id,
        expected_amount = order.amount,
        expected_currency = %order.currency,
        subtotal = ?charged.subtotal,
        total = ?charged.total,
        discount = charged.discount,
        tax = charged.tax,
        currency = ?charged.currency,
        "payment does not match the order; nothing granted, order under review"
    );
    orders::put_under_review(conn, order.id, &reason).await
}

/// Ends a pending order outside any event (Stripe refused the checkout, or a newer checkout
/// replaced it), on a pooled connection; retried on a dead one, as moving it twice is harmless.
pub async fn end_pending_order(pool: &PgPool, order_id: Uuid, to: OrderStatus) -> Result<(), sqlx::Error> {
    db::retry_idempotent(pool, || async {
        let mut conn = pool.acquire().await?;
        move_pending_order(&mut conn, order_id, to).await
    })
    .await?;
    Ok(())
}

/// `failed` and `canceled` only replace `pending`: a late `expired` never takes `paid` back.
async fn move_pending_order(conn: &mut PgConnection, order_id: Uuid, to: OrderStatus) -> Result<Outcome, sqlx::Error> {
    let moved = orders::move_pending(conn, order_id, to).await?;
    Ok(match (moved, to) {
        (true, OrderStatus::Failed) => Outcome::MarkedFailed,
        (true, _) => Outcome::MarkedCanceled,
        (false, _) => Outcome::StatusUnchanged,
    })
}
