//! Time travel: `POST /clock/advance` moves the emulator's clock and fires what falls due, with
//! the events Stripe would send; delivered to the service, they renew, end trials, end canceled
//! subscriptions and close expired checkouts as the real months would.

use chrono::{DateTime, Duration, Utc};
use entitle::{config::StripeBackend, stripe_emulator::PaymentResult};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{Options, TestApp, error_code, unix_now};

const DAY: i64 = 24 * 60 * 60;

const TRIAL_CATALOG: &str = r#"
[plans.team_trial]
name = "Team, monthly, 7 days free"
kind = "subscription"
amount = 4900
currency = "usd"
interval = "month"
entitlement = "team"
credits_per_period = 1000
trial_days = 7
"#;

impl TestApp {
    /// Advances the emulator's clock through the service's own client path (the HTTP control),
    /// then delivers every event it fired, in order.
    async fn advance_and_deliver(&self, seconds: i64) -> Vec<Value> {
        let before = self.emulator.events().len();
        let clock_before = self.emulator.now();
        let (status, body) = self.advance(json!({ "seconds": seconds })).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        // The wall clock keeps running under the emulator's, so only bounds from below hold.
        let now = body["now"].as_i64().unwrap();
        assert!(now >= clock_before + seconds, "{body}");
        assert!(self.emulator.now() >= now, "{body}");
        let fired = self.emulator.events()[before..].to_vec();
        self.deliver_all(&fired).await;
        fired
    }

    async fn advance(&self, body: Value) -> (StatusCode, Value) {
        let StripeBackend::Api { api_base, .. } = &self.config.stripe else {
            panic!("these tests run against a separate emulator");
        };
        let response = self
            .http
            .post(format!("{api_base}/clock/advance"))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap())
    }

    /// The period credits granted to the order, one per paid invoice.
    pub async fn period_grants(&self, order_id: Uuid) -> Vec<i64> {
        sqlx::query_scalar(
            "select granted from credit_grants where order_id = $1 and source = 'period' order by created_at",
        )
        .bind(order_id)
        .fetch_all(&self.db)
        .await
        .unwrap()
    }
}

fn period_end(entitlement: &Value) -> DateTime<Utc> {
    entitlement["currentPeriodEnd"].as_str().unwrap().parse().unwrap()
}

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn given_a_monthly_subscription_when_a_month_passes_then_it_renews_with_the_periods_credits() {
    let app = TestApp::spawn().await;
    let purchase = app.fulfilled_purchase("alice", "team_monthly").await;
    let first_end = period_end(&app.entitlement("alice").await);
    assert_eq!(app.period_grants(purchase.order_id).await, [1000]);

    let fired = app.advance_and_deliver(30 * DAY + 60).await;

    assert_eq!(types(&fired), ["invoice.paid", "customer.subscription.updated"]);
    assert_eq!(fired[0]["data"]["object"]["billing_reason"], "subscription_cycle");
    let renewed = app.entitlement("alice").await;
    assert_eq!(renewed["status"], "active");
    assert_eq!(renewed["key"], "team");
    assert_eq!(period_end(&renewed), first_end + Duration::days(30));
    assert_eq!(app.period_grants(purchase.order_id).await, [1000, 1000]);
    // Stamped with the moment the period ended, not the wall clock.
    assert_eq!(
        fired[0]["created"].as_i64(),
        Some(first_end.timestamp()),
        "the renewal happens when the period ends"
    );
}

#[tokio::test]
async fn given_a_monthly_subscription_when_a_year_passes_then_twelve_renewals_grant_exactly_twelve_periods() {
    let app = TestApp::spawn().await;
    let purchase = app.fulfilled_purchase("alice", "team_monthly").await;
    let first_end = period_end(&app.entitlement("alice").await);

    let fired = app.advance_and_deliver(365 * DAY).await;

    let renewals: Vec<&Value> = fired.iter().filter(|e| e["type"] == "invoice.paid").collect();
    assert_eq!(renewals.len(), 12, "{:?}", types(&fired));
    let created: Vec<i64> = renewals.iter().map(|e| e["created"].as_i64().unwrap()).collect();
    assert!(created.windows(2).all(|w| w[0] < w[1]), "in time order: {created:?}");
    // A second delivery of the whole year grants nothing more.
    app.deliver_all(&fired).await;
    assert_eq!(app.period_grants(purchase.order_id).await, vec![1000; 13]);
    assert_eq!(app.credits("alice").await, 13 * 1000);
    assert_eq!(
        period_end(&app.entitlement("alice").await),
        first_end + Duration::days(12 * 30)
    );
}

#[tokio::test]
async fn given_a_trial_when_it_ends_then_the_first_invoice_is_paid_and_the_subscription_is_active() {
    let app = spawn_with_catalog(TRIAL_CATALOG).await;
    let purchase = app.fulfilled_purchase("alice", "team_trial").await;
    assert_eq!(
        app.emulator.subscription(&purchase.subscription_id()).unwrap()["status"],
        "trialing"
    );
    assert_eq!(app.period_grants(purchase.order_id).await, Vec::<i64>::new());

    let fired = app.advance_and_deliver(7 * DAY + 60).await;

    assert_eq!(types(&fired), ["invoice.paid", "customer.subscription.updated"]);
    assert_eq!(fired[0]["data"]["object"]["amount_paid"], 4900);
    assert_eq!(fired[1]["data"]["object"]["status"], "active");
    let entitlement = app.entitlement("alice").await;
    assert_eq!(entitlement["status"], "active");
    assert_eq!(entitlement["active"], true);
    assert_eq!(app.period_grants(purchase.order_id).await, [1000]);
}

#[tokio::test]
async fn given_a_trial_with_a_declining_card_when_it_ends_then_it_goes_past_due_then_is_canceled() {
    let app = spawn_with_catalog(TRIAL_CATALOG).await;
    let purchase = app.fulfilled_purchase("alice", "team_trial").await;
    app.emulator.set_card_declines(&purchase.subscription_id(), true);

    let fired = app.advance_and_deliver(7 * DAY + 60).await;
    assert_eq!(
        types(&fired),
        ["invoice.payment_failed", "customer.subscription.updated"]
    );
    let entitlement = app.entitlement("alice").await;
    assert_eq!(entitlement["status"], "past_due");
    assert_eq!(app.period_grants(purchase.order_id).await, Vec::<i64>::new());

    // The next period's bill declines too: Stripe's default ends the subscription.
    let fired = app.advance_and_deliver(30 * DAY).await;
    assert_eq!(types(&fired), ["customer.subscription.deleted"]);
    let entitlement = app.entitlement("alice").await;
    assert_eq!(entitlement["status"], "revoked");
    assert_eq!(entitlement["active"], false);
}

#[tokio::test]
async fn given_cancel_at_period_end_when_the_period_passes_then_access_ends() {
    let app = TestApp::spawn().await;
    let purchase = app.fulfilled_purchase("alice", "pro_monthly").await;
    let update = app
        .emulator
        .update_subscription(&purchase.subscription_id(), "active", true)
        .unwrap();
    app.deliver_all(&[update]).await;
    assert_eq!(app.entitlement("alice").await["active"], true);

    let fired = app.advance_and_deliver(31 * DAY).await;

    assert_eq!(types(&fired), ["customer.subscription.deleted"], "no renewal is billed");
    assert_eq!(fired[0]["data"]["object"]["status"], "canceled");
    let entitlement = app.entitlement("alice").await;
    assert_eq!(entitlement["status"], "revoked");
    assert_eq!(entitlement["active"], false);
}

#[tokio::test]
async fn given_an_open_checkout_when_its_expiry_passes_then_the_session_expires_and_the_order_is_canceled() {
    let app = TestApp::spawn().await;
    let (order_id, session_id) = app.checkout("alice", "credits_100").await;

    let fired = app.advance_and_deliver(DAY + 60).await;

    assert_eq!(types(&fired), ["checkout.session.expired"]);
    assert_eq!(app.emulator.session(&session_id).unwrap()["status"], "expired");
    assert_eq!(app.order_status("alice", order_id).await["status"], "canceled");
    assert!(app.emulator.pay_session(&session_id, PaymentResult::Card).is_none());
}

#[tokio::test]
async fn given_bad_amounts_then_the_clock_refuses_them_and_does_not_move() {
    let app = TestApp::spawn().await;
    for body in [
        json!({}),
        json!({ "seconds": 0 }),
        json!({ "seconds": -5 }),
        json!({ "seconds": 1.5 }),
        json!({ "seconds": "60" }),
        json!({ "seconds": 6 * 365 * DAY }),
    ] {
        let (status, answer) = app.advance(body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} -> {answer}");
        assert!(!error_code(&answer).is_empty(), "{answer}");
        assert!(answer["error"]["message"].is_string(), "{answer}");
    }
    // Read together, the emulator's clock and the wall clock still agree: it was not moved.
    assert!(app.emulator.now() - unix_now() < 60, "the clock did not jump");
    assert!(app.emulator.events().is_empty());
}

async fn spawn_with_catalog(catalog: &str) -> TestApp {
    let path = std::env::temp_dir().join(format!("entitle-time-travel-{}.toml", Uuid::new_v4().simple()));
    std::fs::write(&path, catalog).unwrap();
    TestApp::spawn_with(Options {
        plans_file: Some(path),
        ..Options::default()
    })
    .await
}
