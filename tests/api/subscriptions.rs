//! Subscriptions over time: renewals extend, failures hold on through the grace, cancellations end,
//! and the order events arrive in never changes the state they leave.

use chrono::{DateTime, Duration, Utc};

use crate::{helpers::TestApp, lifecycle_helpers::event_id};

fn period_end(entitlement: &serde_json::Value) -> DateTime<Utc> {
    entitlement["currentPeriodEnd"].as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn given_an_active_subscription_when_it_renews_then_the_period_end_moves_a_period_later() {
    let app = TestApp::spawn().await;
    let purchase = app.fulfilled_purchase("alice", "pro_monthly").await;
    let first = app.entitlement("alice").await;
    assert_eq!(first["status"], "active");
    assert_eq!(first["active"], true);
    let first_end = period_end(&first);
    assert!(first_end > Utc::now() + Duration::days(29), "{first}");

    let renewal = app.emulator.renew_subscription(&purchase.subscription_id()).unwrap();
    let outcomes = app.deliver_all(&renewal).await;
    assert_eq!(outcomes, ["subscription_synced", "subscription_synced"]);

    let renewed = app.entitlement("alice").await;
    assert_eq!(renewed["status"], "active");
    assert_eq!(period_end(&renewed), first_end + Duration::days(30));
    let history = app.entitlement_history(purchase.order_id).await;
    assert!(
        history.contains(&("period_extended".into(), Some(event_id(&renewal[0])))),
        "{history:?}"
    );
}

#[tokio::test]
async fn given_a_failed_renewal_then_past_due_still_grants_and_cancellation_revokes() {
    let app = TestApp::spawn().await;
    let purchase = app.fulfilled_purchase("alice", "pro_monthly").await;
    let subscription_id = purchase.subscription_id();

    let failure = app.emulator.fail_invoice(&subscription_id).unwrap();
    assert_eq!(failure[0]["type"], "invoice.payment_failed");
    app.deliver_all(&failure).await;
    let past_due = app.entitlement("alice").await;
    assert_eq!(past_due["status"], "past_due");
    assert_eq!(past_due["active"], true, "past_due keeps access through the grace");

    let deleted = app
        .emulator
        .update_subscription(&subscription_id, "canceled", false)
        .unwrap();
    assert_eq!(deleted["type"], "customer.subscription.deleted");
    app.deliver_all(std::slice::from_ref(&deleted)).await;
    let canceled = app.entitlement("alice").await;
    assert_eq!(canceled["status"], "revoked");
    assert_eq!(canceled["active"], false);

    let history = app.entitlement_history(purchase.order_id).await;
    assert!(
        history.contains(&("past_due".into(), Some(event_id(&failure[0])))),
        "{history:?}"
    );
    assert!(
        history.contains(&("revoked".into(), Some(event_id(&deleted)))),
        "{history:?}"
    );
}

#[tokio::test]
async fn given_unpaid_or_paused_subscriptions_then_access_is_revoked() {
    for status in ["unpaid", "paused", "incomplete_expired"] {
        let app = TestApp::spawn().await;
        let purchase = app.fulfilled_purchase("alice", "pro_monthly").await;
        let update = app
            .emulator
            .update_subscription(&purchase.subscription_id(), status, false)
            .unwrap();
        app.deliver_all(&[update]).await;
        assert_eq!(app.entitlement("alice").await["status"], "revoked", "{status}");
    }
}

#[tokio::test]
async fn given_subscription_updated_delivered_before_checkout_completed_then_the_final_state_is_stripes() {
    let app = TestApp::spawn().await;
    let purchase = app.paid_purchase("alice", "pro_monthly").await;
    let update = app
        .emulator
        .update_subscription(&purchase.subscription_id(), "active", true)
        .unwrap();

    let early = app.deliver_all(std::slice::from_ref(&update)).await;
    assert_eq!(early, ["subscription_stored"]);
    assert_eq!(app.holdings("alice").await["entitlements"], serde_json::json!([]));

    // Then the session's own events, the `created` snapshot (stale now) among them.
    app.deliver_all(&purchase.events).await;
    let entitlement = app.entitlement("alice").await;
    assert_eq!(entitlement["status"], "active");
    assert_eq!(entitlement["cancelAtPeriodEnd"], true);
    assert!(period_end(&entitlement) > Utc::now() + Duration::days(29));
}

#[tokio::test]
async fn given_two_updates_delivered_newest_first_then_the_newest_state_stays() {
    let app = TestApp::spawn().await;
    let purchase = app.fulfilled_purchase("alice", "pro_monthly").await;
    let subscription_id = purchase.subscription_id();
    let older = app
        .emulator
        .update_subscription(&subscription_id, "past_due", false)
        .unwrap();
    let newer = app
        .emulator
        .update_subscription(&subscription_id, "active", true)
        .unwrap();

    app.deliver_all(&[newer, older]).await;
    let entitlement = app.entitlement("alice").await;
    assert_eq!(entitlement["status"], "active");
    assert_eq!(entitlement["cancelAtPeriodEnd"], true);
}

#[tokio::test]
async fn given_periods_that_ended_then_access_lapses_after_the_grace_or_at_once_when_canceling() {
    let app = TestApp::spawn().await;
    app.fulfilled_purchase("alice", "pro_monthly").await;

    let set_period = |ended_hours_ago: i64, cancel_at_period_end: bool| {
        sqlx::query(
            "update entitlements set current_period_end = now() - make_interval(hours => $1), cancel_at_period_end = $2",
        )
        .bind(ended_hours_ago as i32)
        .bind(cancel_at_period_end)
        .execute(&app.db)
    };
    set_period(1, false).await.unwrap();
    assert_eq!(
        app.entitlement("alice").await["active"],
        true,
        "within the one-day grace"
    );
    set_period(25, false).await.unwrap();
    let lapsed = app.entitlement("alice").await;
    assert_eq!(
        (lapsed["status"].as_str(), lapsed["active"].as_bool()),
        (Some("expired"), Some(false))
    );
    set_period(1, true).await.unwrap();
    assert_eq!(
        app.entitlement("alice").await["active"],
        false,
        "a canceling subscription ends at its period end"
    );
}

#[tokio::test]
async fn given_a_cancellation_scheduled_then_withdrawn_then_each_is_a_history_row_naming_its_event() {
    let app = TestApp::spawn().await;
    let purchase = app.fulfilled_purchase("alice", "pro_monthly").await;
    let subscription_id = purchase.subscription_id();
    let scheduled = app
        .emulator
        .update_subscription(&subscription_id, "active", true)
        .unwrap();
    app.deliver_all(std::slice::from_ref(&scheduled)).await;
    let withdrawn = app
        .emulator
        .update_subscription(&subscription_id, "active", false)
        .unwrap();
    app.deliver_all(std::slice::from_ref(&withdrawn)).await;

    let history = app.entitlement_history(purchase.order_id).await;
    assert!(
        history.contains(&("cancel_scheduled".into(), Some(event_id(&scheduled)))),
        "{history:?}"
    );
    assert!(
        history.contains(&("cancel_withdrawn".into(), Some(event_id(&withdrawn)))),
        "{history:?}"
    );
    assert_eq!(app.entitlement("alice").await["cancelAtPeriodEnd"], false);
}

#[tokio::test]
async fn given_an_event_for_a_subscription_stripe_does_not_know_then_it_is_recorded_not_retried() {
    let app = TestApp::spawn().await;
    let event = serde_json::json!({
        "id": "evt_test_unknown_subscription",
        "object": "event",
        "livemode": false,
        "type": "customer.subscription.updated",
        "created": crate::helpers::unix_now(),
        "data": { "object": { "id": "sub_unknown", "object": "subscription", "status": "active" } }
    });
    let (status, body) = app.deliver(&event).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    assert_eq!(body["outcome"], "no_matching_order");
}

#[tokio::test]
async fn given_a_subscription_on_file_that_stripe_does_not_know_then_the_event_is_kept_for_a_retry() {
    let app = TestApp::spawn().await;
    // As when the service's key points at another Stripe account than the one that sold it.
    sqlx::query(
        "insert into subscriptions (stripe_subscription_id, user_id, status) values ('sub_on_file', 'alice', 'active')",
    )
    .execute(&app.db)
    .await
    .unwrap();
    let event = serde_json::json!({
        "id": "evt_test_known_subscription",
        "object": "event",
        "livemode": false,
        "type": "customer.subscription.updated",
        "created": crate::helpers::unix_now(),
        "data": { "object": { "id": "sub_on_file", "object": "subscription", "status": "canceled" } }
    });
    let (status, body) = app.deliver(&event).await;
    assert!(status.is_server_error(), "{status}: {body}");
    assert_eq!(
        app.processed_event_count().await,
        0,
        "the event must stay unprocessed so Stripe retries it"
    );
}

#[tokio::test]
async fn given_a_subscriptions_events_delivered_all_at_once_repeatedly_then_no_delivery_fails_and_stripes_state_wins() {
    let app = TestApp::spawn().await;
    let purchase = app.paid_purchase("alice", "pro_monthly").await;
    let subscription_id = purchase.subscription_id();
    let mut events = purchase.events.clone();
    events.extend(app.emulator.renew_subscription(&subscription_id).unwrap());
    events.push(
        app.emulator
            .update_subscription(&subscription_id, "active", true)
            .unwrap(),
    );

    // Checkout completion and subscription events race for the same locks, 5 copies of each.
    let deliveries = events.iter().cycle().take(events.len() * 5);
    let replies = futures::future::join_all(deliveries.map(|event| app.deliver(event))).await;
    assert!(
        replies.iter().all(|(status, _)| *status == reqwest::StatusCode::OK),
        "{replies:?}"
    );

    let entitlement = app.entitlement("alice").await;
    assert_eq!(entitlement["status"], "active");
    assert_eq!(entitlement["cancelAtPeriodEnd"], true);
    let stripe_end = app.emulator.subscription(&subscription_id).unwrap()["items"]["data"][0]["current_period_end"]
        .as_i64()
        .unwrap();
    assert_eq!(period_end(&entitlement).timestamp(), stripe_end);

    let unattributed: i64 = sqlx::query_scalar(
        "select (select count(*) from entitlement_history where stripe_event_id is null)
              + (select count(*) from credit_ledger where stripe_event_id is null)",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(unattributed, 0, "every change names its event");
}

#[tokio::test]
async fn given_a_newer_answer_from_stripe_on_file_then_an_event_fetched_earlier_does_not_overwrite_it() {
    let app = TestApp::spawn().await;
    let purchase = app.fulfilled_purchase("alice", "pro_monthly").await;
    let subscription_id = purchase.subscription_id();
    // As if another event's fetch, answered after this one's, had stored "canceled" first.
    sqlx::query(
        "update subscriptions set status = 'canceled', stripe_answered_at = now() + interval '1 hour'
         where stripe_subscription_id = $1",
    )
    .bind(&subscription_id)
    .execute(&app.db)
    .await
    .unwrap();

    let update = app
        .emulator
        .update_subscription(&subscription_id, "active", true)
        .unwrap();
    app.deliver_all(&[update]).await;

    let (status, cancel_at_period_end): (String, bool) =
        sqlx::query_as("select status, cancel_at_period_end from subscriptions where stripe_subscription_id = $1")
            .bind(&subscription_id)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!((status.as_str(), cancel_at_period_end), ("canceled", false));
    assert_eq!(app.entitlement("alice").await["status"], "revoked");
}

/// Stripe is asked before the event's transaction opens, so a slow Stripe holds no pooled
/// connection: more subscription events than the pool has connections, each waiting seconds for
/// Stripe, leave the database free for everyone else meanwhile.
#[tokio::test]
async fn given_stripe_answers_slowly_when_many_subscription_events_arrive_then_other_requests_are_answered_meanwhile() {
    let app = TestApp::spawn().await;
    let purchase = app.fulfilled_purchase("alice", "pro_monthly").await;
    let subscription_id = purchase.subscription_id();
    let events: Vec<_> = (0..16)
        .map(|i| {
            app.emulator
                .update_subscription(&subscription_id, "active", i % 2 == 0)
                .unwrap()
        })
        .collect();
    assert!(events.len() > app.config.database_max_connections as usize);
    app.emulator.set_api_latency(Some(std::time::Duration::from_secs(5)));

    let started = std::time::Instant::now();
    let deliveries = futures::future::join_all(events.iter().map(|event| async {
        let answer = app.deliver(event).await;
        (answer, started.elapsed())
    }));
    let status_poll = async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let request = serde_json::json!({ "orderId": purchase.order_id });
        let answer = app
            .post_json("/order-status", Some(&crate::helpers::token_for("alice")), &request)
            .await;
        (answer, started.elapsed())
    };
    let (delivered, ((status, body), polled_after)) = tokio::join!(deliveries, status_poll);

    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    assert!(
        delivered
            .iter()
            .all(|((status, _), _)| *status == reqwest::StatusCode::OK),
        "{delivered:?}"
    );
    let first_delivery_answered = delivered.iter().map(|(_, at)| *at).min().unwrap();
    assert!(
        polled_after < first_delivery_answered,
        "the status poll waited for the webhooks: answered after {polled_after:?}, the first webhook after {first_delivery_answered:?}"
    );
    // The last update Stripe holds is the one stored, whichever answer was stored last.
    let entitlement = app.entitlement("alice").await;
    assert_eq!(entitlement["cancelAtPeriodEnd"], false);
}

#[tokio::test]
async fn given_stripe_refuses_the_renewal_invoice_for_good_then_invoice_paid_is_applied_without_its_payment_link() {
    use entitle::stripe_emulator::InjectedFailure;

    for refusal in [InjectedFailure::NotJson(404), InjectedFailure::Stripe(400)] {
        let app = TestApp::spawn().await;
        let purchase = app.fulfilled_purchase("alice", "pro_monthly").await;
        let first_end = period_end(&app.entitlement("alice").await);
        let renewal = app.emulator.renew_subscription(&purchase.subscription_id()).unwrap();
        app.emulator.fail_requests("/v1/invoices/", Some(refusal));

        let (status, body) = app.deliver(&renewal[0]).await;
        assert_eq!(status, reqwest::StatusCode::OK, "{refusal:?}: {body}");
        assert_eq!(body["outcome"], "subscription_synced", "{refusal:?}");
        assert_eq!(
            period_end(&app.entitlement("alice").await),
            first_end + Duration::days(30),
            "{refusal:?}: the subscription's state is stored"
        );
        let invoice_id = renewal[0]["data"]["object"]["id"].as_str().unwrap();
        let linked: i64 = sqlx::query_scalar("select count(*) from subscription_payments where stripe_invoice_id = $1")
            .bind(invoice_id)
            .fetch_one(&app.db)
            .await
            .unwrap();
        assert_eq!(linked, 0, "{refusal:?}: only the payment link is missing");
    }
}

#[tokio::test]
async fn given_stripe_fails_the_renewal_invoice_for_now_then_invoice_paid_is_answered_5xx_and_the_retry_links_it() {
    use entitle::stripe_emulator::InjectedFailure;

    for failure in [InjectedFailure::Stripe(500), InjectedFailure::Stripe(429)] {
        let app = TestApp::spawn().await;
        let purchase = app.fulfilled_purchase("alice", "pro_monthly").await;
        let renewal = app.emulator.renew_subscription(&purchase.subscription_id()).unwrap();
        app.emulator.fail_requests("/v1/invoices/", Some(failure));

        let (status, body) = app.deliver(&renewal[0]).await;
        assert!(status.is_server_error(), "{failure:?}: {status} {body}");

        app.emulator.fail_requests("/v1/invoices/", None);
        let (status, body) = app.deliver(&renewal[0]).await;
        assert_eq!(status, reqwest::StatusCode::OK, "{failure:?}: {body}");
        assert_eq!(body["outcome"], "subscription_synced");
        let invoice_id = renewal[0]["data"]["object"]["id"].as_str().unwrap();
        let linked: i64 = sqlx::query_scalar("select count(*) from subscription_payments where stripe_invoice_id = $1")
            .bind(invoice_id)
            .fetch_one(&app.db)
            .await
            .unwrap();
        assert_eq!(linked, 1, "{failure:?}");
    }
}
