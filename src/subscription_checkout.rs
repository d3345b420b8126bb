//! At most one open checkout per user and subscription entitlement. Two open at once (a second tab,
//! a page left open while starting over) could both be paid, billing the buyer twice for one
//! entitlement. A unique index on pending subscription orders catches the second; the checkout
//! then closes the first at Stripe and tries again. The first tab's page stops accepting payment,
//! which is what starting over means.

use sqlx::PgPool;
use stripe::StripeError;

use crate::{
    db,
    domain_error::DomainError,
    fulfillment::end_pending_order,
    orders::OrderStatus,
    store::orders,
    stripe::{ProviderError, expire_checkout_session, retrieve::retrieve_checkout_session},
};

/// The index behind the rule (migrations/20261124000003_one_open_subscription_checkout.sql).
const ONE_OPEN_CHECKOUT_INDEX: &str = "orders_one_open_subscription_checkout";
/// An open checkout without a session this old lost its request before Stripe answered.
const SESSIONLESS_CHECKOUT_GIVE_UP_SECS: f64 = 60.0;

/// Whether inserting an order failed because the user already has an open checkout for it.
pub fn is_open_checkout_conflict(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db_err) if db_err.constraint() == Some(ONE_OPEN_CHECKOUT_INDEX))
}

pub fn checkout_in_progress() -> DomainError {
    DomainError::Conflict {
        code: "checkout_in_progress",
        message: "Another checkout for this subscription is being opened; try again in a moment.",
    }
}

/// Closes the user's open checkout for `entitlement` so a new one can be opened. Holds no
/// database connection while Stripe answers.
pub async fn close_open_checkout(
    db: &PgPool,
    stripe: &crate::stripe::StripeApi,
    user_id: &str,
    entitlement: &str,
) -> Result<(), DomainError> {
    let open = db::retry_idempotent(db, || {
        orders::open_subscription_checkout(db, user_id, entitlement, SESSIONLESS_CHECKOUT_GIVE_UP_SECS)
    })
    .await?;
    let Some(orders::OpenCheckout {
        id: order_id,
        session_id,
        old,
    }) = open
    else {
        // It was paid, canceled or closed meanwhile.
        return Ok(());
    };
    let Some(session_id) = session_id else {
        if !old {
            // Its request is asking Stripe for a session right now.
            return Err(checkout_in_progress());
        }
        end_pending_order(db, order_id, OrderStatus::Failed).await?;
        return Ok(());
    };

    match expire_checkout_session(stripe, &session_id).await {
        Ok(()) => {}
        // Stripe only expires open sessions: this one was completed, expired, or is unknown.
        Err(ProviderError::Stripe(StripeError::Stripe(_, 400 | 404))) => {
            if session_was_completed(stripe, &session_id).await? {
                tracing::info!(%order_id, "a new subscription checkout refused: the open one was just completed");
                return Err(DomainError::Conflict {
                    code: "already_subscribed",
                    message: "Your other checkout for this subscription was just completed.",
                });
            }
        }
        Err(err) => return Err(DomainError::PaymentProvider(err)),
    }
    // Canceled here rather than when `checkout.session.expired` arrives, so the new order fits
    // now; the event then finds nothing to change. Waiting return pages hear of it.
    end_pending_order(db, order_id, OrderStatus::Canceled).await?;
    tracing::info!(%order_id, session_id, "open subscription checkout closed for a new one");
    Ok(())
}

async fn session_was_completed(stripe: &crate::stripe::StripeApi, session_id: &str) -> Result<bool, DomainError> {
    match retrieve_checkout_session(stripe, session_id).await {
        Ok(session) => Ok(session.status.as_deref() == Some("complete")),
        Err(StripeError::Stripe(_, 404)) => Ok(false),
        Err(err) => Err(DomainError::PaymentProvider(ProviderError::Stripe(err))),
    }
}
