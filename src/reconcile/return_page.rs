//! The return page's fallback when the webhook is late: a pending order whose session is a few
//! seconds old is looked up at Stripe and, if paid, fulfilled through `fulfillment::apply_session`,
//! the webhook's own path, so the late webhook then finds it done. The database lets one request
//! per order per interval through (across instances too) and a token bucket caps the total, so a
//! crowd of polling browsers costs Stripe a handful of calls.

use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    db,
    domain_error::DomainError,
    fulfillment::{SessionAction, apply_session},
    rate_limit::SharedRateLimit,
    store::orders,
    stripe::retrieve::retrieve_checkout_session,
};

/// Webhooks usually arrive within this; before it, asking Stripe would only duplicate them.
const SESSION_MIN_AGE: Duration = Duration::from_secs(3);
/// At most one retrieval per order per interval.
const PER_ORDER_INTERVAL: Duration = Duration::from_secs(10);

/// Returns whether the order may have changed, so the caller reads it again.
/// `limit` is the fleet's budget of Stripe calls for return pages.
pub async fn sync_pending_order(
    db: &PgPool,
    stripe: &crate::stripe::StripeApi,
    limit: &SharedRateLimit,
    order_id: Uuid,
) -> Result<bool, DomainError> {
    // Claims the order's slot by stamping the time of this check: running it again is harmless.
    let claimed = db::retry_idempotent(db, || {
        orders::claim_sync(
            db,
            order_id,
            SESSION_MIN_AGE.as_secs_f64(),
            PER_ORDER_INTERVAL.as_secs_f64(),
        )
    })
    .await?;
    let Some(claim) = claimed else {
        return Ok(false);
    };
    // The slot is claimed before the token is taken (a poll of an order that is not due must not
    // spend one), so without a token it is given back: the next poll, here or on an instance with
    // tokens left, asks Stripe instead of waiting out the interval. Only this claim is undone, and
    // a claim is held by one poller at a time, so one order still causes at most one call per
    // interval.
    // A database that cannot say counts as no token: this was only a shortcut.
    if !limit.try_acquire(db).await.unwrap_or(false) {
        tracing::debug!(%order_id, "return-page sync skipped: global rate cap reached");
        db::retry_idempotent(db, || orders::release_sync(db, order_id, &claim)).await?;
        return Ok(false);
    }
    let session = match retrieve_checkout_session(stripe, &claim.session_id).await {
        Ok(session) => session,
        Err(err) => {
            // The page keeps polling and the webhook is still coming; this was only a shortcut.
            tracing::warn!(
                %order_id,
                http_status = %crate::stripe::failure::HttpStatus(&err),
                error = %err,
                "return-page sync could not reach Stripe"
            );
            return Ok(false);
        }
    };
    if !session.is_paid() {
        return Ok(false);
    }
    let mut tx = db::begin(db).await?;
    let cause = format!("return_page_sync:{}", claim.session_id);
    let (outcome, _) = apply_session(&mut tx, SessionAction::Complete, &session, &cause).await?;
    tx.commit().await?;
    tracing::info!(%order_id, outcome = outcome.as_str(), "return-page sync applied the session");
    Ok(true)
}
