//! Missed events the reconciler could not apply (kept in `store::reconciler`): how often each failed
//! and why, and whether it was set aside after too many attempts. A row whose event has since been
//! applied (by a webhook redelivery or `entitle replay`) is resolved and pruned on the next run.
//! What is recorded of an error is decided here: one line, with no secret in it.

use sqlx::PgPool;

use crate::{
    domain_error::DomainError,
    store::reconciler::{self, FailedAttempt, Failure},
    stripe::{ProviderError, event::WebhookEvent, failure},
};

/// Longest `last_error` kept: one line for an operator, not a dump.
const MAX_ERROR_CHARS: usize = 500;

/// Counts one more failed attempt; the one that reaches `max_attempts` sets the event aside.
pub async fn record_failure(
    pool: &PgPool,
    event: &WebhookEvent,
    error: &DomainError,
    max_attempts: u32,
) -> Result<FailedAttempt, sqlx::Error> {
    let error = describe(error);
    let failure = Failure {
        event_id: &event.id,
        event_type: &event.event_type,
        event_created: event.created,
        error: &error,
    };
    reconciler::record_failure(pool, &failure, i32::try_from(max_attempts).unwrap_or(i32::MAX)).await
}

/// What went wrong, in one line an operator can act on, with no secret in it: Stripe's status and
/// message, or the database's error code and message.
fn describe(error: &DomainError) -> String {
    let text = match error {
        DomainError::PaymentProvider(ProviderError::Stripe(err)) => failure::describe(err),
        DomainError::Database(sqlx::Error::Database(db)) => {
            format!("database error {}: {}", db.code().unwrap_or_default(), db.message())
        }
        // Its text may quote the connection settings.
        DomainError::Database(sqlx::Error::Configuration(_)) => "database configuration error".to_owned(),
        DomainError::Database(err) => format!("database error: {err}"),
        other => other.to_string(),
    };
    text.chars().take(MAX_ERROR_CHARS).collect()
}
