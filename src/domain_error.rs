//! The domain's own error: what can go wrong applying the rules (checkout, fulfilment, lifecycle,
//! reconciliation), with no HTTP in it. `error::AppError` maps it to a status and a body in one
//! place (`From<DomainError>`); the CLI prints it.

use crate::stripe::{ProviderError, failure};

#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    #[error("database error")]
    Database(#[from] sqlx::Error),
    /// Stripe failed; `is_permanent` tells whether asking again could be answered differently.
    #[error("the payment provider failed")]
    PaymentProvider(#[source] ProviderError),
    /// The request conflicts with what already stands (`already_subscribed`, …).
    #[error("{message}")]
    Conflict { code: &'static str, message: &'static str },
    #[error("{message}")]
    NotFound { code: &'static str, message: &'static str },
    /// The request breaks a rule of the domain (a field out of range); nothing was written.
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
    /// Fewer credits are available than a spend asks for; nothing was written.
    #[error("Not enough credits: {available} available, {requested} requested.")]
    InsufficientCredits { available: i64, requested: i64 },
    /// A limit was reached; asking again after `retry_after_secs` may succeed.
    #[error("{message}")]
    TooManyRequests {
        code: &'static str,
        message: String,
        retry_after_secs: u64,
    },
}

impl DomainError {
    /// Whether Stripe refused for good (a retry gets the same answer), as opposed to failing for now.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::PaymentProvider(ProviderError::Stripe(err)) => failure::is_permanent_refusal(err),
            Self::PaymentProvider(ProviderError::MissingUrl) => true,
            Self::Database(_) | Self::TooManyRequests { .. } => false,
            Self::Conflict { .. } | Self::NotFound { .. } | Self::Invalid { .. } => true,
            Self::InsufficientCredits { .. } => false,
        }
    }
}

impl From<stripe::StripeError> for DomainError {
    fn from(err: stripe::StripeError) -> Self {
        Self::PaymentProvider(ProviderError::Stripe(err))
    }
}

impl From<ProviderError> for DomainError {
    fn from(err: ProviderError) -> Self {
        Self::PaymentProvider(err)
    }
}
