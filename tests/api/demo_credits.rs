//! The demo shop's credits (`/dev/credits`): in emulator mode a signed-in buyer sees their balance
//! grant by grant and spends 10 at a time through the usage path; elsewhere the routes do not exist.

use chrono::{Duration, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, error_code, token_for};

impl TestApp {
    /// A manual grant with the key the app itself runs with (in emulator mode, the generated one).
    async fn grant_with_own_key(&self, user: &str, credits: i64, expires_at: Option<String>) {
        let response = self
            .http
            .post(self.url("/v1/grants"))
            .bearer_auth(self.config.api_keys[0].expose())
            .json(&json!({
                "userId": user, "credits": credits, "reason": "demo test", "expiresAt": expires_at,
                "idempotencyKey": format!("grant-{}", Uuid::new_v4()),
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{}", response.text().await.unwrap());
    }

    async fn demo_credits(&self, token: &str) -> Value {
        let (status, body) = self.get("/dev/credits", Some(token)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    async fn use_ten_credits(&self, token: &str) -> (StatusCode, Value) {
        self.post_json("/dev/credits/use", Some(token), &Value::Null).await
    }
}

/// (source, granted, remaining) of each grant, in the order the demo read lists them.
fn grants(credits: &Value) -> Vec<(String, i64, i64)> {
    credits["grants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["source"].as_str().unwrap().to_owned(),
                g["granted"].as_i64().unwrap(),
                g["remaining"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn given_25_credits_each_use_spends_exactly_10_from_the_grant_expiring_first_and_the_third_is_refused() {
    let app = TestApp::spawn_in_emulator_mode().await;
    let token = app.dev_token("alice").await;
    app.grant_with_own_key("alice", 10, None).await;
    let next_week = (Utc::now() + Duration::days(7)).to_rfc3339();
    app.grant_with_own_key("alice", 15, Some(next_week)).await;

    let before = app.demo_credits(&token).await;
    assert_eq!(before["available"], 25);
    // The expiring grant is listed first: it is spent first.
    assert_eq!(
        grants(&before),
        [("manual".to_owned(), 15, 15), ("manual".to_owned(), 10, 10)]
    );
    assert!(before["grants"][0]["expiresAt"].is_string() && before["grants"][1]["expiresAt"].is_null());

    let (status, first) = app.use_ten_credits(&token).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(
        (first["credits"].as_i64(), first["available"].as_i64()),
        (Some(10), Some(15))
    );
    assert_eq!(
        grants(&app.demo_credits(&token).await),
        [("manual".to_owned(), 15, 5), ("manual".to_owned(), 10, 10)]
    );

    let (status, second) = app.use_ten_credits(&token).await;
    assert_eq!(
        (status, second["available"].as_i64()),
        (StatusCode::OK, Some(5)),
        "{second}"
    );
    assert_ne!(first["usageId"], second["usageId"], "each click is its own use");
    assert_eq!(grants(&app.demo_credits(&token).await), [("manual".to_owned(), 10, 5)]);

    let (status, refused) = app.use_ten_credits(&token).await;
    assert_eq!(
        (status, error_code(&refused)),
        (StatusCode::PAYMENT_REQUIRED, "insufficient_credits")
    );
    assert!(
        refused["error"]["message"].as_str().unwrap().contains("5 available"),
        "{refused}"
    );

    // Two usage rows of exactly -10 each, and nothing for the refusal.
    let usages: Vec<i64> =
        sqlx::query_scalar("select delta from credit_ledger where user_id = 'alice' and kind = 'usage' order by id")
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert_eq!(usages, [-10, -10]);
    assert_eq!(app.ledger_sum("alice").await, 5);
    assert_eq!(app.demo_credits(&token).await["available"], 5);
    let (_, account) = app.get("/entitlements", Some(&token)).await;
    assert_eq!(account["credits"], 5);
}

#[tokio::test]
async fn the_demo_credit_routes_need_a_user_token() {
    let app = TestApp::spawn_in_emulator_mode().await;
    let (status, body) = app.get("/dev/credits", None).await;
    assert_eq!((status, error_code(&body)), (StatusCode::UNAUTHORIZED, "unauthorized"));
    let (status, body) = app.post_json("/dev/credits/use", None, &Value::Null).await;
    assert_eq!((status, error_code(&body)), (StatusCode::UNAUTHORIZED, "unauthorized"));
    // Not the API key either: it names no user.
    let key = app.config.api_keys[0].expose().to_owned();
    let (status, _) = app.post_json("/dev/credits/use", Some(&key), &Value::Null).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn with_a_stripe_key_the_demo_credit_routes_do_not_exist() {
    let app = TestApp::spawn().await;
    app.grant_credits("alice", 100).await;
    let token = token_for("alice");
    let (status, body) = app.get("/dev/credits", Some(&token)).await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, "not_found"));
    let (status, body) = app.post_json("/dev/credits/use", Some(&token), &Value::Null).await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, "not_found"));
    assert_eq!(app.credits("alice").await, 100);
}
