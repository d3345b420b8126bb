//! `service_mode`: the single row naming the Stripe mode this database serves, written once by the
//! first instance to start.

use sqlx::PgPool;

use crate::config::StripeMode;

/// Records `mode` unless a mode is already recorded; a second writer leaves the first one's row.
pub async fn record_if_absent(db: &PgPool, mode: StripeMode) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "insert into service_mode (mode) values ($1) on conflict do nothing",
        mode as StripeMode
    )
    .execute(db)
    .await?;
    Ok(())
}

pub async fn recorded(db: &PgPool) -> Result<StripeMode, sqlx::Error> {
    sqlx::query_scalar!(r#"select mode as "mode: StripeMode" from service_mode"#)
        .fetch_one(db)
        .await
}
