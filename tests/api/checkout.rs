//! Opening a purchase: the order comes first, Stripe is asked with the catalog's amount, and a
//! Stripe failure leaves a failed order and a 502.

use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{TestApp, error_code, token_for};

#[tokio::test]
async fn a_one_time_checkout_opens_a_stripe_session_priced_from_the_catalog() {
    let app = TestApp::spawn().await;

    // The client tries to set its own price; it must be ignored.
    let (status, body) = app
        .post_json(
            "/checkout-session",
            Some(&token_for("alice")),
            &json!({ "planId": "credits_100", "amount": 1, "currency": "jpy" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let order_id = Uuid::parse_str(body["orderId"].as_str().unwrap()).unwrap();
    let checkout_url = body["checkoutUrl"].as_str().unwrap();

    let requests = app.session_creations();
    assert_eq!(requests.len(), 1);
    let sent = &requests[0].params;
    assert_eq!(sent["mode"], "payment");
    assert_eq!(sent["client_reference_id"], order_id.to_string());
    assert_eq!(sent["metadata[order_id]"], order_id.to_string());
    assert_eq!(sent["metadata[user_id]"], "alice");
    assert_eq!(sent["metadata[plan_id]"], "credits_100");
    assert_eq!(sent["payment_intent_data[metadata][order_id]"], order_id.to_string());
    assert_eq!(sent["line_items[0][price_data][unit_amount]"], "500");
    assert_eq!(sent["line_items[0][price_data][currency]"], "usd");
    assert_eq!(sent["line_items[0][quantity]"], "1");
    assert_eq!(
        sent["success_url"],
        format!("http://localhost:5173/checkout/return?order_id={order_id}&session_id={{CHECKOUT_SESSION_ID}}")
    );
    assert!(sent.contains_key("cancel_url"));
    assert!(
        requests[0]
            .idempotency_key
            .as_deref()
            .unwrap()
            .contains(&order_id.to_string())
    );

    let session_id = checkout_url.rsplit('/').next().unwrap();
    let session = app.emulator.session(session_id).unwrap();
    assert_eq!(session["amount_total"], 500);
    assert_eq!(session["url"], checkout_url);

    let (status, amount, currency, stored_session): (String, i64, String, Option<String>) =
        sqlx::query_as("select status, amount, currency, stripe_checkout_session_id from orders where id = $1")
            .bind(order_id)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!((status.as_str(), amount, currency.as_str()), ("pending", 500, "usd"));
    assert_eq!(stored_session.as_deref(), Some(session_id));
}

#[tokio::test]
async fn a_subscription_checkout_uses_subscription_mode_with_metadata_on_the_subscription() {
    let app = TestApp::spawn().await;
    let (order_id, _) = app.checkout("alice", "pro_monthly").await;

    let sent = &app.session_creations()[0].params;
    assert_eq!(sent["mode"], "subscription");
    assert_eq!(sent["subscription_data[metadata][order_id]"], order_id.to_string());
    assert_eq!(sent["subscription_data[metadata][user_id]"], "alice");
    assert_eq!(sent["line_items[0][price_data][recurring][interval]"], "month");
    assert_eq!(sent["line_items[0][price_data][unit_amount]"], "2000");
    assert!(!sent.contains_key("payment_intent_data[metadata][order_id]"));
}

#[tokio::test]
async fn unknown_and_inactive_plans_are_404_and_create_no_order() {
    let app = TestApp::spawn().await;
    sqlx::query("update plans set active = false where id = 'pro_monthly'")
        .execute(&app.db)
        .await
        .unwrap();

    for plan in ["no_such_plan", "pro_monthly"] {
        let (status, body) = app
            .post_json(
                "/checkout-session",
                Some(&token_for("alice")),
                &json!({ "planId": plan }),
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{plan}: {body}");
        assert_eq!(error_code(&body), "plan_not_found");
    }
    assert_eq!(app.order_count().await, 0);
    assert!(app.emulator.requests().is_empty());
}

#[tokio::test]
async fn when_stripe_fails_the_order_is_failed_and_the_caller_gets_a_502_without_internals() {
    let app = TestApp::spawn().await;
    app.emulator.fail_session_creation(Some(500));

    let (status, body) = app
        .post_json(
            "/checkout-session",
            Some(&token_for("alice")),
            &json!({ "planId": "credits_100" }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(error_code(&body), "payment_provider_unavailable");
    let text = body.to_string();
    assert!(
        !text.contains("api_error") && !text.contains("127.0.0.1") && !text.contains("sk_test"),
        "{text}"
    );

    let statuses: Vec<String> = sqlx::query_scalar("select status from orders")
        .fetch_all(&app.db)
        .await
        .unwrap();
    assert_eq!(statuses, ["failed"]);
    // Transient failures were retried, always with the same idempotency key.
    let requests = app.session_creations();
    assert!(requests.len() > 1);
    assert!(
        requests
            .iter()
            .all(|r| r.idempotency_key == requests[0].idempotency_key)
    );
}

#[tokio::test]
async fn a_stripe_client_error_is_not_retried() {
    let app = TestApp::spawn().await;
    app.emulator.fail_session_creation(Some(400));
    let (status, _) = app
        .post_json(
            "/checkout-session",
            Some(&token_for("alice")),
            &json!({ "planId": "credits_100" }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(app.session_creations().len(), 1);
}

#[tokio::test]
async fn bad_request_bodies_get_a_clear_400_and_change_nothing() {
    let app = TestApp::spawn().await;
    let token = token_for("alice");

    let response = app
        .http
        .post(app.url("/checkout-session"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&response.json().await.unwrap()), "invalid_json");

    for body in [json!({}), json!({ "planId": 42 }), json!([])] {
        let (status, reply) = app.post_json("/checkout-session", Some(&token), &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(error_code(&reply), "invalid_body");
    }

    assert_eq!(app.order_count().await, 0);
}

#[tokio::test]
async fn plans_and_health_are_public() {
    let app = TestApp::spawn().await;
    let (status, body) = app.get("/healthz", None).await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("ok")));

    let (status, body) = app.get("/plans", None).await;
    assert_eq!(status, StatusCode::OK);
    let plans = body["plans"].as_array().unwrap();
    let credits = plans.iter().find(|p| p["id"] == "credits_100").unwrap();
    assert_eq!(
        (
            credits["amount"].as_i64(),
            credits["currency"].as_str(),
            credits["credits"].as_i64()
        ),
        (Some(500), Some("usd"), Some(100))
    );
    assert!(
        plans
            .iter()
            .any(|p| p["id"] == "pro_monthly" && p["kind"] == "subscription" && p["entitlement"] == "pro")
    );

    let (status, body) = app.get("/no-such-route", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "not_found");
}

#[tokio::test]
async fn every_response_carries_a_request_id_for_tracing_and_a_callers_own_id_is_kept() {
    let app = TestApp::spawn().await;
    let generated = app.http.get(app.url("/healthz")).send().await.unwrap();
    let id = generated.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
    let again = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_ne!(again.headers()["x-request-id"].to_str().unwrap(), id);

    let kept = app
        .http
        .get(app.url("/plans"))
        .header("x-request-id", "trace-me-123")
        .send()
        .await
        .unwrap();
    assert_eq!(kept.headers()["x-request-id"], "trace-me-123");
}

#[tokio::test]
async fn a_second_subscription_to_an_entitlement_already_held_is_refused() {
    let app = TestApp::spawn().await;
    let purchase = app.fulfilled_purchase("alice", "pro_monthly").await;
    assert_eq!(app.order_status("alice", purchase.order_id).await["status"], "paid");

    let (status, body) = app.try_checkout("alice", "pro_monthly").await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::CONFLICT, "already_subscribed")
    );
    // Others may still subscribe, and one-time plans are not affected.
    app.checkout("bob", "pro_monthly").await;
    app.checkout("alice", "credits_100").await;
}

#[tokio::test]
async fn input_postgres_cannot_store_is_a_400_not_a_500() {
    let app = TestApp::spawn().await;
    let token = token_for("alice");
    for (path, body) in [
        ("/checkout-session", json!({ "planId": "a\u{0}b" })),
        ("/order-status", json!({ "sessionId": "cs_\u{0}" })),
    ] {
        let (status, reply) = app.post_json(path, Some(&token), &body).await;
        assert_eq!(
            (status, error_code(&reply)),
            (StatusCode::BAD_REQUEST, "invalid_body"),
            "{path}"
        );
    }
    assert_eq!(app.order_count().await, 0);
}

#[tokio::test]
async fn a_wrong_method_is_405_in_the_error_shape() {
    let app = TestApp::spawn().await;
    let (status, body) = app.get("/checkout-session", None).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );
}

#[tokio::test]
async fn a_browser_on_the_frontend_origin_may_send_and_read_the_request_id() {
    let app = TestApp::spawn().await;
    let preflight = app
        .http
        .request(reqwest::Method::OPTIONS, app.url("/order-status"))
        .header("origin", "http://localhost:5173")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type,x-request-id",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "http://localhost:5173"
    );
    let allowed = preflight.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    assert!(
        allowed.contains("x-request-id") && allowed.contains("authorization"),
        "{allowed}"
    );

    let response = app
        .http
        .get(app.url("/plans"))
        .header("origin", "http://localhost:5173")
        .send()
        .await
        .unwrap();
    let exposed = response.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    assert!(exposed.contains("x-request-id"), "{exposed}");
}

#[tokio::test]
async fn canceling_a_checkout_stripe_does_not_know_is_a_409_not_a_502() {
    let app = TestApp::spawn().await;
    let (order_id, _) = app.checkout("alice", "credits_100").await;
    // As after a key mix-up, or the emulator restarting: Stripe answers 404 for the session.
    sqlx::query("update orders set stripe_checkout_session_id = 'cs_test_forgotten' where id = $1")
        .bind(order_id)
        .execute(&app.db)
        .await
        .unwrap();
    let (status, body) = app
        .post_json(
            "/cancel-checkout",
            Some(&token_for("alice")),
            &json!({ "orderId": order_id }),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::CONFLICT, "order_not_cancelable")
    );
}
