//! Steps the payment-lifecycle scenarios share: a paid purchase with all its events delivered, and
//! reads of what the user holds.

use entitle::{
    reconcile::missed_events::{ReconcileReport, reconcile_since},
    stripe_emulator::PaymentResult,
};
use reqwest::StatusCode;
use serde_json::Value;
use uuid::Uuid;

use crate::helpers::{TestApp, token_for};

pub struct Purchase {
    pub order_id: Uuid,
    /// The session's events and, for a subscription, its `created` and first `invoice.paid`.
    pub events: Vec<Value>,
}

impl Purchase {
    pub fn subscription_id(&self) -> String {
        self.events[0]["data"]["object"]["subscription"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub fn payment_intent_id(&self) -> String {
        self.events[0]["data"]["object"]["payment_intent"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

impl TestApp {
    /// `user` buys `plan_id` by card and Stripe delivers nothing yet.
    pub async fn paid_purchase(&self, user: &str, plan_id: &str) -> Purchase {
        let (order_id, session_id) = self.checkout(user, plan_id).await;
        let events = self.pay(&session_id, PaymentResult::Card);
        Purchase { order_id, events }
    }

    /// `user` buys `plan_id` and every event Stripe sends for it is delivered, in order.
    pub async fn fulfilled_purchase(&self, user: &str, plan_id: &str) -> Purchase {
        let purchase = self.paid_purchase(user, plan_id).await;
        self.deliver_all(&purchase.events).await;
        purchase
    }

    /// Delivers each event and returns the outcomes; every delivery must be answered 200.
    pub async fn deliver_all(&self, events: &[Value]) -> Vec<String> {
        let mut outcomes = Vec::new();
        for event in events {
            let (status, body) = self.deliver(event).await;
            assert_eq!(status, StatusCode::OK, "{} -> {body}", event["type"]);
            outcomes.push(body["outcome"].as_str().unwrap_or_default().to_owned());
        }
        outcomes
    }

    /// The charge behind a one-time purchase, as refunds and disputes name it.
    pub fn charge_of(&self, purchase: &Purchase) -> String {
        self.emulator
            .charge_for_payment_intent(&purchase.payment_intent_id())
            .unwrap()
    }

    /// One reconciler run over the events created since `since` (unix seconds), as the service runs it.
    pub async fn reconcile_since(&self, since: i64) -> ReconcileReport {
        reconcile_since(&self.db, &self.stripe, since, self.config.reconciler_max_attempts)
            .await
            .expect("the reconciler runs")
    }

    pub async fn holdings(&self, user: &str) -> Value {
        let (status, body) = self.get("/entitlements", Some(&token_for(user))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// The user's single entitlement, as `GET /entitlements` shows it.
    pub async fn entitlement(&self, user: &str) -> Value {
        let holdings = self.holdings(user).await;
        assert_eq!(holdings["entitlements"].as_array().unwrap().len(), 1, "{holdings}");
        holdings["entitlements"][0].clone()
    }

    /// Changes recorded for the order's entitlement, oldest first, as (change, event id).
    pub async fn entitlement_history(&self, order_id: Uuid) -> Vec<(String, Option<String>)> {
        sqlx::query_as("select change, stripe_event_id from entitlement_history where order_id = $1 order by id")
            .bind(order_id)
            .fetch_all(&self.db)
            .await
            .unwrap()
    }

    /// Ledger rows for the order, oldest first, as (kind, delta, event id).
    pub async fn ledger(&self, order_id: Uuid) -> Vec<(String, i64, Option<String>)> {
        sqlx::query_as("select kind, delta, stripe_event_id from credit_ledger where order_id = $1 order by id")
            .bind(order_id)
            .fetch_all(&self.db)
            .await
            .unwrap()
    }
}

pub fn event_id(event: &Value) -> String {
    event["id"].as_str().unwrap().to_owned()
}
