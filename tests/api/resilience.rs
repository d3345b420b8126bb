//! When the database goes away mid-flight, Stripe is told to retry and nothing is half-done.

use entitle::stripe_emulator::PaymentResult;
use reqwest::StatusCode;
use sqlx::{Connection, PgConnection};

use crate::helpers::{TestApp, admin_database_url, error_code};

async fn set_database_available(app: &TestApp, available: bool) {
    let mut admin = PgConnection::connect(&format!("{}/postgres", admin_database_url()))
        .await
        .unwrap();
    sqlx::query(&format!("alter database {} allow_connections {available}", app.db_name))
        .execute(&mut admin)
        .await
        .unwrap();
    if !available {
        sqlx::query("select pg_terminate_backend(pid) from pg_stat_activity where datname = $1")
            .bind(&app.db_name)
            .execute(&mut admin)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn given_the_database_is_down_when_a_webhook_arrives_then_5xx_and_the_redelivery_grants_once() {
    let app = TestApp::spawn().await;
    let (order_id, session_id) = app.checkout("alice", "credits_100").await;
    let event = app.pay(&session_id, PaymentResult::Card).remove(0);

    set_database_available(&app, false).await;
    let (status, body) = app.deliver(&event).await;
    assert!(status.is_server_error(), "{status}: {body}");
    assert_eq!(error_code(&body), "unavailable");
    assert!(!body.to_string().to_lowercase().contains("database"), "{body}");
    set_database_available(&app, true).await;

    // Nothing was marked processed, so Stripe's retry is applied in full.
    let (status, body) = app.deliver(&event).await;
    assert_eq!(
        (status, body["outcome"].as_str()),
        (StatusCode::OK, Some("fulfilled")),
        "{body}"
    );
    let (status, body) = app.deliver(&event).await;
    assert_eq!((status, body["outcome"].as_str()), (StatusCode::OK, Some("duplicate")));
    assert_eq!(app.credits("alice").await, 100);
    assert_eq!(app.ledger_rows(order_id).await, 1);
}
