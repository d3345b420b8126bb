//! The app's webhook endpoints as configured: synced into `outbox_endpoints` when the server
//! starts, and reported, so an endpoint that is disabled or failing is in the log of every start.

use sqlx::PgPool;

use crate::{config::AppWebhooks, db, store::outbox_endpoints};

/// Makes `APP_WEBHOOK_URL` the configured endpoints (one no longer named receives nothing new)
/// and logs how each stands.
pub async fn sync(db: &PgPool, webhooks: &AppWebhooks) -> Result<(), sqlx::Error> {
    let mut tx = db::begin(db).await?;
    outbox_endpoints::sync_webhooks(&mut tx, &webhooks.urls).await?;
    tx.commit().await?;
    if webhooks.urls.is_empty() {
        tracing::info!("APP_WEBHOOK_URL is not set: the app is sent no webhooks, and no outbox messages are written");
        return Ok(());
    }
    for endpoint in outbox_endpoints::all(db).await?.iter().filter(|e| e.configured) {
        match (&endpoint.disabled_reason, endpoint.failing_since) {
            (Some(reason), _) => tracing::error!(
                url = %endpoint.url,
                disabled_at = ?endpoint.disabled_at,
                reason,
                "app webhook endpoint is disabled and is sent nothing; once it is fixed, `entitle redeliver --since <age>` enables it and sends what it missed"
            ),
            (None, Some(failing_since)) => tracing::warn!(
                url = %endpoint.url,
                %failing_since,
                failures = endpoint.consecutive_failures,
                "app webhook endpoint is failing; its deliveries are retried"
            ),
            (None, None) => tracing::info!(url = %endpoint.url, "app webhooks are sent here"),
        }
    }
    Ok(())
}
