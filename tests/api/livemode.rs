//! A correctly signed event from the other Stripe mode (a test payment on a live service, or the
//! reverse) is refused after its signature is checked and before anything is applied or recorded.

use entitle::stripe_emulator::PaymentResult;
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{Options, TestApp, error_code};

/// A checkout paid at the emulator: its completed event (marked `livemode: false`) and the buyer.
async fn paid_checkout_event(app: &TestApp, user: &str) -> Value {
    let (_, session_id) = app.checkout(user, "credits_100").await;
    app.pay(&session_id, PaymentResult::Card).remove(0)
}

async fn assert_refused_and_nothing_changed(app: &TestApp, event: &Value, user: &str) {
    let (status, body) = app.deliver(event).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(error_code(&body), "livemode_mismatch");
    assert_eq!(app.credits(user).await, 0);
    assert_eq!(
        app.processed_event_count().await,
        0,
        "a refused event is never recorded"
    );
}

#[tokio::test]
async fn given_a_test_key_when_a_signed_live_mode_event_arrives_then_it_is_refused_and_nothing_changes() {
    let app = TestApp::spawn().await;
    let mut event = paid_checkout_event(&app, "alice").await;
    event["livemode"] = true.into();
    assert_refused_and_nothing_changed(&app, &event, "alice").await;

    // Nothing was consumed: the same event from test mode is applied.
    event["livemode"] = false.into();
    let (status, body) = app.deliver(&event).await;
    assert_eq!(
        (status, body["outcome"].as_str()),
        (StatusCode::OK, Some("fulfilled")),
        "{body}"
    );
    assert_eq!(app.credits("alice").await, 100);
}

#[tokio::test]
async fn given_a_live_key_when_a_signed_test_mode_event_arrives_then_it_is_refused_and_nothing_changes() {
    let app = TestApp::spawn_with(Options {
        stripe_secret_key: "sk_live_emulated",
        ..Options::default()
    })
    .await;
    let mut event = paid_checkout_event(&app, "alice").await;
    assert_eq!(event["livemode"], false);
    assert_refused_and_nothing_changed(&app, &event, "alice").await;

    event["livemode"] = true.into();
    let (status, body) = app.deliver(&event).await;
    assert_eq!(
        (status, body["outcome"].as_str()),
        (StatusCode::OK, Some("fulfilled")),
        "{body}"
    );
    assert_eq!(app.credits("alice").await, 100);
}

#[tokio::test]
async fn given_a_signed_event_without_livemode_then_it_is_refused_as_not_from_stripe() {
    let app = TestApp::spawn().await;
    let mut event = paid_checkout_event(&app, "alice").await;
    event.as_object_mut().unwrap().remove("livemode");
    assert_refused_and_nothing_changed(&app, &event, "alice").await;
}
