//! When the webhook is late or never comes: the return page asks Stripe (rarely, however many
//! browsers poll) and the reconciler reads Stripe's event list; both grant through the webhook's
//! own path, so the late webhook finds the work done.

use chrono::Utc;
use entitle::{
    config::{Config, Rate},
    reconcile::missed_events::reconcile_from_cursor,
    stripe_emulator::{InjectedFailure, PaymentResult},
};
use futures::{StreamExt, stream};
use serde_json::Value;
use uuid::Uuid;

use crate::{
    helpers::{TestApp, token_for, unix_now},
    lifecycle_helpers::event_id,
};

impl TestApp {
    /// Makes the order look as if its checkout started `seconds` ago.
    async fn age_order(&self, order_id: Uuid, seconds: i32) {
        sqlx::query("update orders set created_at = now() - make_interval(secs => $2) where id = $1")
            .bind(order_id)
            .bind(f64::from(seconds))
            .execute(&self.db)
            .await
            .unwrap();
    }

    async fn cursor(&self) -> i64 {
        sqlx::query_scalar("select created_up_to from reconciler_cursor")
            .fetch_one(&self.db)
            .await
            .unwrap()
    }

    /// (attempts, set aside) of the reconciler's failure record for the event.
    async fn failure_record(&self, event_id: &str) -> Option<(i32, bool)> {
        sqlx::query_as("select attempts, set_aside_at is not null from reconciler_failures where event_id = $1")
            .bind(event_id)
            .fetch_optional(&self.db)
            .await
            .unwrap()
    }

    fn session_retrievals(&self) -> usize {
        self.emulator
            .requests()
            .iter()
            .filter(|r| r.method == "GET" && r.path.starts_with("/v1/checkout/sessions/"))
            .count()
    }
}

#[tokio::test]
async fn given_a_completed_event_that_was_never_delivered_then_the_reconciler_applies_it_once() {
    let app = TestApp::spawn().await;
    let (order_id, session_id) = app.checkout("alice", "credits_100").await;
    let completed = app.pay(&session_id, PaymentResult::Card).remove(0);

    let since = Utc::now().timestamp() - 3600;
    let report = app.reconcile_since(since).await;
    assert_eq!(report.applied, 1, "{report:?}");
    assert_eq!(app.credits("alice").await, 100);
    assert_eq!(app.order_status("alice", order_id).await["status"], "paid");

    let again = app.reconcile_since(since).await;
    assert_eq!((again.listed, again.applied), (1, 0));
    let (_, body) = app.deliver(&completed).await;
    assert_eq!(body["outcome"], "duplicate");
    assert_eq!(app.credits("alice").await, 100);

    let listed = app
        .emulator
        .requests()
        .into_iter()
        .find(|r| r.path == "/v1/events")
        .unwrap();
    assert_eq!(listed.params.get("created[gte]"), Some(&since.to_string()));
}

#[tokio::test]
async fn given_missed_subscription_events_then_the_reconciler_leaves_the_renewed_state() {
    let app = TestApp::spawn().await;
    let (_, session_id) = app.checkout("alice", "pro_monthly").await;
    let events = app.pay(&session_id, PaymentResult::Card);
    let subscription_id = events[0]["data"]["object"]["subscription"].as_str().unwrap();
    app.emulator.renew_subscription(subscription_id).unwrap();

    let report = app.reconcile_since(Utc::now().timestamp() - 60).await;
    assert_eq!(report.applied, 5, "{report:?}");
    let entitlement = app.entitlement("alice").await;
    assert_eq!(entitlement["status"], "active");
    let stripe_end = app.emulator.subscription(subscription_id).unwrap()["items"]["data"][0]["current_period_end"]
        .as_i64()
        .unwrap();
    let shown: chrono::DateTime<Utc> = entitlement["currentPeriodEnd"].as_str().unwrap().parse().unwrap();
    assert_eq!(shown.timestamp(), stripe_end);
}

#[tokio::test]
async fn given_a_late_webhook_when_the_return_page_polls_then_stripe_is_asked_and_the_order_fulfilled_once() {
    let app = TestApp::spawn().await;
    let (order_id, session_id) = app.checkout("alice", "credits_100").await;
    let completed = app.pay(&session_id, PaymentResult::Card).remove(0);

    // Too young: the webhook normally lands in this time, so Stripe is not asked.
    assert_eq!(app.order_status("alice", order_id).await["status"], "pending");
    assert_eq!(app.session_retrievals(), 0);

    app.age_order(order_id, 10).await;
    assert_eq!(app.order_status("alice", order_id).await["status"], "paid");
    assert_eq!(app.credits("alice").await, 100);
    assert_eq!(app.session_retrievals(), 1);

    let (_, body) = app.deliver(&completed).await;
    assert_eq!(body["outcome"], "already_fulfilled");
    assert_eq!(app.credits("alice").await, 100);
    let ledger = app.ledger(order_id).await;
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].2, Some(format!("return_page_sync:{session_id}")));
}

#[tokio::test]
async fn given_a_pending_order_when_polled_1000_times_then_stripe_is_asked_at_most_a_handful_of_times() {
    let app = TestApp::spawn().await;
    let (order_id, _) = app.checkout("alice", "credits_100").await;
    app.age_order(order_id, 10).await;

    let statuses: Vec<String> = stream::iter(0..1000)
        .map(|_| async {
            app.order_status("alice", order_id).await["status"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .buffer_unordered(50)
        .collect()
        .await;
    assert!(statuses.iter().all(|s| s == "pending"));
    let calls = app.session_retrievals();
    assert!((1..=3).contains(&calls), "{calls} Stripe calls");
}

#[tokio::test]
async fn given_many_pending_orders_polled_at_once_then_a_global_cap_bounds_the_stripe_calls() {
    let app = TestApp::spawn().await;
    let mut orders = Vec::new();
    for _ in 0..20 {
        let (order_id, _) = app.checkout("alice", "credits_100").await;
        app.age_order(order_id, 10).await;
        orders.push(order_id);
    }
    let started = std::time::Instant::now();
    futures::future::join_all(orders.iter().map(|id| app.order_status("alice", *id))).await;
    // The bucket refills while the polls run, so the bound depends on how long they took.
    let Rate { per_second, burst } = app.config.return_sync_rate;
    let allowed = f64::from(burst) + started.elapsed().as_secs_f64() * per_second + 1.0;
    let calls = app.session_retrievals();
    assert!(
        calls >= 1 && calls as f64 <= allowed,
        "{calls} Stripe calls for 20 orders, {allowed} allowed"
    );
}

#[tokio::test]
async fn given_more_missed_events_than_one_page_then_the_reconciler_pages_through_them_all() {
    let app = TestApp::spawn().await;
    // Three events each (completed, subscription created, invoice paid): 105, over Stripe's page of 100.
    for user in (0..35).map(|i| format!("user{i}")) {
        let (_, session_id) = app.checkout(&user, "pro_monthly").await;
        app.pay(&session_id, PaymentResult::Card);
    }
    let report = app.reconcile_since(Utc::now().timestamp() - 60).await;
    assert_eq!((report.listed, report.applied), (105, 105));
    assert_eq!(app.entitlement("user0").await["status"], "active");
    assert_eq!(app.entitlement("user34").await["status"], "active");
    let pages = app
        .emulator
        .requests()
        .iter()
        .filter(|r| r.path == "/v1/events")
        .count();
    assert_eq!(pages, 2);
}

#[tokio::test]
async fn given_a_stored_cursor_then_each_run_starts_from_the_newest_event_seen_less_an_overlap() {
    let app = TestApp::spawn().await;
    let (_, session_id) = app.checkout("alice", "credits_100").await;
    let created = app.pay(&session_id, PaymentResult::Card)[0]["created"]
        .as_i64()
        .unwrap();

    let first = reconcile_from_cursor(&app.db, &app.stripe, app.config.reconciler_max_attempts)
        .await
        .unwrap();
    assert_eq!(first.applied, 1);
    let cursor: i64 = sqlx::query_scalar("select created_up_to from reconciler_cursor")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(cursor, created);

    let second = reconcile_from_cursor(&app.db, &app.stripe, app.config.reconciler_max_attempts)
        .await
        .unwrap();
    assert_eq!(
        (second.listed, second.applied),
        (1, 0),
        "the overlap re-reads, and changes nothing"
    );
    let gte: Vec<String> = app
        .emulator
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v1/events")
        .filter_map(|r| r.params.get("created[gte]").cloned())
        .collect();
    assert_eq!(gte[1], (created - 300).to_string());
    assert!(
        gte[0].parse::<i64>().unwrap() <= created - 72 * 3600 + 5,
        "first run looks back 72 h"
    );
}

#[tokio::test]
async fn given_missed_events_from_different_seconds_then_the_reconciler_applies_them_oldest_first() {
    let app = TestApp::spawn().await;
    let purchase = app.paid_purchase("alice", "pro_monthly").await;
    let subscription_id = purchase.subscription_id();
    let renewal = app.emulator.renew_subscription(&subscription_id).unwrap();
    let cancel = app
        .emulator
        .update_subscription(&subscription_id, "active", true)
        .unwrap();
    // completed, subscription created, first invoice paid, renewal invoice paid, renewal update,
    // cancellation scheduled: given seconds apart, the first invoice in the subscription's second,
    // and the cancellation before the renewal, so Stripe's list is not the order they were recorded.
    let recorded: Vec<&Value> = purchase.events.iter().chain(&renewal).chain([&cancel]).collect();
    let base = unix_now() - 600;
    for (event, offset) in recorded.iter().zip([0, 10, 10, 30, 40, 20]) {
        assert!(app.emulator.set_event_created(&event_id(event), base + offset));
    }

    let report = app.reconcile_since(base).await;
    assert_eq!(report.applied, 6, "{report:?}");

    let applied: Vec<String> =
        sqlx::query_scalar("select event_id from processed_webhook_events order by received_at, event_id")
            .fetch_all(&app.db)
            .await
            .unwrap();
    let oldest_first: Vec<String> = [0, 1, 2, 5, 3, 4].iter().map(|&i| event_id(recorded[i])).collect();
    assert_eq!(applied, oldest_first);
    assert_eq!(app.entitlement("alice").await["cancelAtPeriodEnd"], true);
}

#[tokio::test]
async fn given_an_event_that_keeps_failing_then_later_events_still_apply_and_after_max_attempts_it_is_set_aside() {
    let app = TestApp::spawn().await;
    let max_attempts = 2;
    // A subscription update the reconciler cannot apply: Stripe fails every retrieval of it.
    let subscription = app.fulfilled_purchase("bob", "pro_monthly").await;
    let update = app
        .emulator
        .update_subscription(&subscription.subscription_id(), "active", true)
        .unwrap();
    let failing_created = unix_now() - 120;
    app.emulator.set_event_created(&event_id(&update), failing_created);
    app.emulator
        .fail_requests("/v1/subscriptions/", Some(InjectedFailure::Stripe(500)));
    // And a later one-time purchase whose webhook was lost too.
    let (_, session_id) = app.checkout("alice", "credits_100").await;
    app.pay(&session_id, PaymentResult::Card);

    let first = reconcile_from_cursor(&app.db, &app.stripe, max_attempts).await.unwrap();
    assert_eq!((first.applied, first.failed, first.set_aside), (1, 1, 0), "{first:?}");
    assert_eq!(
        app.credits("alice").await,
        100,
        "the later event applies in the same run"
    );
    assert_eq!(app.failure_record(&event_id(&update)).await, Some((1, false)));
    assert_eq!(app.cursor().await, failing_created, "the cursor waits for the retry");
    let last_error: String = sqlx::query_scalar("select last_error from reconciler_failures")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert!(last_error.contains("HTTP 500"), "{last_error}");

    let second = reconcile_from_cursor(&app.db, &app.stripe, max_attempts).await.unwrap();
    assert_eq!(
        (second.applied, second.failed, second.set_aside),
        (0, 1, 1),
        "{second:?}"
    );
    assert_eq!(app.failure_record(&event_id(&update)).await, Some((2, true)));
    assert!(
        app.cursor().await > failing_created,
        "set aside, it no longer holds the cursor"
    );

    let third = reconcile_from_cursor(&app.db, &app.stripe, max_attempts).await.unwrap();
    assert_eq!((third.failed, third.skipped_set_aside), (0, 1), "{third:?}");
    assert_eq!(
        app.failure_record(&event_id(&update)).await,
        Some((2, true)),
        "not tried again"
    );

    // Stripe redelivers it once Stripe answers again: the failure is resolved.
    app.emulator.fail_requests("/v1/subscriptions/", None);
    let (_, body) = app.deliver(&update).await;
    assert_eq!(body["outcome"], "subscription_synced");
    reconcile_from_cursor(&app.db, &app.stripe, max_attempts).await.unwrap();
    assert_eq!(app.failure_record(&event_id(&update)).await, None);
}

#[tokio::test]
async fn given_an_instance_out_of_stripe_calls_when_it_is_polled_then_the_orders_sync_slot_is_left_for_another() {
    let app = TestApp::spawn().await;
    let (order_id, session_id) = app.checkout("alice", "credits_100").await;
    app.pay(&session_id, PaymentResult::Card);
    app.age_order(order_id, 10).await;
    // A second instance on the same database whose return-page bucket is empty.
    let spent = app
        .start_beside(Config {
            return_sync_rate: Rate {
                per_second: 1.0,
                burst: 0,
            },
            ..app.config.clone()
        })
        .await;

    let polled_there: serde_json::Value = app
        .http
        .post(format!("{spent}/order-status"))
        .bearer_auth(token_for("alice"))
        .json(&serde_json::json!({ "orderId": order_id }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(polled_there["status"], "pending");
    assert_eq!(app.session_retrievals(), 0, "no token, no call");

    // The slot was not used up by the poll that could not call: the next one asks Stripe at once.
    assert_eq!(app.order_status("alice", order_id).await["status"], "paid");
    assert_eq!(app.session_retrievals(), 1);
    assert_eq!(app.credits("alice").await, 100);
}
