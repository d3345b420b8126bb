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
    /// What the line items came to before discounts and tax.
    pub amount_subtotal: Option<i64>,
    /// What the buyer was charged: the subtotal less discounts, plus shipping and tax.
    pub amount_total: Option<i64>,
    pub total_details: Option<TotalDetails>,
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
    pub amount_subtotal: Option<i64>,
    pub amount_total: Option<i64>,
    pub total_details: Option<TotalDetails>,
    pub source_currency: Option<String>,
}

/// How Stripe got from the subtotal to the total.
#[derive(Debug, Default, Deserialize)]
pub struct TotalDetails {
    pub amount_discount: Option<i64>,
    pub amount_shipping: Option<i64>,
    pub amount_tax: Option<i64>,
}

/// A session's amounts on the merchant's side, in minor units of `currency`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Charged<'a> {
    /// Before discounts and tax: what the catalog price is held against.
    pub subtotal: Option<i64>,
    pub total: Option<i64>,
    pub discount: i64,
    pub shipping: i64,
    pub tax: i64,
    pub currency: Option<&'a str>,
}

impl Charged<'_> {
    /// Whether the total is the subtotal less the discount plus shipping and tax, as Stripe always
    /// reports it: a total that is not cannot be trusted to say what was paid.
    pub fn adds_up(&self) -> bool {
        self.subtotal
            .is_some_and(|subtotal| self.total == Some(subtotal - self.discount + self.shipping + self.tax))
    }
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

    /// The amounts to hold against the order: the merchant's side of a converted payment, or else
    /// what the session charged. A session without a subtotal (older shapes) is read as one whose
    /// total is its subtotal, which then has to match the catalog price by itself.
    pub fn charged(&self) -> Charged<'_> {
        let (subtotal, total, details, currency) = match &self.currency_conversion {
            Some(conversion) => (
                conversion.amount_subtotal,
                conversion.amount_total,
                conversion.total_details.as_ref(),
                conversion.source_currency.as_deref(),
            ),
            None => (
                self.amount_subtotal,
                self.amount_total,
                self.total_details.as_ref(),
                self.currency.as_deref(),
            ),
        };
        let detail = |pick: fn(&TotalDetails) -> Option<i64>| details.and_then(pick).unwrap_or(0);
        Charged {
            subtotal: subtotal.or(total),
            total,
            discount: detail(|d| d.amount_discount),
            shipping: detail(|d| d.amount_shipping),
            tax: detail(|d| d.amount_tax),
            currency,
        }
    }

    /// Nothing was due at checkout: a trial, or a discount of the whole price.
    pub fn needed_no_payment(&self) -> bool {
        self.payment_status.as_deref() == Some("no_payment_required")
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
