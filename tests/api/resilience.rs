//! When the database goes away mid-flight, Stripe is told to retry and nothing is half-done.

use entitle::stripe_emulator::PaymentResult;
use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};
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

/// Ends every session the app has open, as a database restart or a failover does, while the
/// database itself stays up.
async fn kill_app_connections(app: &TestApp) {
    let mut admin = PgConnection::connect(&format!("{}/postgres", admin_database_url()))
        .await
        .unwrap();
    let killed: i64 = sqlx::query_scalar(
        "select count(*) from (select pg_terminate_backend(pid) from pg_stat_activity where datname = $1) k",
    )
    .bind(&app.db_name)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert!(killed > 0, "the app had no connection open");
}

/// The pool does not ping a connection before every use (docs/performance.md); a dead one must
/// still cost no request its answer.
#[tokio::test]
async fn given_the_pooled_connections_died_when_requests_arrive_then_each_is_answered_normally() {
    let app = TestApp::spawn().await;
    let (order_id, session_id) = app.checkout("alice", "credits_100").await;
    let event = app.pay(&session_id, PaymentResult::Card).remove(0);
    let token = crate::helpers::token_for("alice");
    let open_several_connections = || join_all((0..8).map(|_| app.get("/plans", None)));

    open_several_connections().await;
    kill_app_connections(&app).await;
    let (status, body) = app.deliver(&event).await;
    assert_eq!(
        (status, body["outcome"].as_str()),
        (StatusCode::OK, Some("fulfilled")),
        "{body}"
    );

    let requests: [(&str, Option<&str>, Option<Value>); 6] = [
        ("/order-status", Some(&token), Some(json!({ "orderId": order_id }))),
        ("/order-status", Some(&token), Some(json!({ "sessionId": session_id }))),
        (
            "/checkout-session",
            Some(&token),
            Some(json!({ "planId": "credits_100" })),
        ),
        ("/entitlements", Some(&token), None),
        ("/plans", None, None),
        ("/healthz", None, None),
    ];
    for (path, token, body) in requests {
        open_several_connections().await;
        kill_app_connections(&app).await;
        let (status, answer) = match &body {
            Some(body) => app.post_json(path, token, body).await,
            None => app.get(path, token).await,
        };
        assert_eq!(status, StatusCode::OK, "{path} {body:?}: {answer}");
    }
    assert_eq!(app.credits("alice").await, 100);
}

/// The checkout releases its connection while Stripe creates the session, which may take seconds;
/// the pooled connections can die meanwhile. The session exists at Stripe by then, so the write
/// that follows (the session id, or `failed` when Stripe refused) must still land.
#[tokio::test]
async fn given_the_pooled_connections_died_while_stripe_was_creating_the_session_then_the_checkout_still_completes() {
    let app = TestApp::spawn().await;
    let token = crate::helpers::token_for("alice");
    let checkout_while_connections_die = || async {
        join_all((0..8).map(|_| app.get("/plans", None))).await;
        app.emulator
            .set_api_latency(Some(std::time::Duration::from_millis(800)));
        let kill_meanwhile = async {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            kill_app_connections(&app).await;
        };
        let request = json!({ "planId": "credits_100" });
        let (answer, ()) = tokio::join!(
            app.post_json("/checkout-session", Some(&token), &request),
            kill_meanwhile
        );
        answer
    };

    let (status, body) = checkout_while_connections_die().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let order_id: uuid::Uuid = body["orderId"].as_str().unwrap().parse().unwrap();
    let stored: Option<String> = sqlx::query_scalar("select stripe_checkout_session_id from orders where id = $1")
        .bind(order_id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    let session_id = stored.expect("the order records its session");
    assert!(body["checkoutUrl"].as_str().unwrap().contains(&session_id), "{body}");

    app.emulator.fail_session_creation(Some(500));
    let (status, body) = checkout_while_connections_die().await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(error_code(&body), "payment_provider_unavailable");
    let statuses: Vec<String> =
        sqlx::query_scalar("select status::text from orders where user_id = 'alice' order by created_at")
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert_eq!(statuses, ["pending", "failed"]);
}
