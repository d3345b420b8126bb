//! What applying a Stripe event did: stored beside the event id in `processed_webhook_events` and
//! returned to Stripe for its dashboard. Fulfilment and the lifecycle both produce it, so it lives
//! below both.

use sqlx::{
    Postgres,
    encode::IsNull,
    error::BoxDynError,
    postgres::{PgArgumentBuffer, PgTypeInfo},
};

/// What applying an event did; stored with the event id and returned to Stripe for its dashboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Fulfilled,
    AlreadyFulfilled,
    AwaitingPayment,
    MarkedFailed,
    MarkedCanceled,
    StatusUnchanged,
    AmountMismatch,
    SessionMismatch,
    NoMatchingOrder,
    MalformedObject,
    IgnoredType,
    Duplicate,
    SubscriptionSynced,
    SubscriptionStored,
    Refunded,
    PartiallyRefunded,
    Disputed,
    DisputeWon,
    DisputeLost,
    /// A refund or dispute recorded before the payment it reverses: it applies at fulfilment.
    AwaitingOrder,
    /// A refund failed or was canceled: what it took is given back.
    RefundReversed,
    /// Stored when the event's id is claimed, and replaced by what applying it did before its
    /// transaction commits; never the result of applying one.
    Processing,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fulfilled => "fulfilled",
            Self::AlreadyFulfilled => "already_fulfilled",
            Self::AwaitingPayment => "awaiting_payment",
            Self::MarkedFailed => "marked_failed",
            Self::MarkedCanceled => "marked_canceled",
            Self::StatusUnchanged => "status_unchanged",
            Self::AmountMismatch => "amount_mismatch",
            Self::SessionMismatch => "session_mismatch",
            Self::NoMatchingOrder => "no_matching_order",
            Self::MalformedObject => "malformed_object",
            Self::IgnoredType => "ignored_type",
            Self::Duplicate => "duplicate",
            Self::SubscriptionSynced => "subscription_synced",
            Self::SubscriptionStored => "subscription_stored",
            Self::Refunded => "refunded",
            Self::PartiallyRefunded => "partially_refunded",
            Self::Disputed => "disputed",
            Self::DisputeWon => "dispute_won",
            Self::DisputeLost => "dispute_lost",
            Self::AwaitingOrder => "awaiting_order",
            Self::RefundReversed => "refund_reversed",
            Self::Processing => "processing",
        }
    }
}

// Stored as text through `as_str`, rather than derived, so the one mapping above serves the
// database, the JSON answer and the logs alike: a derived name could drift from it.
impl sqlx::Type<Postgres> for Outcome {
    fn type_info() -> PgTypeInfo {
        <&str as sqlx::Type<Postgres>>::type_info()
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        <&str as sqlx::Type<Postgres>>::compatible(ty)
    }
}

impl sqlx::Encode<'_, Postgres> for Outcome {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <&str as sqlx::Encode<Postgres>>::encode(self.as_str(), buf)
    }
}
