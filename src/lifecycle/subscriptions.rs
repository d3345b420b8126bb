//! Subscription events (`customer.subscription.*`, `invoice.paid`, `invoice.payment_failed`).
//!
//! An event's snapshot may be stale: Stripe does not deliver in order. So we fetch the subscription
//! as Stripe holds it now and store that. The fetch happens before the event's transaction opens
//! (`fetch_for_event`), so a slow Stripe holds no pooled connection and no lock: at the first of
//! the month a burst of renewals would otherwise take the whole pool from checkouts and status
//! polls. Answers fetched concurrently may then be stored in either order, so each stored state
//! keeps when its answer arrived and only a later answer replaces it. The state is stored by
//! subscription id even when its checkout has not completed yet, and the completion applies it then.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use stripe::StripeError;
use uuid::Uuid;

use super::{
    entitlement_state::refresh_entitlement,
    payment_owner::LockedPaidOrder,
    plan_changes,
    reversals::{Cause, settle_order},
};
// Fulfilment takes the subscription's lock and hands it its stored state by these names.
pub use crate::store::subscriptions::{adopt_stored_state, lock as lock_subscription};
use crate::{
    credits,
    domain_error::DomainError,
    outcome::Outcome,
    store::{
        order_standing::{self, Owner},
        orders,
        subscriptions::{self, AnsweredState},
    },
    stripe::{
        ProviderError,
        event::{EventKind, WebhookEvent},
        failure,
        lifecycle_objects::{InvoiceObject, SubscriptionObject},
        retrieve::{retrieve_invoice_with_payments, retrieve_subscription},
    },
};

/// What a subscription event needs from Stripe, fetched before its transaction.
pub enum FetchedForEvent {
    /// The event itself settles it (it names no subscription, or is malformed): nothing to fetch.
    Settled(Outcome),
    Fetched(Box<StripeSubscription>),
}

pub struct StripeSubscription {
    subscription_id: String,
    /// The subscription, or Stripe's 404 when it does not know it.
    current: Result<SubscriptionObject, StripeError>,
    /// When Stripe's answer arrived: of two answers for one subscription, the later one is kept.
    answered_at: DateTime<Utc>,
    /// An `invoice.paid` event's invoice, and the same invoice with its payments when the event
    /// left them out (events never carry includable fields).
    paid_invoice: Option<InvoiceObject>,
    paid_invoice_payments: Option<InvoiceObject>,
}

/// What the event of `kind` (a subscription kind: `EventKind::is_subscription`) needs from Stripe.
pub async fn fetch_for_event(
    stripe: &crate::stripe::StripeApi,
    event: &WebhookEvent,
    kind: EventKind,
) -> Result<FetchedForEvent, DomainError> {
    let (subscription_id, paid_invoice) = if kind.is_invoice() {
        let Some(invoice) = event.object_as::<InvoiceObject>() else {
            return Ok(FetchedForEvent::Settled(Outcome::MalformedObject));
        };
        let Some(subscription_id) = invoice.subscription_id().map(str::to_owned) else {
            // A one-off invoice: nothing we sold.
            return Ok(FetchedForEvent::Settled(Outcome::IgnoredType));
        };
        let paid = (kind == EventKind::InvoicePaid).then_some(invoice);
        (subscription_id, paid)
    } else {
        match event.data.object.get("id").and_then(|id| id.as_str()) {
            Some(id) => (id.to_owned(), None),
            None => return Ok(FetchedForEvent::Settled(Outcome::MalformedObject)),
        }
    };

    let current = match retrieve_subscription(stripe, &subscription_id).await {
        Err(err) if !matches!(err, StripeError::Stripe(_, 404)) => {
            return Err(DomainError::PaymentProvider(ProviderError::Stripe(err)));
        }
        answer => answer,
    };
    let answered_at = Utc::now();
    let paid_invoice_payments = match &paid_invoice {
        // Without them a refund of this payment would find no order.
        Some(invoice) if current.is_ok() && invoice.payment_intent_ids().is_empty() => {
            match retrieve_invoice_with_payments(stripe, &invoice.id).await {
                Ok(with_payments) => Some(with_payments),
                // They only enrich the event: refusing it for good would make Stripe retry it
                // until it disables the endpoint, and the subscription's state would never land.
                Err(err) if failure::is_permanent_refusal(&err) => {
                    tracing::warn!(
                        invoice_id = %invoice.id,
                        http_status = %failure::HttpStatus(&err),
                        error = %failure::describe(&err),
                        "Stripe refused the invoice's payments; the event is applied without its payment link"
                    );
                    None
                }
                Err(err) => return Err(DomainError::PaymentProvider(ProviderError::Stripe(err))),
            }
        }
        _ => None,
    };
    Ok(FetchedForEvent::Fetched(Box::new(StripeSubscription {
        subscription_id,
        current,
        answered_at,
        paid_invoice,
        paid_invoice_payments,
    })))
}

/// Applies what `fetch_for_event` brought, inside the event's transaction.
pub async fn apply_subscription_event(
    conn: &mut PgConnection,
    event: &WebhookEvent,
    fetched: FetchedForEvent,
) -> Result<(Outcome, Option<Uuid>), DomainError> {
    let stripe_state = match fetched {
        FetchedForEvent::Settled(outcome) => return Ok((outcome, None)),
        FetchedForEvent::Fetched(stripe_state) => *stripe_state,
    };
    let subscription_id = stripe_state.subscription_id.as_str();
    // Everywhere an order is locked before its subscription (fulfilment takes them in that order).
    let order_hint = stripe_state
        .current
        .as_ref()
        .ok()
        .and_then(|current| current.metadata_value("order_id"))
        .and_then(|id| Uuid::parse_str(id).ok());
    if let Some(invoice) = &stripe_state.paid_invoice {
        // The payments it names, before the order, as reversals and fulfilment take them.
        let with_payments = stripe_state.paid_invoice_payments.as_ref().unwrap_or(invoice);
        let mut intents = with_payments.payment_intent_ids();
        intents.sort_unstable();
        for intent in intents {
            super::payment_facts::lock_payment(conn, "payment", intent).await?;
        }
    }
    subscriptions::lock_order_of(conn, subscription_id, order_hint).await?;
    subscriptions::lock(conn, subscription_id).await?;
    let current = match stripe_state.current {
        Ok(current) => current,
        Err(not_found) => {
            // Not ours (another account's, or a test object): retrying would never change the
            // answer. But one we have on file means our key points at the wrong account: keep the
            // event for Stripe's retry (and the reconciler) rather than consume it.
            if subscriptions::on_file(conn, subscription_id).await? {
                tracing::error!(
                    subscription_id,
                    "Stripe does not know a subscription we have on file; check STRIPE_SECRET_KEY"
                );
                return Err(DomainError::PaymentProvider(ProviderError::Stripe(not_found)));
            }
            tracing::warn!(subscription_id, "Stripe does not know the subscription an event names");
            return Ok((Outcome::NoMatchingOrder, None));
        }
    };

    let mut period_end = current.current_period_end();
    if let Some(invoice) = stripe_state
        .paid_invoice
        .as_ref()
        .filter(|i| !i.opens_a_trial(&current))
    {
        period_end = period_end.max(invoice.period_end());
        let with_payments = stripe_state.paid_invoice_payments.as_ref().unwrap_or(invoice);
        let paid = subscriptions::PaidInvoice {
            subscription_id,
            invoice_id: &with_payments.id,
            billing_reason: invoice.billing_reason.as_deref(),
            event_id: &event.id,
        };
        subscriptions::record_payments(conn, &with_payments.payment_intent_ids(), &paid).await?;
    }
    let plan_id = plan_changes::plan_of(conn, &current).await?;
    let order_id = store_subscription_state(
        conn,
        &current,
        plan_id.as_deref(),
        period_end,
        stripe_state.answered_at,
        &event.id,
    )
    .await?;

    let Some(order_id) = order_id else {
        tracing::warn!(subscription_id, "subscription names no order of ours");
        return Ok((Outcome::NoMatchingOrder, None));
    };
    // Already locked above, with the subscription's order.
    let order = order_standing::owner(conn, order_id).await?;
    match order {
        Some(Owner { status, user_id }) if status.is_fulfilled() => {
            // Before the credits, so a renewal at a new price grants the new plan's.
            plan_changes::follow_plan(conn, order_id, subscription_id, &event.id).await?;
            if let Some(invoice) = stripe_state.paid_invoice.as_ref().filter(|i| i.is_proration()) {
                plan_changes::grant_proration_credits(conn, order_id, &user_id, &current, invoice, &event.id).await?;
            }
            if let Some(invoice) = &stripe_state.paid_invoice {
                // A refund or dispute of this payment may have come first.
                let order = LockedPaidOrder {
                    id: order_id,
                    user_id,
                    status,
                };
                // Granted before the standing is settled, so a refund that came first takes it back.
                // Only this invoice: the earlier ones were granted at the plan they were paid at
                // (a plan change since must not grant them again at the new one).
                grant_paid_periods(conn, subscription_id, &order, &event.id, Some(&invoice.id)).await?;
                settle_order(conn, &order, &event.id, Cause::Fulfilment).await?;
            }
            let detail = format!("{} (subscription {})", event.event_type, current.status);
            refresh_entitlement(conn, order_id, &event.id, &detail).await?;
            Ok((Outcome::SubscriptionSynced, Some(order_id)))
        }
        Some(_) => Ok((Outcome::SubscriptionStored, Some(order_id))),
        None => Ok((Outcome::NoMatchingOrder, None)),
    }
}

/// Each paid period's credits when the order's plan grants them: once per invoice, expiring at
/// the subscription's period end. Run when an invoice is paid (`only` that invoice) and when the
/// checkout completes (every invoice paid before it was recorded and is granted then).
pub async fn grant_paid_periods(
    conn: &mut PgConnection,
    subscription_id: &str,
    order: &LockedPaidOrder,
    event_id: &str,
    only: Option<&str>,
) -> Result<(), sqlx::Error> {
    let credits = orders::period_credits(conn, order.id).await?;
    if credits == 0 {
        return Ok(());
    }
    let periods = subscriptions::paid_periods(conn, subscription_id).await?;
    let due = periods
        .invoice_ids
        .iter()
        .filter(|id| only.is_none_or(|only| only == id.as_str()));
    for invoice_id in due {
        credits::grant_period(
            conn,
            &order.user_id,
            order.id,
            invoice_id,
            credits,
            periods.current_period_end,
            event_id,
        )
        .await?;
    }
    Ok(())
}

/// Writes Stripe's current state; the period end only moves forward. Returns the order it belongs
/// to, from the metadata checkout put on the subscription or from the order that recorded it.
async fn store_subscription_state(
    conn: &mut PgConnection,
    subscription: &SubscriptionObject,
    plan_id: Option<&str>,
    period_end: Option<i64>,
    answered_at: DateTime<Utc>,
    event_id: &str,
) -> Result<Option<Uuid>, sqlx::Error> {
    let state = AnsweredState {
        subscription_id: &subscription.id,
        order_from_metadata: subscription
            .metadata_value("order_id")
            .and_then(|id| Uuid::parse_str(id).ok()),
        user_id: subscription.metadata_value("user_id"),
        plan_id: subscription.metadata_value("plan_id"),
        plan_from_price: plan_id,
        status: &subscription.status,
        current_period_end: period_end.and_then(|secs| DateTime::<Utc>::from_timestamp(secs, 0)),
        cancel_at_period_end: subscription.cancel_at_period_end,
        event_id,
        answered_at,
    };
    subscriptions::store_state(conn, &state).await
}
