//! What Stripe's events do: pay and grant once, however often and in whatever order they arrive.

use entitle::stripe_emulator::PaymentResult;
use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{TestApp, event_for, token_for};

#[tokio::test]
async fn given_a_paid_one_time_session_when_the_completed_event_arrives_then_the_credits_are_granted() {
    let app = TestApp::spawn().await;
    let (order_id, session_id) = app.checkout("alice", "credits_100").await;
    assert_eq!(app.credits("alice").await, 0);

    let events = app.pay(&session_id, PaymentResult::Card);
    let (status, body) = app.deliver(&events[0]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["outcome"], "fulfilled");

    let order = app.order_status("alice", order_id).await;
    assert_eq!(order["status"], "paid");
    assert!(order["paidAt"].is_string());
    assert_eq!(app.credits("alice").await, 100);
    assert_eq!(app.credits("bob").await, 0);

    let payment_intent: Option<String> =
        sqlx::query_scalar("select stripe_payment_intent_id from orders where id = $1")
            .bind(order_id)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(
        payment_intent.as_deref(),
        events[0]["data"]["object"]["payment_intent"].as_str()
    );
}

#[tokio::test]
async fn given_a_paid_subscription_session_when_completed_arrives_then_the_entitlement_is_active() {
    let app = TestApp::spawn().await;
    let (order_id, session_id) = app.checkout("alice", "pro_monthly").await;
    let events = app.pay(&session_id, PaymentResult::Card);
    assert_eq!(app.deliver(&events[0]).await.0, StatusCode::OK);

    assert_eq!(app.order_status("alice", order_id).await["status"], "paid");
    let (_, body) = app.get("/entitlements", Some(&token_for("alice"))).await;
    assert_eq!(body["userId"], "alice");
    assert_eq!(body["credits"], 0);
    assert_eq!(body["entitlements"][0]["key"], "pro");
    assert_eq!(body["entitlements"][0]["status"], "active");

    let subscription: Option<String> =
        sqlx::query_scalar("select stripe_subscription_id from entitlements where user_id = 'alice'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(
        subscription.as_deref(),
        events[0]["data"]["object"]["subscription"].as_str()
    );
    assert!(subscription.unwrap().starts_with("sub_"));
}

#[tokio::test]
async fn given_one_event_when_it_arrives_50_times_at_once_then_credits_are_granted_once() {
    let app = TestApp::spawn().await;
    let (order_id, session_id) = app.checkout("alice", "credits_100").await;
    let event = app.pay(&session_id, PaymentResult::Card).remove(0);

    let replies = join_all((0..50).map(|_| app.deliver(&event))).await;
    assert!(
        replies.iter().all(|(status, _)| *status == StatusCode::OK),
        "{replies:?}"
    );
    let fulfilled = replies
        .iter()
        .filter(|(_, body)| body["outcome"] == "fulfilled")
        .count();
    assert_eq!(fulfilled, 1);

    assert_eq!(app.credits("alice").await, 100);
    assert_eq!(app.ledger_rows(order_id).await, 1);
    assert_eq!(app.processed_event_count().await, 1);
}

#[tokio::test]
async fn given_two_different_paid_events_for_one_session_delivered_concurrently_then_credits_are_granted_once() {
    let app = TestApp::spawn().await;
    let (order_id, session_id) = app.checkout("alice", "credits_100").await;
    let completed = app.pay(&session_id, PaymentResult::Card).remove(0);
    // Stripe would only send this after an unpaid `completed`; here it races a paid one.
    let succeeded = event_for(&app, "checkout.session.async_payment_succeeded", &session_id);

    let deliveries = (0..20).flat_map(|_| [app.deliver(&completed), app.deliver(&succeeded)]);
    let replies = join_all(deliveries).await;
    assert!(replies.iter().all(|(status, _)| *status == StatusCode::OK));

    assert_eq!(app.credits("alice").await, 100);
    assert_eq!(app.ledger_rows(order_id).await, 1);
    assert_eq!(app.processed_event_count().await, 2);
}

#[tokio::test]
async fn given_a_delayed_payment_then_completed_keeps_pending_and_async_succeeded_grants_once() {
    let app = TestApp::spawn().await;
    let (order_id, session_id) = app.checkout("alice", "credits_100").await;
    let events = app.pay(&session_id, PaymentResult::DelayedSucceeds);
    assert_eq!(events[0]["type"], "checkout.session.completed");
    assert_eq!(events[0]["data"]["object"]["payment_status"], "unpaid");

    let (_, body) = app.deliver(&events[0]).await;
    assert_eq!(body["outcome"], "awaiting_payment");
    assert_eq!(app.order_status("alice", order_id).await["status"], "pending");
    assert_eq!(app.credits("alice").await, 0);

    let (_, body) = app.deliver(&events[1]).await;
    assert_eq!(body["outcome"], "fulfilled");
    assert_eq!(app.order_status("alice", order_id).await["status"], "paid");
    assert_eq!(app.credits("alice").await, 100);

    // A paid `completed` for the same session afterwards (a different event) grants nothing more.
    let mut late = event_for(&app, "checkout.session.completed", &session_id);
    late["data"]["object"]["payment_status"] = json!("paid");
    let (_, body) = app.deliver(&late).await;
    assert_eq!(body["outcome"], "already_fulfilled");
    assert_eq!(app.credits("alice").await, 100);
}

#[tokio::test]
async fn given_a_delayed_payment_that_bounces_then_the_order_fails_and_nothing_is_granted() {
    let app = TestApp::spawn().await;
    let (order_id, session_id) = app.checkout("alice", "credits_100").await;
    for event in app.pay(&session_id, PaymentResult::DelayedFails) {
        assert_eq!(app.deliver(&event).await.0, StatusCode::OK);
    }
    assert_eq!(app.order_status("alice", order_id).await["status"], "failed");
    assert_eq!(app.credits("alice").await, 0);
}

#[tokio::test]
async fn given_an_expired_session_then_the_order_is_canceled() {
    let app = TestApp::spawn().await;
    let (order_id, session_id) = app.checkout("alice", "credits_100").await;
    let expired = app.emulator.expire_session(&session_id).unwrap();
    let (_, body) = app.deliver(&expired).await;
    assert_eq!(body["outcome"], "marked_canceled");
    assert_eq!(app.order_status("alice", order_id).await["status"], "canceled");
    assert_eq!(app.credits("alice").await, 0);
}

#[tokio::test]
async fn given_a_paid_order_when_a_late_expired_or_failed_event_arrives_then_it_stays_paid() {
    let app = TestApp::spawn().await;
    let (order_id, session_id) = app.checkout("alice", "credits_100").await;
    let completed = app.pay(&session_id, PaymentResult::Card).remove(0);
    app.deliver(&completed).await;

    for late in ["checkout.session.expired", "checkout.session.async_payment_failed"] {
        let (status, body) = app.deliver(&event_for(&app, late, &session_id)).await;
        assert_eq!(
            (status, body["outcome"].as_str()),
            (StatusCode::OK, Some("status_unchanged")),
            "{late}"
        );
    }
    assert_eq!(app.order_status("alice", order_id).await["status"], "paid");
    assert_eq!(app.credits("alice").await, 100);
}

#[tokio::test]
async fn given_a_session_whose_amount_differs_from_the_order_then_nothing_is_granted_and_the_order_is_under_review() {
    let app = TestApp::spawn().await;
    let (order_id, session_id) = app.checkout("alice", "credits_100").await;
    for (field, value) in [("amount_total", json!(1)), ("currency", json!("eur"))] {
        let mut event = event_for(&app, "checkout.session.completed", &session_id);
        event["data"]["object"]["payment_status"] = json!("paid");
        event["data"]["object"][field] = value;
        let (status, body) = app.deliver(&event).await;
        assert_eq!(
            (status, body["outcome"].as_str()),
            (StatusCode::OK, Some("amount_mismatch")),
            "{field}"
        );
        let outcome: String = sqlx::query_scalar("select outcome from processed_webhook_events where event_id = $1")
            .bind(event["id"].as_str())
            .fetch_one(&app.db)
            .await
            .unwrap();
        assert_eq!(outcome, "amount_mismatch");
    }
    // Never silent: the buyer is told it is being looked at, and an operator can find it.
    assert_eq!(app.order_status("alice", order_id).await["status"], "under_review");
    assert_eq!(app.credits("alice").await, 0);
    let reason: String = sqlx::query_scalar("select review_reason from orders where id = $1")
        .bind(order_id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert!(reason.contains("paid 1 usd") && reason.contains("500 usd"), "{reason}");
}

#[tokio::test]
async fn given_an_event_for_no_known_order_or_of_an_unhandled_type_then_it_is_recorded_and_answered_200() {
    let app = TestApp::spawn().await;
    let (_, session_id) = app.checkout("alice", "credits_100").await;

    let mut stranger = event_for(&app, "checkout.session.completed", &session_id);
    stranger["data"]["object"]["id"] = json!("cs_test_unknown");
    stranger["data"]["object"]["client_reference_id"] = json!(null);
    stranger["data"]["object"]["metadata"] = json!({});
    stranger["data"]["object"]["payment_status"] = json!("paid");
    let (status, body) = app.deliver(&stranger).await;
    assert_eq!(
        (status, body["outcome"].as_str()),
        (StatusCode::OK, Some("no_matching_order"))
    );

    let mut unhandled = event_for(&app, "customer.created", &session_id);
    unhandled["data"]["object"] = json!({ "id": "cus_123", "object": "customer" });
    let (status, body) = app.deliver(&unhandled).await;
    assert_eq!(
        (status, body["outcome"].as_str()),
        (StatusCode::OK, Some("ignored_type"))
    );

    let mut malformed = event_for(&app, "checkout.session.completed", &session_id);
    malformed["data"]["object"] = json!({ "object": "checkout.session" });
    let (status, body) = app.deliver(&malformed).await;
    assert_eq!(
        (status, body["outcome"].as_str()),
        (StatusCode::OK, Some("malformed_object"))
    );

    assert_eq!(app.processed_event_count().await, 3);
    assert_eq!(app.credits("alice").await, 0);
}

#[tokio::test]
async fn given_the_session_id_was_never_stored_then_the_order_is_found_by_its_reference() {
    let app = TestApp::spawn().await;
    let (order_id, session_id) = app.checkout("alice", "credits_100").await;
    // As if the service had stopped between Stripe's answer and storing the session id.
    sqlx::query("update orders set stripe_checkout_session_id = null")
        .execute(&app.db)
        .await
        .unwrap();

    let event = app.pay(&session_id, PaymentResult::Card).remove(0);
    assert_eq!(app.deliver(&event).await.1["outcome"], "fulfilled");
    assert_eq!(app.credits("alice").await, 100);
    let stored: Option<String> = sqlx::query_scalar("select stripe_checkout_session_id from orders where id = $1")
        .bind(order_id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(stored.as_deref(), Some(session_id.as_str()));
}

#[tokio::test]
async fn given_an_event_naming_another_session_for_the_order_then_nothing_is_granted() {
    let app = TestApp::spawn().await;
    let (_, session_id) = app.checkout("alice", "credits_100").await;
    let mut event = app.pay(&session_id, PaymentResult::Card).remove(0);
    event["data"]["object"]["id"] = json!("cs_test_some_other_session");
    assert_eq!(app.deliver(&event).await.1["outcome"], "session_mismatch");
    assert_eq!(app.credits("alice").await, 0);
}

#[tokio::test]
async fn given_a_paid_session_then_the_order_keeps_the_email_the_buyer_gave_and_a_later_event_does_not_replace_it() {
    let app = TestApp::spawn().await;
    let (order_id, session_id) = app.checkout("alice", "credits_100").await;
    let events = app.pay(&session_id, PaymentResult::Card);
    let mut completed = events[0].clone();
    let given = completed["data"]["object"]["customer_details"]["email"].clone();
    assert!(
        given.is_string(),
        "the emulator's session has no buyer email: {completed}"
    );
    assert_eq!(app.deliver(&completed).await.0, StatusCode::OK);

    // The same session again with another address (a retried, differently-shaped event) keeps the first.
    completed["id"] = json!("evt_other_email");
    completed["data"]["object"]["customer_details"]["email"] = json!("someone-else@example.com");
    assert_eq!(app.deliver(&completed).await.0, StatusCode::OK);

    let stored: Option<String> = sqlx::query_scalar("select buyer_email from orders where id = $1")
        .bind(order_id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(stored.as_deref(), given.as_str());
}
