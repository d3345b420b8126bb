//! The parts of subscription, invoice, charge and dispute objects we read, in the same lenient style
//! as `event.rs`: unknown fields ignored, nearly everything optional, so an API version that moves
//! a field makes us read `None` rather than drop the event.

use std::collections::HashMap;

use serde::Deserialize;

use super::event::Expandable;

#[derive(Debug, Clone, Deserialize)]
pub struct SubscriptionObject {
    pub id: String,
    pub status: String,
    #[serde(default)]
    pub cancel_at_period_end: bool,
    #[serde(default)]
    pub metadata: Option<HashMap<String, String>>,
    /// Where API versions before 2025-03-31 put the period end.
    pub current_period_end: Option<i64>,
    /// Set once the subscription started with a trial, and kept after the trial ends.
    pub trial_end: Option<i64>,
    pub items: Option<ObjectList<SubscriptionItem>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ObjectList<T> {
    #[serde(default = "Vec::new")]
    pub data: Vec<T>,
    #[serde(default)]
    pub has_more: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SubscriptionItem {
    pub id: Option<String>,
    pub current_period_start: Option<i64>,
    pub current_period_end: Option<i64>,
    pub price: Option<ItemPrice>,
}

/// The item's Price: its id, and its product (an object when retrieved with
/// `expand[]=items.data.price.product`, whose metadata names the plan of a price made inline).
#[derive(Debug, Clone, Deserialize)]
pub struct ItemPrice {
    pub id: String,
    pub product: Option<ProductRef>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ProductRef {
    Object {
        id: String,
        #[serde(default)]
        metadata: Option<HashMap<String, String>>,
    },
    Id(String),
}

impl SubscriptionObject {
    pub fn metadata_value(&self, key: &str) -> Option<&str> {
        self.metadata.as_ref()?.get(key).map(String::as_str)
    }

    /// The first item's price id, and the plan its product's metadata names (prices the service
    /// made inline carry `plan_id` there).
    pub fn price(&self) -> Option<(&str, Option<&str>)> {
        let price = self.items.as_ref()?.data.first()?.price.as_ref()?;
        let product_plan = match &price.product {
            Some(ProductRef::Object { metadata, .. }) => metadata.as_ref().and_then(|m| m.get("plan_id")),
            _ => None,
        };
        Some((price.id.as_str(), product_plan.map(String::as_str)))
    }

    /// The first item's current period, (start, end).
    pub fn current_period(&self) -> Option<(i64, i64)> {
        let item = self.items.as_ref()?.data.first()?;
        Some((item.current_period_start?, item.current_period_end?))
    }

    /// Newer API versions keep the period on each item; the subscription is paid up to the latest.
    pub fn current_period_end(&self) -> Option<i64> {
        let from_items = self
            .items
            .iter()
            .flat_map(|items| &items.data)
            .filter_map(|item| item.current_period_end)
            .max();
        from_items.or(self.current_period_end)
    }
}

#[derive(Debug, Deserialize)]
pub struct InvoiceObject {
    pub id: String,
    /// API versions before 2025-03-31.
    pub subscription: Option<Expandable>,
    pub parent: Option<InvoiceParent>,
    pub lines: Option<ObjectList<InvoiceLine>>,
    /// Newer API versions: the payments that paid the invoice.
    pub payments: Option<ObjectList<InvoicePayment>>,
    /// API versions before 2025-03-31.
    pub payment_intent: Option<Expandable>,
    pub amount_paid: Option<i64>,
    /// Why it was issued: `subscription_create` for a subscription's first invoice.
    pub billing_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct InvoiceParent {
    pub subscription_details: Option<SubscriptionDetails>,
}

#[derive(Debug, Deserialize)]
pub struct SubscriptionDetails {
    pub subscription: Option<Expandable>,
}

#[derive(Debug, Deserialize)]
pub struct InvoiceLine {
    pub period: Option<Period>,
}

#[derive(Debug, Deserialize)]
pub struct Period {
    pub start: Option<i64>,
    pub end: Option<i64>,
}

#[derive(Debug, Deserialize)]
pub struct InvoicePayment {
    pub payment: Option<InvoicePaymentTarget>,
}

#[derive(Debug, Deserialize)]
pub struct InvoicePaymentTarget {
    pub payment_intent: Option<Expandable>,
}

impl InvoiceObject {
    pub fn subscription_id(&self) -> Option<&str> {
        let from_parent = self
            .parent
            .as_ref()
            .and_then(|parent| parent.subscription_details.as_ref())
            .and_then(|details| details.subscription.as_ref());
        from_parent.or(self.subscription.as_ref()).map(Expandable::id)
    }

    /// Where the invoice's lines start: for a proration invoice, the moment the price changed.
    pub fn period_start(&self) -> Option<i64> {
        self.lines
            .iter()
            .flat_map(|lines| &lines.data)
            .filter_map(|line| line.period.as_ref()?.start)
            .min()
    }

    /// A proration invoice: it charges for the rest of a period already paid.
    pub fn is_proration(&self) -> bool {
        self.billing_reason.as_deref() == Some("subscription_update")
    }

    pub fn period_end(&self) -> Option<i64> {
        self.lines
            .iter()
            .flat_map(|lines| &lines.data)
            .filter_map(|line| line.period.as_ref()?.end)
            .max()
    }

    /// The $0 first invoice of a subscription that starts with a trial: nothing was paid for, so
    /// it is no paid period (period credits start with the first invoice after the trial).
    pub fn opens_a_trial(&self, subscription: &SubscriptionObject) -> bool {
        subscription.trial_end.is_some()
            && self.amount_paid == Some(0)
            && self.billing_reason.as_deref() == Some("subscription_create")
    }

    pub fn payment_intent_ids(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = self
            .payments
            .iter()
            .flat_map(|payments| &payments.data)
            .filter_map(|p| p.payment.as_ref()?.payment_intent.as_ref())
            .map(Expandable::id)
            .collect();
        ids.extend(self.payment_intent.as_ref().map(Expandable::id));
        ids
    }
}

#[derive(Debug, Deserialize)]
pub struct ChargeObject {
    pub id: String,
    pub amount: i64,
    #[serde(default)]
    pub amount_refunded: i64,
    pub payment_intent: Option<Expandable>,
    /// Only when expanded, or from API versions before 2022-11-15: events today leave it out.
    pub refunds: Option<ObjectList<RefundObject>>,
}

/// A refund, as `refund.*` and `charge.refund.updated` events carry it.
#[derive(Debug, Deserialize)]
pub struct RefundObject {
    pub id: String,
    pub amount: i64,
    /// `pending`, `requires_action`, `succeeded`, `failed` or `canceled`.
    pub status: Option<String>,
    pub charge: Option<Expandable>,
    pub payment_intent: Option<Expandable>,
}

#[derive(Debug, Deserialize)]
pub struct DisputeObject {
    pub id: String,
    pub charge: Option<Expandable>,
    pub payment_intent: Option<Expandable>,
    pub status: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    // Stripe's own fixtures: the shapes real objects have, read by the structs above.
    const SUBSCRIPTION: &str = include_str!("../stripe_emulator/fixtures/subscription.json");
    const INVOICE: &str = include_str!("../stripe_emulator/fixtures/invoice.json");
    const CHARGE: &str = include_str!("../stripe_emulator/fixtures/charge.json");
    const DISPUTE: &str = include_str!("../stripe_emulator/fixtures/dispute.json");
    const REFUND: &str = include_str!("../stripe_emulator/fixtures/refund.json");

    #[test]
    fn stripes_fixtures_parse_and_yield_the_fields_we_act_on() {
        let subscription: SubscriptionObject = serde_json::from_str(SUBSCRIPTION).unwrap();
        assert_eq!(subscription.status, "active");
        assert!(subscription.cancel_at_period_end);
        assert_eq!(
            subscription.current_period_end(),
            Some(976_287_773),
            "read from the items"
        );

        let invoice: InvoiceObject = serde_json::from_str(INVOICE).unwrap();
        assert_eq!(
            invoice.subscription_id(),
            Some("subscription"),
            "read from parent.subscription_details"
        );
        assert!(invoice.payment_intent_ids().is_empty());

        let charge: ChargeObject = serde_json::from_str(CHARGE).unwrap();
        assert_eq!((charge.amount, charge.amount_refunded), (100, 0));
        let refund: RefundObject = serde_json::from_str(REFUND).unwrap();
        assert_eq!(refund.status.as_deref(), Some("succeeded"));
        let dispute: DisputeObject = serde_json::from_str(DISPUTE).unwrap();
        assert_eq!(
            dispute.charge.as_ref().map(Expandable::id),
            Some("ch_1PgafuB7WZ01zgkWXYmPNZs8")
        );
    }

    #[test]
    fn older_api_versions_put_the_period_and_subscription_at_the_top() {
        let subscription: SubscriptionObject =
            serde_json::from_str(r#"{"id":"sub_1","status":"past_due","current_period_end":1700000000}"#).unwrap();
        assert_eq!(subscription.current_period_end(), Some(1_700_000_000));
        let invoice: InvoiceObject =
            serde_json::from_str(r#"{"id":"in_1","subscription":"sub_1","payment_intent":"pi_1"}"#).unwrap();
        assert_eq!(invoice.subscription_id(), Some("sub_1"));
        assert_eq!(invoice.payment_intent_ids(), ["pi_1"]);
    }
}
