//! What the app hears of: one signed webhook per change (an order paid, refunded, disputed,
//! canceled or put under review; what a user holds changed), however Stripe delivers its events,
//! and nothing for a change that rolled back. Every request is verified by a real receiver with
//! the official Standard Webhooks library.

use chrono::Utc;
use entitle::stripe_emulator::PaymentResult;
use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    app_webhook_helpers::{Received, Receiver, sending_to},
    helpers::{TestApp, event_for, unix_now},
};

/// The events received, as (type, user), in a stable order.
fn kinds(received: &[Received]) -> Vec<(String, String)> {
    let mut kinds: Vec<(String, String)> = received
        .iter()
        .map(|r| {
            (
                r.event_type().to_owned(),
                r.data()["userId"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    kinds.sort();
    kinds
}

fn of_type<'a>(received: &'a [Received], event_type: &str) -> Vec<&'a Received> {
    received.iter().filter(|r| r.event_type() == event_type).collect()
}

/// The state of the highest version received for `user`.
fn latest_state(received: &[Received], user: &str) -> Value {
    received
        .iter()
        .filter(|r| r.event_type() == "entitlements.updated" && r.data()["userId"] == user)
        .max_by_key(|r| r.data()["version"].as_i64())
        .map(|r| r.data().clone())
        .unwrap_or_else(|| panic!("no state of {user} received"))
}

/// The one `entitlements.updated` of `version` for `user`, of all received.
fn holdings_at(received: &[Received], user: &str, version: i64) -> Value {
    let found: Vec<&Received> = received
        .iter()
        .filter(|r| r.event_type() == "entitlements.updated" && r.data()["userId"] == user)
        .filter(|r| r.data()["version"] == version)
        .collect();
    assert_eq!(found.len(), 1, "version {version} of {user}: {received:#?}");
    found[0].data().clone()
}

#[tokio::test]
async fn given_a_payment_delivered_twenty_times_at_once_by_two_events_then_one_order_paid_and_one_state_are_sent() {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn_with(sending_to(&[receiver.url()])).await;
    let (order_id, session_id) = app.checkout("alice", "pro_lifetime").await;
    let completed = app.pay(&session_id, PaymentResult::Card).remove(0);
    let succeeded = event_for(&app, "checkout.session.async_payment_succeeded", &session_id);

    let replies = join_all((0..10).flat_map(|_| [app.deliver(&completed), app.deliver(&succeeded)])).await;
    assert!(
        replies.iter().all(|(status, _)| *status == StatusCode::OK),
        "{replies:?}"
    );

    let received = app.all_delivered(&receiver).await;
    assert_eq!(
        kinds(&received),
        [
            ("entitlements.updated".into(), "alice".into()),
            ("order.paid".into(), "alice".into())
        ]
    );
    let paid = of_type(&received, "order.paid")[0];
    assert_eq!(
        paid.data(),
        &json!({
            "orderId": order_id, "userId": "alice", "planId": "pro_lifetime", "status": "paid",
            "amount": 9900, "currency": "usd", "amountPaid": 9900,
        })
    );
    assert_eq!(
        holdings_at(&received, "alice", 1),
        json!({
            "userId": "alice", "version": 1, "credits": { "available": 100, "overdrawn": 0 },
            "entitlements": [{
                "key": "pro_lifetime", "status": "active", "active": true, "currentPeriodEnd": null,
                "cancelAtPeriodEnd": false,
            }],
        })
    );
    // Standard Webhooks' headers and body shape, exactly.
    let ids: Vec<String> = app.outbox_messages().await.into_iter().map(|m| m.webhook_id).collect();
    for message in &received {
        assert!(ids.contains(&message.id), "{} is not a message's id", message.id);
        assert!(message.id.starts_with("msg_"));
        let sent_at: i64 = message.timestamp.parse().unwrap();
        assert!((sent_at - unix_now()).abs() < 60, "{}", message.timestamp);
        assert!(message.signature.starts_with("v1,"));
        assert_eq!(message.content_type.as_deref(), Some("application/json"));
        assert_eq!(message.path, "/hooks");
        let keys: Vec<&String> = message.body.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 3, "{}", message.raw);
        assert!(
            message
                .raw
                .starts_with(&format!(r#"{{"type":"{}","timestamp":""#, message.event_type()))
        );
        let at = chrono::DateTime::parse_from_rfc3339(message.body["timestamp"].as_str().unwrap()).unwrap();
        assert!((Utc::now() - at.to_utc()).num_seconds().abs() < 60);
    }
    assert!(receiver.rejected().await.is_empty());
}

#[tokio::test]
async fn given_a_paid_order_when_refunded_in_full_twice_then_one_order_refunded_and_the_state_without_it_are_sent() {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn_with(sending_to(&[receiver.url()])).await;
    let purchase = app.fulfilled_purchase("alice", "pro_lifetime").await;
    app.all_delivered(&receiver).await;

    let refund = app.emulator.refund_charge(&app.charge_of(&purchase), None).unwrap();
    app.deliver_all(&[refund.clone(), refund]).await;

    let received = app.all_delivered(&receiver).await;
    assert_eq!(received.len(), 4, "{received:#?}");
    let refunded = of_type(&received, "order.refunded");
    assert_eq!(refunded.len(), 1);
    assert_eq!(refunded[0].data()["status"], "refunded");
    assert_eq!(refunded[0].data()["orderId"], json!(purchase.order_id));
    let after = holdings_at(&received, "alice", 2);
    assert_eq!(after["credits"], json!({ "available": 0, "overdrawn": 0 }));
    assert_eq!(after["entitlements"][0]["status"], "revoked");
    assert_eq!(after["entitlements"][0]["active"], false);
}

#[tokio::test]
async fn given_spent_credits_when_a_dispute_opens_and_is_won_then_disputed_then_paid_are_sent_with_each_state() {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn_with(sending_to(&[receiver.url()])).await;
    let purchase = app.fulfilled_purchase("bob", "credits_100").await;
    assert_eq!(app.usage("bob", 30, "job-1").await.0, StatusCode::OK);
    app.all_delivered(&receiver).await;

    let (dispute_id, opened) = app.emulator.open_dispute(&app.charge_of(&purchase)).unwrap();
    app.deliver_all(&[opened.clone(), opened]).await;
    let received = app.all_delivered(&receiver).await;
    let disputed = of_type(&received, "order.disputed");
    assert_eq!(disputed.len(), 1);
    assert_eq!(disputed[0].data()["status"], "disputed");
    // The 30 spent are owed while the dispute is open.
    assert_eq!(
        holdings_at(&received, "bob", 3)["credits"],
        json!({ "available": 0, "overdrawn": 30 })
    );

    let won = app.emulator.close_dispute(&dispute_id, true).unwrap();
    app.deliver_all(&[won.clone(), won]).await;
    let received = app.all_delivered(&receiver).await;
    let paid = of_type(&received, "order.paid");
    assert_eq!(paid.len(), 2, "paid, then paid again when the dispute was won");
    assert_eq!(
        holdings_at(&received, "bob", 4)["credits"],
        json!({ "available": 70, "overdrawn": 0 })
    );
    assert_eq!(received.len(), 7, "{:#?}", kinds(&received));
}

#[tokio::test]
async fn given_orders_canceled_or_paid_the_wrong_amount_then_canceled_and_under_review_are_sent_and_no_state() {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn_with(sending_to(&[receiver.url()])).await;
    let (canceled_order, session_id) = app.checkout("carol", "credits_100").await;
    let expired = app.emulator.expire_session(&session_id).unwrap();
    app.deliver_all(&[expired.clone(), expired]).await;

    let (review_order, session_id) = app.checkout("carol", "credits_100").await;
    let mut completed = app.pay(&session_id, PaymentResult::Card).remove(0);
    completed["data"]["object"]["amount_total"] = json!(1);
    assert_eq!(
        app.deliver_all(&[completed.clone(), completed]).await,
        ["amount_mismatch", "duplicate"]
    );

    let received = app.all_delivered(&receiver).await;
    assert_eq!(
        kinds(&received),
        [
            ("order.canceled".into(), "carol".into()),
            ("order.under_review".into(), "carol".into())
        ]
    );
    assert_eq!(
        of_type(&received, "order.canceled")[0].data()["orderId"],
        json!(canceled_order)
    );
    let review = of_type(&received, "order.under_review")[0].data();
    assert_eq!(
        (&review["orderId"], &review["status"]),
        (&json!(review_order), &json!("under_review"))
    );
}

#[tokio::test]
async fn given_a_subscription_when_paid_and_renewed_then_its_period_end_is_sent_each_time() {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn_with(sending_to(&[receiver.url()])).await;
    let purchase = app.fulfilled_purchase("dave", "pro_monthly").await;
    let received = app.all_delivered(&receiver).await;
    assert_eq!(of_type(&received, "order.paid").len(), 1);
    let first = latest_state(&received, "dave");
    let first_end = first["entitlements"][0]["currentPeriodEnd"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(first["entitlements"][0]["active"], true);

    let renewal = app.emulator.renew_subscription(&purchase.subscription_id()).unwrap();
    app.deliver_all(&renewal).await;
    app.deliver_all(&renewal).await;
    let received = app.all_delivered(&receiver).await;
    let states = of_type(&received, "entitlements.updated");
    let last = latest_state(&received, "dave");
    assert!(last["version"].as_i64() > first["version"].as_i64());
    let renewed_end = last["entitlements"][0]["currentPeriodEnd"].as_str().unwrap();
    assert!(renewed_end > first_end.as_str(), "{renewed_end} after {first_end}");
    assert_eq!(of_type(&received, "order.paid").len(), 1, "a renewal is no new order");
    // One state per change that committed (the renewal delivered twice changed it once), each
    // sent once; the receiver keeps the latest.
    let written = app
        .outbox_messages()
        .await
        .into_iter()
        .filter(|m| m.event_type == "entitlements.updated")
        .count();
    assert_eq!(states.len(), written);
    assert_eq!(last, app.holdings_as_sent("dave").await);
    assert_eq!(receiver.holdings().await["dave"], last);
}

#[tokio::test]
async fn given_the_server_api_when_credits_are_granted_spent_held_and_replayed_then_each_change_is_one_numbered_state()
{
    let receiver = Receiver::start().await;
    let app = TestApp::spawn_with(sending_to(&[receiver.url()])).await;
    // Each step waits for its message, so each message is built before the next change: its
    // version is the one its own change made.
    app.grant_credits("erin", 50).await;
    app.all_delivered(&receiver).await;
    assert_eq!(app.usage("erin", 10, "job-1").await.0, StatusCode::OK);
    app.all_delivered(&receiver).await;
    // A replay and a refusal change nothing, so they say nothing.
    assert!(app.usage("erin", 10, "job-1").await.1);
    assert_eq!(app.usage("erin", 1000, "job-2").await.0, StatusCode::PAYMENT_REQUIRED);
    let (status, _, held) = app.reserve("erin", 5, "job-3", None).await;
    assert_eq!(status, StatusCode::OK);
    app.all_delivered(&receiver).await;
    // Committing all of it spends what was already out of `available`: nothing an app sees moves.
    let (status, _) = app
        .commit_reservation(held["reservationId"].as_str().unwrap(), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, _, held) = app.reserve("erin", 7, "job-4", None).await;
    app.all_delivered(&receiver).await;
    app.release_reservation(held["reservationId"].as_str().unwrap()).await;

    let received = app.all_delivered(&receiver).await;
    let available: Vec<(i64, i64)> = of_type(&received, "entitlements.updated")
        .iter()
        .map(|r| {
            (
                r.data()["version"].as_i64().unwrap(),
                r.data()["credits"]["available"].as_i64().unwrap(),
            )
        })
        .collect();
    let mut sorted = available.clone();
    sorted.sort();
    assert_eq!(sorted, [(1, 50), (2, 40), (3, 35), (4, 28), (5, 35)]);
    assert_eq!(received.len(), 5, "{available:?}");
    assert_eq!(
        receiver.holdings().await["erin"],
        json!({ "userId": "erin", "version": 5, "credits": { "available": 35, "overdrawn": 0 }, "entitlements": [] })
    );
}

#[tokio::test]
async fn given_a_payment_whose_transaction_fails_after_the_order_is_marked_paid_then_nothing_is_sent_until_it_commits()
{
    let receiver = Receiver::start().await;
    let app = TestApp::spawn_with(sending_to(&[receiver.url()])).await;
    let (_, session_id) = app.checkout("frank", "credits_100").await;
    let completed = app.pay(&session_id, PaymentResult::Card).remove(0);
    // Fulfilment marks the order paid, then writes the purchase's ledger row: failing that row
    // rolls back a transaction that had already changed the order's status.
    sqlx::raw_sql(
        "create function fail_the_purchase() returns trigger language plpgsql as $$
         begin raise exception 'the test fails this transaction after the order was marked paid'; end $$;
         create trigger fail_the_purchase before insert on credit_ledger
             for each row when (new.kind = 'purchase') execute function fail_the_purchase();",
    )
    .execute(&app.db)
    .await
    .unwrap();

    for _ in 0..3 {
        let (status, body) = app.deliver(&completed).await;
        assert!(status.is_server_error(), "{status} {body}");
    }
    assert!(app.outbox_messages().await.is_empty());
    assert_eq!(app.delivery_counts().await, (0, 0, 0));
    // A later change is sent; nothing of frank's went before it (there was none to send).
    app.grant_credits("grace", 5).await;
    let received = app.all_delivered(&receiver).await;
    assert_eq!(kinds(&received), [("entitlements.updated".into(), "grace".into())]);

    sqlx::raw_sql("drop trigger fail_the_purchase on credit_ledger")
        .execute(&app.db)
        .await
        .unwrap();
    let (status, body) = app.deliver(&completed).await;
    assert_eq!((status, body["outcome"].as_str()), (StatusCode::OK, Some("fulfilled")));
    let received = app.all_delivered(&receiver).await;
    assert_eq!(
        kinds(&received),
        [
            ("entitlements.updated".into(), "frank".into()),
            ("entitlements.updated".into(), "grace".into()),
            ("order.paid".into(), "frank".into()),
        ]
    );
}

#[tokio::test]
async fn given_no_webhook_url_then_no_message_is_written() {
    let app = TestApp::spawn().await;
    app.fulfilled_purchase("alice", "pro_lifetime").await;
    app.grant_credits("alice", 5).await;
    assert!(app.outbox_messages().await.is_empty());
    assert_eq!(app.delivery_counts().await, (0, 0, 0));
}

#[tokio::test]
async fn the_receiver_refuses_what_its_secret_did_not_sign() {
    let receiver = Receiver::start().await;
    let body = r#"{"type":"order.paid","timestamp":"2026-12-04T10:00:00Z","data":{}}"#;
    let response = reqwest::Client::new()
        .post(receiver.url())
        .header("webhook-id", "msg_forged")
        .header("webhook-timestamp", unix_now().to_string())
        .header("webhook-signature", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(receiver.rejected().await.len(), 1);
    assert!(receiver.received().await.is_empty());
}

impl TestApp {
    /// What `entitlements.updated` would say for `user` now, from the user's own API.
    async fn holdings_as_sent(&self, user: &str) -> Value {
        let balance = self.balance(user).await;
        let version: i64 = sqlx::query_scalar("select version from user_versions where user_id = $1")
            .bind(user)
            .fetch_one(&self.db)
            .await
            .unwrap();
        json!({
            "userId": user,
            "version": version,
            "credits": { "available": balance["credits"]["available"], "overdrawn": balance["credits"]["overdrawn"] },
            "entitlements": balance["entitlements"],
        })
    }
}
