//! The Stripe mode a database serves. The first instance to start records its own; any later one in
//! another mode (a live database reached by a binary that lost its key and so fell back to the
//! emulator, a test key pointed at live data) refuses to start before serving anything.

use sqlx::PgPool;

use crate::{config::StripeMode, store::service_mode};

#[derive(Debug, thiserror::Error)]
pub enum ServiceModeError {
    /// A mode other than the one this database records; its `Display` is the one line printed.
    #[error(
        "this database ({database}) serves {}, but {}, so the service would start {}; {}, or point DATABASE_URL at another database",
        serving(*.recorded), cause(*.current), starting(*.current), fix(*.recorded)
    )]
    Mismatch {
        /// Host, port and name only: never the password in the URL.
        database: String,
        recorded: StripeMode,
        current: StripeMode,
    },
    #[error("cannot read the database's service mode: {0}")]
    Database(#[from] sqlx::Error),
}

/// Records `current` on a database that has no mode yet, then checks it against the recorded one.
/// Two instances starting together both insert; one wins and both read its row, so they agree.
pub async fn ensure_service_mode(
    db: &PgPool,
    current: StripeMode,
    database: impl Into<String>,
) -> Result<(), ServiceModeError> {
    service_mode::record_if_absent(db, current).await?;
    let recorded = service_mode::recorded(db).await?;
    if recorded == current {
        return Ok(());
    }
    Err(ServiceModeError::Mismatch {
        database: database.into(),
        recorded,
        current,
    })
}

fn serving(mode: StripeMode) -> &'static str {
    match mode {
        StripeMode::Emulator => "the built-in Stripe emulator",
        StripeMode::Test => "Stripe test mode",
        StripeMode::Live => "Stripe live mode",
    }
}

fn cause(mode: StripeMode) -> &'static str {
    match mode {
        StripeMode::Emulator => "STRIPE_SECRET_KEY is not set",
        StripeMode::Test => "STRIPE_SECRET_KEY is a test key",
        StripeMode::Live => "STRIPE_SECRET_KEY is a live key",
    }
}

fn starting(mode: StripeMode) -> &'static str {
    match mode {
        StripeMode::Emulator => "in emulator mode",
        StripeMode::Test => "in Stripe test mode",
        StripeMode::Live => "in Stripe live mode",
    }
}

fn fix(recorded: StripeMode) -> &'static str {
    match recorded {
        StripeMode::Emulator => "unset STRIPE_SECRET_KEY to keep using the emulator",
        StripeMode::Test => "set the test STRIPE_SECRET_KEY again",
        StripeMode::Live => "set the live STRIPE_SECRET_KEY again",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_live_key_is_explained_in_one_line_with_its_fix() {
        let err = ServiceModeError::Mismatch {
            database: "db.internal:5432/entitle".into(),
            recorded: StripeMode::Live,
            current: StripeMode::Emulator,
        };
        assert_eq!(
            err.to_string(),
            "this database (db.internal:5432/entitle) serves Stripe live mode, but STRIPE_SECRET_KEY is not set, \
             so the service would start in emulator mode; set the live STRIPE_SECRET_KEY again, \
             or point DATABASE_URL at another database"
        );
    }
}
