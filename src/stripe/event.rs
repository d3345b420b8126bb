//! The parts of Stripe events we read. Deliberately small and lenient (unknown fields ignored, most
//! fields optional): webhooks must keep working when Stripe adds fields or the account's API
//! version moves, and every decision is made from these few fields.

use std::collections::HashMap;

use serde::Deserialize;

pub use super::event_kind::EventKind;

#[derive(Debug, Deserialize)]
pub struct WebhookEvent {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    #[serde(default)]
    pub created: i64,
    /// Whether the event belongs to live mode; Stripe always sends it. `None` when missing.
    #[serde(default)]
    pub livemode: Option<bool>,
    pub data: EventData,
}

#[derive(Debug, Deserialize)]
pub struct EventData {
    pub object: serde_json::Value,
}

impl WebhookEvent {
    /// What the event's type says happened; `None` for a type we do not act on.
    pub fn kind(&self) -> Option<EventKind> {
        EventKind::parse(&self.event_type)
    }

    /// The event's object read as `T`, straight from the parsed tree (no copy of it); `None` when it
    /// is not shaped like one.
    pub fn object_as<'a, T: Deserialize<'a>>(&'a self) -> Option<T> {
        T::deserialize(&self.data.object).ok()
    }
}

/// A `checkout.session` object as carried by `checkout.session.*` events.
#[derive(Debug, Deserialize)]
pub struct CheckoutSessionObject {
    pub id: String,
    pub client_reference_id: Option<String>,
    #[serde(default)]
    pub metadata: Option<HashMap<String, String>>,
    /// `open`, `complete` or `expired`.
    pub status: Option<String>,
    pub payment_status: Option<String>,
    pub amount_total: Option<i64>,
    pub currency: Option<String>,
    pub payment_intent: Option<Expandable>,
    pub subscription: Option<Expandable>,
    pub customer: Option<Expandable>,
    /// What the buyer entered on the checkout page (their email among it).
    pub customer_details: Option<CustomerDetails>,
    /// The email the session was created with, if any (the page then does not ask for one).
    pub customer_email: Option<String>,
    /// Adaptive Pricing: the buyer paid in their own currency (`currency`, `amount_total`); this is
    /// what that came to in the merchant's, which is what the order was priced in.
    pub currency_conversion: Option<CurrencyConversion>,
}

#[derive(Debug, Deserialize)]
pub struct CustomerDetails {
    pub email: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct CurrencyConversion {
    pub amount_total: Option<i64>,
    pub source_currency: Option<String>,
}

impl CheckoutSessionObject {
    pub fn metadata_value(&self, key: &str) -> Option<&str> {
        self.metadata.as_ref()?.get(key).map(String::as_str)
    }

    /// Where the buyer wants their receipt: what they entered on the page, else what the session
    /// was created with.
    pub fn buyer_email(&self) -> Option<&str> {
        self.customer_details
            .as_ref()
            .and_then(|details| details.email.as_deref())
            .or(self.customer_email.as_deref())
            .filter(|email| !email.is_empty())
    }

    /// Whether Stripe has the money (or needs none), so the purchase may be granted.
    pub fn is_paid(&self) -> bool {
        matches!(self.payment_status.as_deref(), Some("paid" | "no_payment_required"))
    }

    /// The amount and currency to hold against the order's price: the merchant's side of a
    /// converted payment, or else what the session charged.
    pub fn settlement_amount(&self) -> (Option<i64>, Option<&str>) {
        match &self.currency_conversion {
            Some(conversion) => (conversion.amount_total, conversion.source_currency.as_deref()),
            None => (self.amount_total, self.currency.as_deref()),
        }
    }
}

/// A reference Stripe sends either as an id or, when expanded, as the object itself.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Expandable {
    Id(String),
    Object { id: String },
}

impl Expandable {
    pub fn id(&self) -> &str {
        match self {
            Self::Id(id) | Self::Object { id } => id,
        }
    }
}
