//! The server API's core paths: a balance is spent once per key, reservations hold credits, and
//! the ledger's rows always sum to the balance.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{TestApp, error_code, token_for};

#[tokio::test]
async fn a_usage_spends_once_per_key_and_replays_the_same_answer() {
    let app = TestApp::spawn().await;
    app.grant_credits("alice", 100).await;
    let usage = json!({"userId": "alice", "credits": 30, "idempotencyKey": "job-1", "description": "render"});

    let (status, replayed, first) = app.api_post("/v1/usage", &usage).await;
    assert_eq!((status, replayed), (StatusCode::OK, false), "{first}");
    assert_eq!(
        (first["credits"].as_i64(), first["available"].as_i64()),
        (Some(30), Some(70))
    );

    let (status, replayed, again) = app.api_post("/v1/usage", &usage).await;
    assert_eq!((status, replayed), (StatusCode::OK, true), "{again}");
    assert_eq!(again["usageId"], first["usageId"]);
    assert_eq!(app.balance("alice").await["credits"]["available"], 70);

    let other = json!({"userId": "alice", "credits": 31, "idempotencyKey": "job-1"});
    let (status, _, body) = app.api_post("/v1/usage", &other).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::CONFLICT, "idempotency_key_reused")
    );
    assert_eq!(app.ledger_sum("alice").await, 70);
}

#[tokio::test]
async fn a_usage_beyond_the_balance_is_refused_and_writes_nothing() {
    let app = TestApp::spawn().await;
    app.grant_credits("alice", 10).await;
    let (status, _, body) = app
        .api_post(
            "/v1/usage",
            &json!({"userId": "alice", "credits": 11, "idempotencyKey": "k"}),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::PAYMENT_REQUIRED, "insufficient_credits")
    );
    assert!(
        body["error"]["message"].as_str().unwrap().contains("10 available"),
        "{body}"
    );
    assert_eq!(
        (body["error"]["available"].as_i64(), body["error"]["requested"].as_i64()),
        (Some(10), Some(11))
    );
    // The key names nothing: with credits enough it spends.
    app.grant_credits("alice", 1).await;
    let (status, replayed, _) = app
        .api_post(
            "/v1/usage",
            &json!({"userId": "alice", "credits": 11, "idempotencyKey": "k"}),
        )
        .await;
    assert_eq!((status, replayed), (StatusCode::OK, false));
}

#[tokio::test]
async fn a_reservation_holds_its_credits_until_committed_and_releases_the_rest() {
    let app = TestApp::spawn().await;
    app.grant_credits("alice", 100).await;
    let (status, _, held) = app
        .api_post(
            "/v1/reservations",
            &json!({"userId": "alice", "credits": 60, "idempotencyKey": "r1"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{held}");
    let balance = app.balance("alice").await;
    assert_eq!(
        (
            balance["credits"]["available"].as_i64(),
            balance["credits"]["reserved"].as_i64()
        ),
        (Some(40), Some(60))
    );
    let (status, _, body) = app
        .api_post(
            "/v1/usage",
            &json!({"userId": "alice", "credits": 41, "idempotencyKey": "u1"}),
        )
        .await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{body}");

    let id = held["reservationId"].as_str().unwrap();
    let (status, _, committed) = app
        .api_post(&format!("/v1/reservations/{id}/commit"), &json!({"credits": 25}))
        .await;
    assert_eq!(status, StatusCode::OK, "{committed}");
    assert_eq!(
        (committed["status"].as_str(), committed["spent"].as_i64()),
        (Some("committed"), Some(25))
    );
    let (status, _, again) = app
        .api_post(&format!("/v1/reservations/{id}/commit"), &json!({"credits": 25}))
        .await;
    assert_eq!((status, again["spent"].as_i64()), (StatusCode::OK, Some(25)));
    let (status, _, body) = app
        .api_post(&format!("/v1/reservations/{id}/release"), &json!({}))
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::CONFLICT, "reservation_committed")
    );

    let balance = app.balance("alice").await;
    assert_eq!(
        (
            balance["credits"]["available"].as_i64(),
            balance["credits"]["reserved"].as_i64()
        ),
        (Some(75), Some(0))
    );
    assert_eq!(app.ledger_sum("alice").await, 75);
}

#[tokio::test]
async fn a_user_token_is_refused_on_the_server_api_and_the_key_on_user_routes() {
    let app = TestApp::spawn().await;
    let (status, _) = app.get("/v1/users/alice/balance", Some(&token_for("alice"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = app.get("/entitlements", Some(crate::helpers::API_KEY)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_refund_takes_back_what_is_left_and_leaves_what_was_spent_owed() {
    let app = TestApp::spawn().await;
    let purchase = app.fulfilled_purchase("alice", "credits_100").await;
    let (status, _, body) = app
        .api_post(
            "/v1/usage",
            &json!({"userId": "alice", "credits": 70, "idempotencyKey": "u"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let charge = app.charge_of(&purchase);
    let (_, events) = app.emulator.refund(&charge, None).unwrap();
    app.deliver_all(&events).await;

    let balance = app.balance("alice").await;
    assert_eq!(
        (
            balance["credits"]["available"].as_i64(),
            balance["credits"]["overdrawn"].as_i64()
        ),
        (Some(0), Some(70))
    );
    assert_eq!(app.ledger_sum("alice").await, -70);
    // New credits pay what is owed first.
    app.grant_credits("alice", 100).await;
    let balance = app.balance("alice").await;
    assert_eq!(
        (
            balance["credits"]["available"].as_i64(),
            balance["credits"]["overdrawn"].as_i64()
        ),
        (Some(30), Some(0))
    );
    assert_eq!(app.ledger_sum("alice").await, 30);
}
