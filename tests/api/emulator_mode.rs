//! The zero-configuration mode: the built-in emulator plays Stripe end to end, its signed webhooks
//! pass the same verifier as Stripe's, and a real key can never be combined with it.

use std::{process::Command, time::Duration};

use reqwest::{StatusCode, redirect::Policy};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, error_code};

/// Polls the order until it leaves `pending` (the webhook is delivered in the background).
async fn settled_status(app: &TestApp, token: &str, order_id: &str) -> Value {
    for _ in 0..200 {
        let (_, order) = app
            .post_json("/order-status", Some(token), &json!({ "orderId": order_id }))
            .await;
        if order["status"] != "pending" {
            return order;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("order {order_id} stayed pending");
}

async fn start_checkout(app: &TestApp, token: &str, plan: &str) -> (String, String) {
    let (status, body) = app
        .post_json("/checkout-session", Some(token), &json!({ "planId": plan }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (
        body["orderId"].as_str().unwrap().to_owned(),
        body["checkoutUrl"].as_str().unwrap().to_owned(),
    )
}

/// Pays on the hosted page with the test card that succeeds.
async fn pay_with_card(checkout_url: &str) -> reqwest::Response {
    submit_payment(checkout_url, &[("method", "card"), ("card_number", "4242424242424242")]).await
}

async fn cancel(app: &TestApp, token: &str, order_id: &str) -> (StatusCode, Value) {
    app.post_json("/cancel-checkout", Some(token), &json!({ "orderId": order_id }))
        .await
}

/// Submits the hosted checkout page's form, as the browser would, without following the redirect.
async fn submit_payment(checkout_url: &str, form: &[(&str, &str)]) -> reqwest::Response {
    let browser = reqwest::Client::builder().redirect(Policy::none()).build().unwrap();
    browser.post(checkout_url).form(form).send().await.unwrap()
}

#[tokio::test]
async fn paying_on_the_hosted_page_redirects_to_the_return_page_and_the_signed_webhook_grants_credits() {
    let app = TestApp::spawn_in_emulator_mode().await;
    let token = app.dev_token("alice").await;
    let (order_id, checkout_url) = start_checkout(&app, &token, "credits_100").await;
    assert!(
        checkout_url.starts_with(&format!("{}/stripe-emulator/c/pay/cs_test_", app.address)),
        "{checkout_url}"
    );

    let page = app.http.get(&checkout_url).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("$5.00") && page.contains("100 credits"), "{page}");

    let declined = submit_payment(
        &checkout_url,
        &[("method", "card"), ("card_number", "4000 0000 0000 0002")],
    )
    .await;
    assert_eq!(declined.status(), StatusCode::OK);
    assert!(declined.text().await.unwrap().contains("Your card was declined."));

    let paid = submit_payment(
        &checkout_url,
        &[("method", "card"), ("card_number", "4242 4242 4242 4242")],
    )
    .await;
    assert_eq!(paid.status(), StatusCode::SEE_OTHER);
    let session_id = checkout_url.rsplit('/').next().unwrap();
    assert_eq!(
        paid.headers()["location"],
        format!(
            "{}/checkout/return?order_id={order_id}&session_id={session_id}",
            app.address
        )
        .as_str()
    );

    let order = settled_status(&app, &token, &order_id).await;
    assert_eq!(order["status"], "paid");
    let (_, account) = app.get("/entitlements", Some(&token)).await;
    assert_eq!(account["credits"], 100);
    // The delivery went through the real verifier and was recorded once.
    let outcomes: Vec<String> = sqlx::query_scalar("select outcome from processed_webhook_events")
        .fetch_all(&app.db)
        .await
        .unwrap();
    assert_eq!(outcomes, ["fulfilled"]);
    assert_eq!(app.emulator.events().len(), 1);
}

#[tokio::test]
async fn a_bank_debit_completes_unpaid_and_the_later_outcome_settles_the_order() {
    let app = TestApp::spawn_in_emulator_mode().await;
    let token = app.dev_token("alice").await;

    let (succeeding, url) = start_checkout(&app, &token, "pro_monthly").await;
    assert_eq!(
        submit_payment(&url, &[("method", "bank"), ("bank_outcome", "succeeds")])
            .await
            .status(),
        StatusCode::SEE_OTHER
    );
    let (failing, url) = start_checkout(&app, &token, "credits_100").await;
    assert_eq!(
        submit_payment(&url, &[("method", "bank"), ("bank_outcome", "fails")])
            .await
            .status(),
        StatusCode::SEE_OTHER
    );

    // Right after the redirect both are still pending: the money has not moved yet.
    let (_, order) = app
        .post_json("/order-status", Some(&token), &json!({ "orderId": succeeding }))
        .await;
    assert_eq!(order["status"], "pending");

    assert_eq!(settled_status(&app, &token, &succeeding).await["status"], "paid");
    assert_eq!(settled_status(&app, &token, &failing).await["status"], "failed");
    let (_, account) = app.get("/entitlements", Some(&token)).await;
    assert_eq!(
        (account["credits"].as_i64(), account["entitlements"][0]["key"].as_str()),
        (Some(0), Some("pro"))
    );
}

#[tokio::test]
async fn canceling_expires_the_stripe_session_and_the_webhook_cancels_the_order() {
    let app = TestApp::spawn_in_emulator_mode().await;
    let token = app.dev_token("alice").await;
    let (order_id, checkout_url) = start_checkout(&app, &token, "credits_100").await;

    let mallory = app.dev_token("mallory").await;
    let (status, body) = app
        .post_json("/cancel-checkout", Some(&mallory), &json!({ "orderId": order_id }))
        .await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, "order_not_found"));

    let (status, _) = cancel(&app, &token, &order_id).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(settled_status(&app, &token, &order_id).await["status"], "canceled");

    // The abandoned session can no longer be paid, and a canceled order cannot be canceled again.
    let late = pay_with_card(&checkout_url).await;
    assert!(late.text().await.unwrap().contains("expired"));
    let (status, body) = cancel(&app, &token, &order_id).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::CONFLICT, "order_not_cancelable")
    );
}

#[tokio::test]
async fn a_paid_order_cannot_be_canceled() {
    let app = TestApp::spawn_in_emulator_mode().await;
    let token = app.dev_token("alice").await;
    let (order_id, url) = start_checkout(&app, &token, "credits_100").await;
    pay_with_card(&url).await;
    assert_eq!(settled_status(&app, &token, &order_id).await["status"], "paid");
    let (status, body) = cancel(&app, &token, &order_id).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::CONFLICT, "order_not_cancelable")
    );
}

#[tokio::test]
async fn the_emulator_retries_a_refused_delivery_until_the_service_accepts_it() {
    let app = TestApp::spawn_in_emulator_mode().await;
    let token = app.dev_token("alice").await;
    let (order_id, url) = start_checkout(&app, &token, "credits_100").await;

    // While no order row can be read the webhook answers 5xx; the emulator must keep trying.
    sqlx::query("alter table orders rename to orders_away")
        .execute(&app.db)
        .await
        .unwrap();
    pay_with_card(&url).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let processed: i64 = sqlx::query_scalar("select count(*) from processed_webhook_events")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(processed, 0, "a failed delivery must leave nothing marked processed");
    sqlx::query("alter table orders_away rename to orders")
        .execute(&app.db)
        .await
        .unwrap();

    assert_eq!(settled_status(&app, &token, &order_id).await["status"], "paid");
    let (_, account) = app.get("/entitlements", Some(&token)).await;
    assert_eq!(account["credits"], 100);
}

#[tokio::test]
async fn dev_sign_in_does_not_exist_when_a_stripe_key_is_configured() {
    let app = TestApp::spawn().await;
    let (status, body) = app.post_json("/dev/token", None, &json!({ "userId": "alice" })).await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, "not_found"));
    let (status, _) = app.get("/stripe-emulator/c/pay/cs_test_x", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_binary_refuses_to_emulate_stripe_when_a_key_is_set() {
    let output = Command::new(env!("CARGO_BIN_EXE_entitle"))
        .env_clear()
        .env("STRIPE_EMULATOR", "true")
        .env("STRIPE_SECRET_KEY", "sk_test_real_looking_key")
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("STRIPE_EMULATOR") && stderr.lines().count() == 1,
        "{stderr}"
    );
    assert!(
        !stderr.contains("sk_test_real_looking_key"),
        "secrets are never printed: {stderr}"
    );
}

#[tokio::test]
async fn without_postgres_the_binary_says_how_to_get_one() {
    let unused_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let output = Command::new(env!("CARGO_BIN_EXE_entitle"))
        .env_clear()
        .env(
            "DATABASE_URL",
            format!(
                "postgres://postgres@127.0.0.1:{unused_port}/entitle_{}",
                Uuid::new_v4().simple()
            ),
        )
        .env("BIND_ADDR", "127.0.0.1:0")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("docker compose up -d postgres") && stderr.contains("DATABASE_URL="),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_session_left_open_past_its_expiry_cancels_the_order() {
    let app = TestApp::spawn_in_emulator_mode().await;
    let token = app.dev_token("alice").await;
    let (order_id, url) = start_checkout(&app, &token, "credits_100").await;
    let session_id = url.rsplit('/').next().unwrap();
    assert!(
        app.emulator
            .set_session_expiry(session_id, chrono::Utc::now().timestamp())
    );

    assert_eq!(settled_status(&app, &token, &order_id).await["status"], "canceled");
    assert_eq!(app.emulator.session(session_id).unwrap()["status"], "expired");
}

#[tokio::test]
async fn under_duplicated_and_reordered_deliveries_every_order_is_granted_exactly_once() {
    let app =
        TestApp::spawn_in_emulator_mode_with(&[("EMULATOR_DUPLICATE_RATE", "1"), ("EMULATOR_REORDER", "true")]).await;
    let token = app.dev_token("alice").await;
    let mut orders = Vec::new();
    for method in ["card", "bank", "card", "bank", "card"] {
        let (order_id, url) = start_checkout(&app, &token, "credits_100").await;
        let form = [
            ("method", method),
            ("card_number", "4242424242424242"),
            ("bank_outcome", "succeeds"),
        ];
        assert_eq!(submit_payment(&url, &form).await.status(), StatusCode::SEE_OTHER);
        orders.push(order_id);
    }
    for order_id in &orders {
        assert_eq!(settled_status(&app, &token, order_id).await["status"], "paid");
    }
    // Give the second copies time to land, then check nothing was granted twice.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_, account) = app.get("/entitlements", Some(&token)).await;
    assert_eq!(account["credits"], 100 * orders.len() as i64);
    let ledger_rows: i64 = sqlx::query_scalar("select count(*) from credit_ledger")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(ledger_rows, orders.len() as i64);
    let processed: i64 = sqlx::query_scalar("select count(*) from processed_webhook_events")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(
        processed,
        app.emulator.events().len() as i64,
        "each distinct event recorded once"
    );
}

#[tokio::test]
async fn the_emulator_answers_like_stripe_for_bad_keys_unknown_sessions_and_unknown_endpoints() {
    let app = TestApp::spawn_in_emulator_mode().await;
    let api = |path: &str| app.url(&format!("/stripe-emulator/v1{path}"));

    let no_key = app.http.get(api("/checkout/sessions/cs_test_x")).send().await.unwrap();
    assert_eq!(no_key.status(), StatusCode::UNAUTHORIZED);
    let body: Value = no_key.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");

    let unknown = app
        .http
        .get(api("/checkout/sessions/cs_test_x"))
        .bearer_auth("sk_test_x")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let body: Value = unknown.json().await.unwrap();
    assert_eq!(
        (body["error"]["type"].as_str(), body["error"]["param"].as_str()),
        (Some("invalid_request_error"), Some("session"))
    );

    let endpoint = app
        .http
        .get(api("/payouts"))
        .bearer_auth("sk_test_x")
        .send()
        .await
        .unwrap();
    assert_eq!(endpoint.status(), StatusCode::NOT_FOUND);
    let body: Value = endpoint.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Unrecognized request URL")
    );
}

#[tokio::test]
async fn a_promotion_code_typed_on_the_hosted_page_lowers_the_charge_and_the_order_records_what_was_paid() {
    let plans = std::env::temp_dir().join(format!("entitle-promo-{}.toml", Uuid::new_v4().simple()));
    std::fs::write(
        &plans,
        r#"
[plans.credits_promo]
name = "100 credits, promotion codes welcome"
kind = "one_time"
amount = 500
currency = "usd"
credits = 100
allow_promotion_codes = true

[plans.credits_100]
name = "100 credits"
kind = "one_time"
amount = 500
currency = "usd"
credits = 100
"#,
    )
    .unwrap();
    let app = TestApp::spawn_in_emulator_mode_with(&[("PLANS_FILE", plans.to_str().unwrap())]).await;
    let token = app.dev_token("alice").await;

    let (_, plain_url) = start_checkout(&app, &token, "credits_100").await;
    let plain = app.http.get(&plain_url).send().await.unwrap().text().await.unwrap();
    assert!(
        !plain.contains(r#"id="promotion-form""#),
        "a plan without allow_promotion_codes has no field"
    );

    let (order_id, url) = start_checkout(&app, &token, "credits_promo").await;
    let page = app.http.get(&url).send().await.unwrap().text().await.unwrap();
    assert!(page.contains(r#"id="promotion-form""#), "{page}");

    // The browser follows the redirect back to the page, as after Stripe's "Apply".
    let refused = app
        .http
        .post(format!("{url}/promotion-code"))
        .form(&[("code", "NOPE")])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.url().as_str(), format!("{url}?promotion_code=invalid"));
    let refused = refused.text().await.unwrap();
    assert!(
        refused.contains("This code is invalid.") && refused.contains("Pay $5.00"),
        "{refused}"
    );

    let applied = app
        .http
        .post(format!("{url}/promotion-code"))
        .form(&[("code", "save20")])
        .send()
        .await
        .unwrap();
    assert_eq!(applied.url().as_str(), url);
    let applied = applied.text().await.unwrap();
    assert!(
        applied.contains("Pay $4.00") && applied.contains("SAVE20") && !applied.contains(r#"id="promotion-form""#),
        "{applied}"
    );
    let session_id = url.rsplit('/').next().unwrap();
    let session = app.emulator.session(session_id).unwrap();
    assert_eq!(
        (session["amount_subtotal"].clone(), session["amount_total"].clone()),
        (json!(500), json!(400))
    );

    assert_eq!(pay_with_card(&url).await.status(), StatusCode::SEE_OTHER);
    let order = settled_status(&app, &token, &order_id).await;
    assert_eq!(
        (order["status"].clone(), order["amountPaid"].clone()),
        (json!("paid"), json!(400))
    );
    let (_, account) = app.get("/entitlements", Some(&token)).await;
    assert_eq!(account["credits"], 100, "the catalog's credits, whatever the discount");
}
