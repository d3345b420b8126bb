//! Subscription events (`customer.subscription.*`, `invoice.paid`, `invoice.payment_failed`).
//!
//! An event's snapshot may be stale: Stripe does not deliver in order. So under a per-subscription
//! lock we fetch the subscription as Stripe holds it now and apply that; whichever event comes
//! last, the state written is the newest. The state is stored by subscription id even when its
//! checkout has not completed yet, and the completion applies it then.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use stripe::StripeError;
use uuid::Uuid;

use super::entitlement_state::refresh_entitlement;
use crate::{
    error::AppError,
    fulfillment::Outcome,
    orders::OrderStatus,
    stripe::{
        ProviderError,
        event::WebhookEvent,
        lifecycle_objects::{InvoiceObject, SubscriptionObject},
        retrieve::{retrieve_invoice_with_payments, retrieve_subscription},
    },
};

pub async fn apply_subscription_event(
    conn: &mut PgConnection,
    stripe: &stripe::Client,
    event: &WebhookEvent,
) -> Result<(Outcome, Option<Uuid>), AppError> {
    let (subscription_id, paid_invoice) = if event.event_type.starts_with("invoice.") {
        let Some(invoice) = event.object_as::<InvoiceObject>() else {
            return Ok((Outcome::MalformedObject, None));
        };
        let Some(subscription_id) = invoice.subscription_id().map(str::to_owned) else {
            // A one-off invoice: nothing we sold.
            return Ok((Outcome::IgnoredType, None));
        };
        let paid = (event.event_type == "invoice.paid").then_some(invoice);
        (subscription_id, paid)
    } else {
        match event.data.object.get("id").and_then(|id| id.as_str()) {
            Some(id) => (id.to_owned(), None),
            None => return Ok((Outcome::MalformedObject, None)),
        }
    };

    lock_subscription(conn, &subscription_id).await?;
    let current = match retrieve_subscription(stripe, &subscription_id).await {
        Ok(current) => current,
        // Not ours (another account's, or a test object): retrying would never change the answer.
        // But one we have on file means our key points at the wrong account: keep the event for
        // Stripe's retry (and the reconciler) rather than consume it.
        Err(err @ StripeError::Stripe(_, 404)) => {
            if subscription_on_file(conn, &subscription_id).await? {
                tracing::error!(
                    subscription_id,
                    "Stripe does not know a subscription we have on file; check STRIPE_SECRET_KEY"
                );
                return Err(AppError::PaymentProvider(ProviderError::Stripe(err)));
            }
            tracing::warn!(subscription_id, "Stripe does not know the subscription an event names");
            return Ok((Outcome::NoMatchingOrder, None));
        }
        Err(err) => return Err(AppError::PaymentProvider(ProviderError::Stripe(err))),
    };

    let mut period_end = current.current_period_end();
    if let Some(invoice) = &paid_invoice {
        period_end = period_end.max(invoice.period_end());
        if invoice.payment_intent_ids().is_empty() {
            // Events leave out `payments`; ask for it, or a refund of this payment finds no order.
            let expanded = retrieve_invoice_with_payments(stripe, &invoice.id)
                .await
                .map_err(|err| AppError::PaymentProvider(ProviderError::Stripe(err)))?;
            record_subscription_payments(conn, &expanded, &subscription_id, &event.id).await?;
        } else {
            record_subscription_payments(conn, invoice, &subscription_id, &event.id).await?;
        }
    }
    let order_id = store_subscription_state(conn, &current, period_end, &event.id).await?;

    let Some(order_id) = order_id else {
        tracing::warn!(subscription_id, "subscription names no order of ours");
        return Ok((Outcome::NoMatchingOrder, None));
    };
    let status: Option<OrderStatus> = sqlx::query_scalar("select status from orders where id = $1")
        .bind(order_id)
        .fetch_optional(&mut *conn)
        .await?;
    match status {
        Some(OrderStatus::Paid | OrderStatus::Refunded | OrderStatus::Disputed) => {
            let detail = format!("{} (subscription {})", event.event_type, current.status);
            refresh_entitlement(conn, order_id, &event.id, &detail).await?;
            Ok((Outcome::SubscriptionSynced, Some(order_id)))
        }
        Some(_) => Ok((Outcome::SubscriptionStored, Some(order_id))),
        None => Ok((Outcome::NoMatchingOrder, None)),
    }
}

/// Serialises everything done to one subscription, whichever event or path does it, until commit.
/// Taken before the entitlement row is touched, everywhere, so two paths cannot deadlock.
async fn subscription_on_file(conn: &mut PgConnection, subscription_id: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("select exists (select 1 from subscriptions where stripe_subscription_id = $1)")
        .bind(subscription_id)
        .fetch_one(conn)
        .await
}

pub async fn lock_subscription(conn: &mut PgConnection, subscription_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("select pg_advisory_xact_lock(hashtext('subscription:' || $1))")
        .bind(subscription_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Writes Stripe's current state; the period end only moves forward. Returns the order it belongs
/// to, from the metadata checkout put on the subscription or from the order that recorded it.
async fn store_subscription_state(
    conn: &mut PgConnection,
    subscription: &SubscriptionObject,
    period_end: Option<i64>,
    event_id: &str,
) -> Result<Option<Uuid>, sqlx::Error> {
    let period_end = period_end.and_then(|secs| DateTime::<Utc>::from_timestamp(secs, 0));
    let order_from_metadata = subscription
        .metadata_value("order_id")
        .and_then(|id| Uuid::parse_str(id).ok());
    sqlx::query_scalar(
        "insert into subscriptions as s
             (stripe_subscription_id, order_id, user_id, plan_id, status, current_period_end,
              cancel_at_period_end, stripe_event_id)
         values ($1, coalesce($2, (select id from orders where stripe_subscription_id = $1 limit 1)),
                 $3, $4, $5, $6, $7, $8)
         on conflict (stripe_subscription_id) do update set
             order_id = coalesce(s.order_id, excluded.order_id),
             user_id = coalesce(s.user_id, excluded.user_id),
             plan_id = coalesce(s.plan_id, excluded.plan_id),
             status = excluded.status,
             current_period_end = greatest(s.current_period_end, excluded.current_period_end),
             cancel_at_period_end = excluded.cancel_at_period_end,
             stripe_event_id = excluded.stripe_event_id,
             updated_at = now()
         returning order_id",
    )
    .bind(&subscription.id)
    .bind(order_from_metadata)
    .bind(subscription.metadata_value("user_id"))
    .bind(subscription.metadata_value("plan_id"))
    .bind(&subscription.status)
    .bind(period_end)
    .bind(subscription.cancel_at_period_end)
    .bind(event_id)
    .fetch_one(conn)
    .await
}

async fn record_subscription_payments(
    conn: &mut PgConnection,
    invoice: &InvoiceObject,
    subscription_id: &str,
    event_id: &str,
) -> Result<(), sqlx::Error> {
    for payment_intent_id in invoice.payment_intent_ids() {
        sqlx::query(
            "insert into subscription_payments (stripe_payment_intent_id, stripe_subscription_id, stripe_invoice_id, stripe_event_id)
             values ($1, $2, $3, $4)
             on conflict do nothing",
        )
        .bind(payment_intent_id)
        .bind(subscription_id)
        .bind(&invoice.id)
        .bind(event_id)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Called when a subscription's checkout completes: whatever its earlier events stored applies now.
pub async fn apply_stored_state(
    conn: &mut PgConnection,
    subscription_id: &str,
    order_id: Uuid,
    event_id: &str,
) -> Result<(), sqlx::Error> {
    lock_subscription(conn, subscription_id).await?;
    sqlx::query("update subscriptions set order_id = coalesce(order_id, $2) where stripe_subscription_id = $1")
        .bind(subscription_id)
        .bind(order_id)
        .execute(&mut *conn)
        .await?;
    refresh_entitlement(conn, order_id, event_id, "checkout completed").await?;
    Ok(())
}
