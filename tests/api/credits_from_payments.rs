//! Credits that payments grant, as the server API sees them: a subscription's credits per paid
//! period (expiring at the period's end), a purchase whose credits expire, and the spend order
//! across grants.

use chrono::{DateTime, Duration, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::TestApp;

fn expiry(grant: &Value) -> DateTime<Utc> {
    grant["expiresAt"].as_str().unwrap().parse().unwrap()
}

fn grants_of(balance: &Value, source: &str) -> Vec<Value> {
    balance["grants"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["source"] == source)
        .cloned()
        .collect()
}

#[tokio::test]
async fn given_a_subscription_with_period_credits_then_each_paid_period_grants_once_expiring_at_its_end() {
    let app = TestApp::spawn().await;
    let purchase = app.fulfilled_purchase("alice", "team_monthly").await;

    let balance = app.balance("alice").await;
    let periods = grants_of(&balance, "period");
    assert_eq!(periods.len(), 1, "{balance}");
    assert_eq!(
        (periods[0]["granted"].as_i64(), periods[0]["remaining"].as_i64()),
        (Some(1000), Some(1000))
    );
    let entitlement = app.entitlement("alice").await;
    let period_end: DateTime<Utc> = entitlement["currentPeriodEnd"].as_str().unwrap().parse().unwrap();
    assert_eq!(expiry(&periods[0]), period_end);

    // Every event again: nothing more.
    app.deliver_all(&purchase.events).await;
    assert_eq!(app.balance("alice").await["credits"]["available"], 1000);

    let renewal = app.emulator.renew_subscription(&purchase.subscription_id()).unwrap();
    app.deliver_all(&renewal).await;
    app.deliver_all(&renewal).await;
    let balance = app.balance("alice").await;
    let periods = grants_of(&balance, "period");
    assert_eq!(periods.len(), 2, "{balance}");
    assert!(expiry(&periods[1]) > expiry(&periods[0]), "{balance}");
    assert_eq!(balance["credits"]["available"], 2000);
    assert_eq!(app.ledger_sum("alice").await, 2000);

    // The period ending first is spent first.
    let usage = json!({"userId": "alice", "credits": 1200, "idempotencyKey": "big-job"});
    let (status, _, body) = app.api_post("/v1/usage", &usage).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let periods = grants_of(&app.balance("alice").await, "period");
    assert_eq!(periods.len(), 1);
    assert_eq!(periods[0]["remaining"], 800);
}

#[tokio::test]
async fn given_the_first_invoice_paid_before_the_checkout_completed_then_its_period_is_granted_at_completion() {
    let app = TestApp::spawn().await;
    let purchase = app.paid_purchase("alice", "team_monthly").await;
    // The subscription's events (created, invoice.paid) before the session's.
    let mut events = purchase.events.clone();
    events.rotate_left(1);
    app.deliver_all(&events).await;

    let balance = app.balance("alice").await;
    assert_eq!(grants_of(&balance, "period").len(), 1, "{balance}");
    assert_eq!(balance["credits"]["available"], 1000);
}

#[tokio::test]
async fn given_a_plan_whose_credits_expire_then_the_purchase_grant_expires_that_many_days_after_payment() {
    let app = TestApp::spawn().await;
    let before = Utc::now();
    app.fulfilled_purchase("alice", "credits_trial").await;

    let balance = app.balance("alice").await;
    let purchases = grants_of(&balance, "purchase");
    assert_eq!(purchases.len(), 1, "{balance}");
    let expires = expiry(&purchases[0]);
    assert!(
        expires >= before + Duration::days(30) && expires <= Utc::now() + Duration::days(30),
        "{balance}"
    );

    // A purchase that never expires is spent after the one that does.
    app.fulfilled_purchase("alice", "credits_100").await;
    let usage = json!({"userId": "alice", "credits": 60, "idempotencyKey": "job"});
    let (status, _, body) = app.api_post("/v1/usage", &usage).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let balance = app.balance("alice").await;
    let purchases = grants_of(&balance, "purchase");
    assert_eq!(purchases.len(), 1, "the expiring grant is used up first: {balance}");
    assert_eq!(
        (purchases[0]["remaining"].as_i64(), purchases[0]["expiresAt"].as_str()),
        (Some(90), None)
    );
}

#[tokio::test]
async fn given_a_grant_past_its_expiry_then_what_is_left_of_it_is_gone_in_one_expiry_row() {
    let app = TestApp::spawn().await;
    app.grant_credits("alice", 100).await;
    let soon = Utc::now() + Duration::seconds(1);
    let grant = json!({
        "userId": "alice", "credits": 50, "idempotencyKey": "promo", "reason": "promo",
        "expiresAt": soon.to_rfc3339(),
    });
    let (status, _, body) = app.api_post("/v1/grants", &grant).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let usage = json!({"userId": "alice", "credits": 20, "idempotencyKey": "job"});
    app.api_post("/v1/usage", &usage).await;
    // The promotion expires first, so it paid for the job.
    assert_eq!(grants_of(&app.balance("alice").await, "manual").len(), 2);

    while Utc::now() <= soon {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let balance = app.balance("alice").await;
    assert_eq!(balance["credits"]["available"], 100, "{balance}");
    assert_eq!(app.ledger_sum("alice").await, 100);
    let expiries: Vec<i64> =
        sqlx::query_scalar("select delta from credit_ledger where user_id = 'alice' and kind = 'expiry'")
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert_eq!(expiries, vec![-30]);
}

#[tokio::test]
async fn given_a_period_paid_then_refunded_then_its_credits_go_back_in_proportion_and_what_was_spent_is_owed() {
    let app = TestApp::spawn().await;
    let purchase = app.fulfilled_purchase("alice", "team_monthly").await;
    let usage = json!({"userId": "alice", "credits": 300, "idempotencyKey": "job"});
    let (status, _, body) = app.api_post("/v1/usage", &usage).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let charge = app
        .emulator
        .latest_charge_of_subscription(&purchase.subscription_id())
        .unwrap();

    // Half of the 4,900-cent period back: half of its 1,000 credits.
    let (_, events) = app.emulator.refund(&charge, Some(2450)).unwrap();
    app.deliver_all(&events).await;
    let balance = app.balance("alice").await;
    assert_eq!(balance["credits"]["available"], 200, "{balance}");
    assert_eq!(app.ledger_sum("alice").await, 200);

    // The rest back: all of it, and the 300 spent are owed.
    let (_, events) = app.emulator.refund(&charge, None).unwrap();
    app.deliver_all(&events).await;
    app.deliver_all(&events).await;
    let balance = app.balance("alice").await;
    assert_eq!(
        (
            balance["credits"]["available"].as_i64(),
            balance["credits"]["overdrawn"].as_i64()
        ),
        (Some(0), Some(300)),
        "{balance}"
    );
    assert_eq!(app.ledger_sum("alice").await, -300);
}
