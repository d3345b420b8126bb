//! The hot paths' wake-ups, sent after their commit instead of inside it (`entitle::wakeups`): a
//! transaction begun that way notifies nobody itself, and yet this instance's and every other
//! instance's long-polls and outbox senders hear of what it changed. The senders here sweep only
//! every 10 minutes, so a message that arrives within the receiver's patience was woken.

use std::time::Duration;

use entitle::{
    db,
    order_events::ORDER_STATUS_CHANNEL,
    outbox::wake::OUTBOX_CHANNEL,
    store::{
        credit_ledger::{self, NewSpend, SpendKind, SpendOutcome},
        orders::{self, PaidAmounts, StripeIds},
    },
};
use reqwest::StatusCode;
use serde_json::Value;
use sqlx::postgres::PgListener;
use uuid::Uuid;

use crate::{
    app_webhook_helpers::{Received, Receiver},
    helpers::{Options, TestApp, fast_outbox},
};

fn sweeping_rarely(urls: &[String], concurrency: u32) -> Options {
    Options {
        app_webhook_urls: urls.to_vec(),
        outbox: entitle::config::OutboxSettings {
            concurrency,
            sweep: Duration::from_secs(600),
            ..fast_outbox()
        },
        ..Options::default()
    }
}

fn count(received: &[Received], event_type: &str, user: &str) -> usize {
    received
        .iter()
        .filter(|r| r.event_type() == event_type && r.data()["userId"] == user)
        .count()
}

async fn listening(app: &TestApp) -> PgListener {
    let mut listener = PgListener::connect_with(&app.db).await.unwrap();
    listener
        .listen_all([ORDER_STATUS_CHANNEL, OUTBOX_CHANNEL])
        .await
        .unwrap();
    listener
}

/// Every notification that arrives until none has for `quiet`, as (channel, payload).
async fn heard(listener: &mut PgListener, quiet: Duration) -> Vec<(String, String)> {
    let mut heard = Vec::new();
    while let Ok(notification) = tokio::time::timeout(quiet, listener.recv()).await {
        let notification = notification.unwrap();
        heard.push((notification.channel().to_owned(), notification.payload().to_owned()));
    }
    heard
}

async fn mark_paid(tx: &mut sqlx::PgConnection, order_id: Uuid) {
    let ids = StripeIds {
        session_id: "cs_test_direct",
        payment_intent: None,
        subscription: None,
        customer: None,
        buyer_email: None,
    };
    let amounts = PaidAmounts {
        paid: 2000,
        discount: 0,
        tax: 0,
    };
    orders::mark_paid(tx, order_id, &ids, &amounts).await.unwrap();
}

#[tokio::test]
async fn given_a_transaction_begun_waking_after_commit_then_its_status_change_and_outbox_writes_notify_nobody() {
    let receiver = Receiver::start().await;
    // No senders here: nothing but the transactions below may notify.
    let app = TestApp::spawn_with(sweeping_rarely(&[receiver.url()], 0)).await;
    let (quiet_order, _) = app.checkout("alice", "credits_100").await;
    let (loud_order, _) = app.checkout("bob", "credits_100").await;
    let mut listener = listening(&app).await;

    let mut tx = db::begin_waking_after_commit(&app.db).await.unwrap();
    mark_paid(&mut tx, quiet_order).await;
    tx.commit().await.unwrap();
    let spend = NewSpend {
        user_id: "carol",
        kind: SpendKind::Usage,
        idempotency_key: "wake-1",
        request_hash: "h",
        credits: 5,
        expires_at: None,
        description: None,
        metadata: None,
    };
    app.grant_credits("carol", 10).await;
    let after_grant = heard(&mut listener, Duration::from_millis(500)).await;
    assert!(
        after_grant.iter().all(|(channel, _)| channel == OUTBOX_CHANNEL) && !after_grant.is_empty(),
        "the manual grant (an ordinary transaction) wakes the senders itself: {after_grant:?}"
    );
    let spent = credit_ledger::spend(&app.db, &spend).await.unwrap();
    assert_eq!(spent.outcome, SpendOutcome::Spent);
    let silent = heard(&mut listener, Duration::from_secs(1)).await;
    assert_eq!(
        silent,
        [],
        "the paid order and the debit were written, and nobody was told"
    );
    let mut written: Vec<(String, String)> = app
        .outbox_messages()
        .await
        .into_iter()
        .map(|m| (m.event_type, m.user_id))
        .collect();
    written.sort();
    let of = |event_type: &str, user: &str| (event_type.to_owned(), user.to_owned());
    assert_eq!(
        written,
        [
            of("entitlements.updated", "carol"),
            of("entitlements.updated", "carol"),
            of("order.paid", "alice")
        ]
    );

    // The same change in an ordinary transaction notifies at its commit, as it always did.
    let mut tx = db::begin(&app.db).await.unwrap();
    mark_paid(&mut tx, loud_order).await;
    tx.commit().await.unwrap();
    let mut loud = heard(&mut listener, Duration::from_millis(500)).await;
    loud.sort();
    assert_eq!(
        loud,
        [
            (ORDER_STATUS_CHANNEL.to_owned(), loud_order.to_string()),
            (OUTBOX_CHANNEL.to_owned(), String::new())
        ]
    );
}

#[tokio::test]
async fn given_senders_that_rarely_sweep_when_a_payment_and_a_debit_commit_then_the_app_hears_of_each_at_once() {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn_with(sweeping_rarely(&[receiver.url()], 8)).await;
    let (_, session_id) = app.checkout("alice", "credits_100").await;
    let event = app
        .pay(&session_id, entitle::stripe_emulator::PaymentResult::Card)
        .remove(0);
    assert_eq!(app.deliver(&event).await.0, StatusCode::OK);
    receiver
        .wait_for("the payment's order.paid and state", |r| {
            count(r, "order.paid", "alice") == 1 && count(r, "entitlements.updated", "alice") == 1
        })
        .await;

    let (status, _, body) = app.usage("alice", 30, "wake-usage").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let received = receiver
        .wait_for("the debit's state", |r| count(r, "entitlements.updated", "alice") == 2)
        .await;
    let latest = received
        .iter()
        .filter(|r| r.event_type() == "entitlements.updated")
        .max_by_key(|r| r.data()["version"].as_i64())
        .unwrap();
    assert_eq!(latest.data()["credits"]["available"], Value::from(70));
}

#[tokio::test]
async fn given_an_instance_without_senders_when_it_fulfils_and_debits_then_another_instances_senders_are_woken() {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn_with(sweeping_rarely(&[receiver.url()], 0)).await;
    let mut config = app.config.clone();
    config.outbox.concurrency = 8;
    let _sender = app.start_beside(config).await;
    // Its first sweep, at start, is over before anything is written.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let (_, session_id) = app.checkout("dave", "credits_100").await;
    let event = app
        .pay(&session_id, entitle::stripe_emulator::PaymentResult::Card)
        .remove(0);
    assert_eq!(app.deliver(&event).await.0, StatusCode::OK);
    receiver
        .wait_for("the payment's messages, sent by the other instance", |r| {
            count(r, "order.paid", "dave") == 1 && count(r, "entitlements.updated", "dave") == 1
        })
        .await;
    let (status, _, body) = app.usage("dave", 1, "wake-other").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    receiver
        .wait_for("the debit's state, sent by the other instance", |r| {
            count(r, "entitlements.updated", "dave") == 2
        })
        .await;
}
