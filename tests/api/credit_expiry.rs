//! Credits handed back to a grant that has already expired (a reservation released after the
//! grant it took from expired and had its expiry written).

use chrono::{Duration, Utc};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::TestApp;

#[tokio::test]
async fn given_a_reservation_from_a_grant_that_expired_when_it_is_released_then_the_balance_still_reads() {
    let app = TestApp::spawn().await;
    let expires = (Utc::now() + Duration::seconds(2)).to_rfc3339();
    let body = json!({"userId": "alice", "credits": 20, "idempotencyKey": "g", "reason": "r", "expiresAt": expires});
    let (status, _, body) = app.api_post("/v1/grants", &body).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let body = json!({"userId": "alice", "credits": 10, "idempotencyKey": "r", "ttlSeconds": 600});
    let (status, _, held) = app.api_post("/v1/reservations", &body).await;
    assert_eq!(status, StatusCode::OK, "{held}");

    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    // This read writes the grant's expiry: the 10 it had left.
    assert_eq!(app.balance("alice").await["credits"]["available"], 0);
    let id = held["reservationId"].as_str().unwrap();
    let (status, _, released) = app
        .api_post(&format!("/v1/reservations/{id}/release"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{released}");

    // The 10 given back went into the expired grant; they must expire too, and the user stay readable.
    let balance = app.balance("alice").await;
    assert_eq!(balance["credits"]["available"], 0);
    assert_eq!(app.ledger_sum("alice").await, 0);
}
