//! `GET /metrics`: what an operator scrapes. Each test reads the counters its own traffic moved,
//! from the app's own registry (one per app, so parallel tests do not see each other's).

use std::time::Duration;

use entitle::stripe_emulator::PaymentResult;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Options, TestApp, token_for};

const TOKEN: &str = "metrics-token-0123456789abcdefghijklmnop";

async fn scrape(app: &TestApp) -> String {
    let response = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    response.text().await.unwrap()
}

/// The value of the one sample named exactly `series` (name and labels as rendered), if any.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn a_paid_checkout_shows_in_the_webhook_stripe_and_request_metrics() {
    let app = TestApp::spawn().await;
    let (_, session_id) = app.checkout("alice", "credits_100").await;
    let events = app.pay(&session_id, PaymentResult::Card);
    assert_eq!(app.deliver(&events[0]).await.0, StatusCode::OK);
    assert_eq!(app.deliver(&events[0]).await.0, StatusCode::OK);
    // A forged delivery: counted as a signature failure, its claimed type nowhere.
    let forged = serde_json::to_vec(&json!({"id": "evt_forged", "type": "forged.type"})).unwrap();
    let (status, _) = app.deliver_raw(forged, Some("t=1,v1=00")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = app.deliver_raw(b"{}".to_vec(), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let text = scrape(&app).await;
    let events_of = |outcome: &str| {
        sample(
            &text,
            &format!(r#"entitle_webhook_events_total{{event_type="checkout.session.completed",outcome="{outcome}"}}"#),
        )
    };
    assert_eq!(events_of("fulfilled"), Some(1.0), "{text}");
    assert_eq!(events_of("duplicate"), Some(1.0), "{text}");
    assert!(!text.contains("forged.type"), "{text}");
    // The stale timestamp `t=1` is refused before the signature is even compared.
    let failures = sample(
        &text,
        r#"entitle_webhook_signature_failures_total{reason="outside_tolerance"}"#,
    )
    .or_else(|| sample(&text, r#"entitle_webhook_signature_failures_total{reason="no_match"}"#));
    assert_eq!(failures, Some(1.0), "{text}");
    assert_eq!(
        sample(
            &text,
            r#"entitle_webhook_signature_failures_total{reason="missing_header"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "entitle_webhook_processing_duration_seconds_count"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "entitle_webhook_event_lag_seconds_count"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"entitle_stripe_api_calls_total{endpoint="POST /v1/checkout/sessions",status="200"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"entitle_http_requests_total{method="POST",route="/checkout-session",status="200"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"entitle_http_requests_total{method="POST",route="/payment-webhook",status="400"}"#
        ),
        Some(2.0),
        "{text}"
    );
    assert!(text.ends_with("# EOF\n"));
}

#[tokio::test]
async fn requests_are_labelled_by_route_template_and_unknown_paths_share_one_series() {
    let app = TestApp::spawn().await;
    for user in ["u1", "u2", "u3"] {
        assert_eq!(
            app.api_get(&format!("/v1/users/{user}/balance")).await.0,
            StatusCode::OK
        );
    }
    for path in ["/nope", "/wp-login.php", "/.env"] {
        assert_eq!(app.get(path, None).await.0, StatusCode::NOT_FOUND);
    }

    let text = scrape(&app).await;
    assert_eq!(
        sample(
            &text,
            r#"entitle_http_requests_total{method="GET",route="/v1/users/{user_id}/balance",status="200"}"#
        ),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"entitle_http_requests_total{method="GET",route="unmatched",status="404"}"#
        ),
        Some(3.0),
        "{text}"
    );
    for leaked in ["wp-login", "/.env", "u1", "u2"] {
        assert!(!text.contains(leaked), "{leaked} in {text}");
    }
}

#[tokio::test]
async fn a_held_long_poll_is_counted_while_it_waits_and_the_pool_is_reported() {
    let app = TestApp::spawn().await;
    let (order_id, _) = app.checkout("alice", "credits_100").await;
    let poll = {
        let (http, url) = (app.http.clone(), app.url("/order-status"));
        tokio::spawn(async move {
            http.post(url)
                .bearer_auth(token_for("alice"))
                .json(&json!({ "orderId": order_id, "waitSeconds": 3 }))
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    let mut held = None;
    for _ in 0..100 {
        held = sample(&scrape(&app).await, "entitle_order_status_long_polls_held");
        if held == Some(1.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(held, Some(1.0));
    assert_eq!(poll.await.unwrap(), StatusCode::OK);

    let text = scrape(&app).await;
    assert_eq!(
        sample(&text, "entitle_order_status_long_polls_held"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(sample(&text, "entitle_database_up"), Some(1.0), "{text}");
    let in_use = sample(&text, "entitle_db_pool_connections_in_use").unwrap();
    let idle = sample(&text, "entitle_db_pool_connections_idle").unwrap();
    assert!(in_use >= 0.0 && idle >= 1.0, "{text}");
    assert!(
        in_use + idle <= f64::from(app.config.database_max_connections),
        "{text}"
    );
}

#[tokio::test]
async fn the_outbox_backlog_shows_what_is_waiting_for_an_endpoint_that_is_down() {
    // Nothing listens on port 9: every delivery stays pending, retried.
    let app = TestApp::spawn_with(Options {
        app_webhook_urls: vec!["http://127.0.0.1:9/hooks".to_owned()],
        ..Options::default()
    })
    .await;
    let text = scrape(&app).await;
    assert_eq!(sample(&text, "entitle_outbox_pending_deliveries"), Some(0.0), "{text}");
    assert_eq!(
        sample(&text, "entitle_outbox_oldest_pending_age_seconds"),
        Some(0.0),
        "{text}"
    );

    let (_, session_id) = app.checkout("alice", "credits_100").await;
    let events = app.pay(&session_id, PaymentResult::Card);
    assert_eq!(app.deliver(&events[0]).await.0, StatusCode::OK);
    let pending: i64 = sqlx::query_scalar("select count(*) from outbox_deliveries where status = 'pending'")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert!(pending >= 2, "order.paid and entitlements.updated: {pending}");
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let text = scrape(&app).await;
    let reported = sample(&text, "entitle_outbox_pending_deliveries").unwrap();
    // Never delivered, so none can have left the backlog since it was counted.
    assert_eq!(reported, pending as f64, "{text}");
    assert!(
        sample(&text, "entitle_outbox_oldest_pending_age_seconds").unwrap() >= 1.0,
        "{text}"
    );
}

#[tokio::test]
async fn with_metrics_token_set_only_its_bearer_may_scrape() {
    let app = TestApp::spawn_with(Options {
        metrics_token: Some(TOKEN),
        ..Options::default()
    })
    .await;
    let url = app.url("/metrics");
    let status = |request: reqwest::RequestBuilder| async move { request.send().await.unwrap().status() };
    assert_eq!(status(app.http.get(&url)).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        status(
            app.http
                .get(&url)
                .bearer_auth("metrics-token-0123456789abcdefghijklmnoX")
        )
        .await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status(app.http.get(&url).bearer_auth(&TOKEN[..20])).await,
        StatusCode::UNAUTHORIZED
    );
    let (code, body) = app.get("/metrics", None).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "unauthorized", "{body}");

    let response = app.http.get(&url).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.text().await.unwrap().contains("entitle_http_requests_total"));
}

#[tokio::test]
async fn a_scheduled_reconciler_run_that_applies_a_missed_event_is_counted() {
    let app = TestApp::spawn_with(Options {
        jobs: entitle::config::JobIntervals {
            reconcile_every: Duration::from_secs(1),
            credit_sweep_every: Duration::from_secs(600),
            ..entitle::config::JobIntervals::default()
        },
        ..Options::default()
    })
    .await;
    let (_, session_id) = app.checkout("alice", "credits_100").await;
    // Paid at Stripe, its webhook never delivered: only the reconciler can apply it.
    app.pay(&session_id, PaymentResult::Card);

    let mut text = String::new();
    for _ in 0..150 {
        text = scrape(&app).await;
        if sample(&text, "entitle_reconciler_events_applied_total") == Some(1.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        sample(&text, "entitle_reconciler_events_applied_total"),
        Some(1.0),
        "{text}"
    );
    assert!(
        sample(&text, r#"entitle_reconciler_runs_total{outcome="ok"}"#).is_some_and(|runs| runs >= 1.0),
        "{text}"
    );
    assert!(
        sample(
            &text,
            r#"entitle_stripe_api_calls_total{endpoint="GET /v1/events",status="200"}"#
        )
        .is_some_and(|calls| calls >= 1.0),
        "{text}"
    );
    assert_eq!(app.credits("alice").await, 100);
}
