//! What each message says, in Standard Webhooks' shape `{"type", "timestamp", "data"}`. An
//! `order.*` carries the order as its change left it (snapshotted by the trigger that wrote the
//! message); `entitlements.updated` carries what the user holds when it is first sent, with the
//! version read in the same snapshot, so a message built later always says more, never less.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::holdings::EntitlementView;

/// The events the app hears of, and the buyer's confirmation email (the one message of the email
/// endpoint, never sent as a webhook); the migrations' check constraint lists the same names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type)]
#[sqlx(type_name = "text")]
pub enum EventType {
    #[serde(rename = "order.paid")]
    #[sqlx(rename = "order.paid")]
    OrderPaid,
    #[serde(rename = "order.refunded")]
    #[sqlx(rename = "order.refunded")]
    OrderRefunded,
    #[serde(rename = "order.disputed")]
    #[sqlx(rename = "order.disputed")]
    OrderDisputed,
    #[serde(rename = "order.canceled")]
    #[sqlx(rename = "order.canceled")]
    OrderCanceled,
    #[serde(rename = "order.under_review")]
    #[sqlx(rename = "order.under_review")]
    OrderUnderReview,
    #[serde(rename = "entitlements.updated")]
    #[sqlx(rename = "entitlements.updated")]
    EntitlementsUpdated,
    #[serde(rename = "order.confirmation")]
    #[sqlx(rename = "order.confirmation")]
    OrderConfirmation,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OrderPaid => "order.paid",
            Self::OrderRefunded => "order.refunded",
            Self::OrderDisputed => "order.disputed",
            Self::OrderCanceled => "order.canceled",
            Self::OrderUnderReview => "order.under_review",
            Self::EntitlementsUpdated => "entitlements.updated",
            Self::OrderConfirmation => "order.confirmation",
        }
    }
}

/// The `webhook-id` of a message: the same for every attempt and every endpoint, so a receiver
/// can tell a retry from a new message.
pub fn webhook_id(message_id: Uuid) -> String {
    format!("msg_{}", message_id.simple())
}

/// The message id a `webhook-id` (or a bare UUID) names.
pub fn parse_webhook_id(text: &str) -> Option<Uuid> {
    Uuid::try_parse(text.strip_prefix("msg_").unwrap_or(text)).ok()
}

#[derive(Serialize)]
struct Body<'a, D> {
    #[serde(rename = "type")]
    event_type: EventType,
    timestamp: &'a DateTime<Utc>,
    data: D,
}

/// An `order.*` event's data, as the trigger snapshotted it (field for field).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderData {
    pub order_id: Uuid,
    pub user_id: String,
    pub plan_id: String,
    pub status: String,
    pub amount: i64,
    pub currency: String,
    /// What the buyer was charged, after discounts and with tax; null until paid (and in messages
    /// written before it was recorded).
    #[serde(default)]
    pub amount_paid: Option<i64>,
}

/// What `entitlements.updated` says: the user's whole state, numbered.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HoldingsData {
    pub user_id: String,
    /// Grows with every change of what the user holds; a receiver keeps the highest it has seen.
    pub version: i64,
    pub credits: Credits,
    /// As `GET /entitlements` shows them.
    pub entitlements: Vec<EntitlementView>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Credits {
    pub available: i64,
    /// Credits owed: a refund or dispute took back credits already spent.
    pub overdrawn: i64,
}

/// The body of an `order.*` message that happened at `at`.
pub fn order_body(event_type: EventType, at: &DateTime<Utc>, data: &OrderData) -> String {
    body(event_type, at, data)
}

/// The body of `entitlements.updated`, as of `at`.
pub fn holdings_body(at: &DateTime<Utc>, data: &HoldingsData) -> String {
    body(EventType::EntitlementsUpdated, at, data)
}

fn body<D: Serialize>(event_type: EventType, timestamp: &DateTime<Utc>, data: D) -> String {
    serde_json::to_string(&Body {
        event_type,
        timestamp,
        data,
    })
    .expect("a body of strings and numbers serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_order_body_has_the_documented_shape() {
        let at = DateTime::parse_from_rfc3339("2026-12-04T10:00:00.5Z").unwrap().to_utc();
        let order_id = Uuid::nil();
        let data = OrderData {
            order_id,
            user_id: "alice".into(),
            plan_id: "credits_100".into(),
            status: "paid".into(),
            amount: 500,
            currency: "usd".into(),
            amount_paid: Some(450),
        };
        assert_eq!(
            order_body(EventType::OrderPaid, &at, &data),
            r#"{"type":"order.paid","timestamp":"2026-12-04T10:00:00.500Z","data":{"orderId":"00000000-0000-0000-0000-000000000000","userId":"alice","planId":"credits_100","status":"paid","amount":500,"currency":"usd","amountPaid":450}}"#
        );
    }

    #[test]
    fn a_webhook_id_names_its_message_and_reads_back() {
        let id = Uuid::new_v4();
        let webhook_id = webhook_id(id);
        assert!(webhook_id.starts_with("msg_") && !webhook_id.contains('-'));
        assert_eq!(parse_webhook_id(&webhook_id), Some(id));
        assert_eq!(parse_webhook_id(&id.to_string()), Some(id));
        assert_eq!(parse_webhook_id("msg_nope"), None);
    }
}
