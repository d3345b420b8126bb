//! The return page's fallback when the webhook is late: a pending order whose session is a few
//! seconds old is looked up at Stripe and, if paid, fulfilled through `fulfillment::apply_session`,
//! the webhook's own path, so the late webhook then finds it done. The database lets one request
//! per order per interval through (across instances too) and a token bucket caps the total, so a
//! crowd of polling browsers costs Stripe a handful of calls.

use std::time::Duration;

use uuid::Uuid;

use crate::{
    app::AppState,
    db,
    error::AppError,
    fulfillment::{SessionAction, apply_session},
    stripe::retrieve::retrieve_checkout_session,
};

/// Webhooks usually arrive within this; before it, asking Stripe would only duplicate them.
const SESSION_MIN_AGE: Duration = Duration::from_secs(3);
/// At most one retrieval per order per interval.
const PER_ORDER_INTERVAL: Duration = Duration::from_secs(10);
/// Shared by all orders: far below Stripe's 25 per second per endpoint.
pub const SYNC_CALLS_PER_SECOND: f64 = 5.0;
pub const SYNC_BURST: u32 = 5;

/// Returns whether the order may have changed, so the caller reads it again.
pub async fn sync_pending_order(state: &AppState, order_id: Uuid) -> Result<bool, AppError> {
    // Only stamps the time of this check: running it again is harmless.
    let session_id: Option<String> = db::retry_idempotent(&state.db, || {
        sqlx::query_scalar(
            "update orders set stripe_synced_at = now()
         where id = $1 and status = 'pending' and stripe_checkout_session_id is not null
           and created_at < now() - make_interval(secs => $2)
           and (stripe_synced_at is null or stripe_synced_at < now() - make_interval(secs => $3))
         returning stripe_checkout_session_id",
        )
        .bind(order_id)
        .bind(SESSION_MIN_AGE.as_secs_f64())
        .bind(PER_ORDER_INTERVAL.as_secs_f64())
        .fetch_optional(&state.db)
    })
    .await?;
    let Some(session_id) = session_id else {
        return Ok(false);
    };
    if !state.stripe_sync_limit.try_acquire() {
        tracing::debug!(%order_id, "return-page sync skipped: global rate cap reached");
        return Ok(false);
    }
    let session = match retrieve_checkout_session(&state.stripe, &session_id).await {
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
    let mut tx = db::begin(&state.db).await?;
    let cause = format!("return_page_sync:{session_id}");
    let (outcome, _) = apply_session(&mut tx, SessionAction::Complete, &session, &cause).await?;
    tx.commit().await?;
    tracing::info!(%order_id, outcome = outcome.as_str(), "return-page sync applied the session");
    Ok(true)
}
