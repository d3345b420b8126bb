//! The drift check (`entitle verify`): Stripe's objects changed and their events never reached us
//! (nothing here delivers them). The check must find each disagreement, `--fix` must apply
//! Stripe's state through the event path exactly once, and records that agree must pass.

use std::time::Duration;

use chrono::Utc;
use entitle::{
    reconcile::drift::{DriftKind, VerifyReport, verify},
    stripe_emulator::{InjectedFailure, PaymentResult},
};
use reqwest::StatusCode;

use crate::helpers::{Options, TestApp};

async fn check(app: &TestApp, fix: bool) -> VerifyReport {
    verify(&app.db, &app.stripe, Utc::now() - chrono::Duration::days(30), fix)
        .await
        .expect("the drift check runs")
}

fn kinds(report: &VerifyReport) -> Vec<DriftKind> {
    let mut kinds: Vec<DriftKind> = report.found.iter().map(|f| f.kind).collect();
    kinds.dedup();
    kinds
}

/// Webhooks and the return page own checkouts of the last minutes; the check looks at older ones.
async fn age_order(app: &TestApp, order_id: uuid::Uuid, by: &str) {
    sqlx::query(&format!(
        "update orders set created_at = created_at - interval '{by}', paid_at = paid_at - interval '{by}' where id = $1"
    ))
    .bind(order_id)
    .execute(&app.db)
    .await
    .unwrap();
}

#[tokio::test]
async fn given_records_that_agree_with_stripe_then_verify_finds_nothing_and_exits_0() {
    let app = TestApp::spawn().await;
    let credits = app.fulfilled_purchase("alice", "credits_100").await;
    let charge = app.charge_of(&credits);
    let refund = app.emulator.refund_charge(&charge, Some(100)).unwrap();
    app.deliver_all(&[refund]).await;
    let subscription = app.fulfilled_purchase("bob", "team_monthly").await;
    let renewal = app
        .emulator
        .renew_subscription(&subscription.subscription_id())
        .unwrap();
    app.deliver_all(&renewal).await;
    let disputed = app.fulfilled_purchase("carol", "credits_100").await;
    let (_, opened) = app.emulator.open_dispute(&app.charge_of(&disputed)).unwrap();
    app.deliver_all(&[opened]).await;
    // An open checkout, older than the grace: pending is right.
    let (open_order, _) = app.checkout("dave", "credits_100").await;
    age_order(&app, open_order, "1 hour").await;

    let report = check(&app, false).await;
    assert!(report.found.is_empty(), "{:?}", report.found);
    assert_eq!((report.orders_checked, report.subscriptions_checked), (4, 1));

    let (ok, stdout, stderr) = app.run_entitle(&["verify"]).await;
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("no drift"), "{stdout}");
}

#[tokio::test]
async fn given_a_refund_whose_events_were_lost_then_verify_exits_1_and_fix_claws_back_once() {
    let app = TestApp::spawn().await;
    let purchase = app.fulfilled_purchase("alice", "credits_100").await;
    app.emulator
        .refund_charge(&app.charge_of(&purchase), Some(250))
        .unwrap();

    let (ok, stdout, _) = app.run_entitle(&["verify", "--since", "7d"]).await;
    assert!(!ok, "drift must fail the command: {stdout}");
    assert!(stdout.contains("refunded"), "{stdout}");
    assert!(stdout.contains(&purchase.order_id.to_string()), "{stdout}");
    assert!(stdout.contains("ours 0 refunded; Stripe 250 refunded"), "{stdout}");
    assert_eq!(app.credits("alice").await, 100, "verify alone changes nothing");

    let (ok, stdout, stderr) = app.run_entitle(&["verify", "--fix"]).await;
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("no drift left"), "{stdout}");
    assert_eq!(app.credits("alice").await, 50);
    assert_eq!(
        app.order_status("alice", purchase.order_id).await["amountRefunded"],
        250
    );
    let rows = app.ledger(purchase.order_id).await;

    // Fixing again finds nothing to apply and writes nothing.
    let again = check(&app, true).await;
    assert!(again.found.is_empty(), "{:?}", again.found);
    assert_eq!(app.ledger(purchase.order_id).await, rows);
    assert_eq!(app.ledger_sum("alice").await, 50);
}

#[tokio::test]
async fn given_a_payment_whose_webhook_never_came_then_fix_grants_it_and_the_order_history_shows_the_fix() {
    let app = TestApp::spawn().await;
    let (order_id, session_id) = app.checkout("alice", "credits_100").await;
    app.pay(&session_id, PaymentResult::Card);
    let (young, _) = app.checkout("bob", "credits_100").await;
    age_order(&app, order_id, "2 hours").await;

    let report = check(&app, false).await;
    assert_eq!(kinds(&report), [DriftKind::UngrantedPayment], "{:?}", report.found);
    assert!(report.found[0].subject.contains(&order_id.to_string()));
    assert!(!report.found.iter().any(|f| f.subject.contains(&young.to_string())));

    let fixed = check(&app, true).await;
    assert!(fixed.remaining.is_empty(), "{:?}", fixed.remaining);
    assert_eq!(app.credits("alice").await, 100);
    assert_eq!(app.order_status("alice", order_id).await["status"], "paid");
    let (ok, history, _) = app.run_entitle(&["order", &order_id.to_string()]).await;
    assert!(ok);
    assert!(history.contains("verify_"), "{history}");

    // The webhook arriving after the fix grants nothing more.
    let completed = crate::helpers::event_for(&app, "checkout.session.completed", &session_id);
    app.deliver(&completed).await;
    assert_eq!(app.credits("alice").await, 100);
}

#[tokio::test]
async fn given_an_expired_checkout_whose_event_was_lost_then_fix_cancels_the_order() {
    let app = TestApp::spawn().await;
    let (order_id, session_id) = app.checkout("alice", "credits_100").await;
    app.emulator.expire_session(&session_id).unwrap();
    age_order(&app, order_id, "2 hours").await;

    assert_eq!(kinds(&check(&app, false).await), [DriftKind::ExpiredCheckout]);
    assert!(check(&app, true).await.remaining.is_empty());
    assert_eq!(app.order_status("alice", order_id).await["status"], "canceled");
}

#[tokio::test]
async fn given_a_dispute_lost_without_any_event_then_fix_takes_the_credits() {
    let app = TestApp::spawn().await;
    let purchase = app.fulfilled_purchase("alice", "credits_100").await;
    let (dispute, _) = app.emulator.open_dispute(&app.charge_of(&purchase)).unwrap();
    app.emulator.close_dispute(&dispute, false).unwrap();

    let report = check(&app, false).await;
    assert_eq!(kinds(&report), [DriftKind::Dispute]);
    assert_eq!(
        (report.found[0].ours.as_str(), report.found[0].stripe.as_str()),
        ("no dispute", "lost")
    );
    assert!(check(&app, true).await.remaining.is_empty());
    assert_eq!(app.credits("alice").await, 0);
    assert_eq!(app.ledger_sum("alice").await, 0);
}

#[tokio::test]
async fn given_a_subscription_canceled_at_stripe_without_an_event_then_fix_ends_access() {
    let app = TestApp::spawn().await;
    let purchase = app.fulfilled_purchase("alice", "pro_monthly").await;
    app.emulator
        .update_subscription(&purchase.subscription_id(), "canceled", false)
        .unwrap();
    assert_eq!(app.entitlement("alice").await["active"], true);

    let report = check(&app, false).await;
    assert_eq!(kinds(&report), [DriftKind::Subscription]);
    assert!(report.found[0].stripe.starts_with("canceled"), "{:?}", report.found);
    assert!(check(&app, true).await.remaining.is_empty());
    assert_eq!(app.entitlement("alice").await["active"], false);
}

#[tokio::test]
async fn given_a_renewal_never_delivered_then_fix_grants_the_new_period_once() {
    let app = TestApp::spawn().await;
    let purchase = app.fulfilled_purchase("alice", "team_monthly").await;
    assert_eq!(app.credits("alice").await, 1000);
    app.emulator.renew_subscription(&purchase.subscription_id()).unwrap();

    let report = check(&app, false).await;
    assert!(
        kinds(&report).contains(&DriftKind::UnrecordedInvoice),
        "{:?}",
        report.found
    );
    let fixed = check(&app, true).await;
    assert!(fixed.remaining.is_empty(), "{:?}", fixed.remaining);
    assert_eq!(app.credits("alice").await, 2000);
    assert!(check(&app, true).await.found.is_empty());
    assert_eq!(app.credits("alice").await, 2000);
}

#[tokio::test]
async fn given_a_subscription_stripe_does_not_know_then_it_is_left_for_a_person() {
    let app = TestApp::spawn().await;
    sqlx::query("insert into subscriptions (stripe_subscription_id, status) values ('sub_gone', 'active')")
        .execute(&app.db)
        .await
        .unwrap();

    let report = check(&app, true).await;
    assert_eq!(kinds(&report), [DriftKind::UnknownToStripe]);
    assert_eq!(report.remaining.len(), 1, "nothing can fix it");
    let (ok, stdout, _) = app.run_entitle(&["verify", "--fix"]).await;
    assert!(!ok);
    assert!(
        stdout.contains("left, for a person") && stdout.contains("sub_gone"),
        "{stdout}"
    );
}

#[tokio::test]
async fn given_orders_older_than_the_window_then_they_are_not_compared() {
    let app = TestApp::spawn().await;
    let purchase = app.fulfilled_purchase("alice", "credits_100").await;
    app.emulator.refund_charge(&app.charge_of(&purchase), None).unwrap();
    age_order(&app, purchase.order_id, "40 days").await;

    assert!(check(&app, false).await.found.is_empty());
    let (ok, stdout, _) = app.run_entitle(&["verify", "--since", "60d"]).await;
    assert!(!ok && stdout.contains("refunded"), "{stdout}");
}

#[tokio::test]
async fn given_stripe_failing_then_verify_fails_instead_of_reporting_no_drift() {
    let app = TestApp::spawn().await;
    app.fulfilled_purchase("alice", "pro_monthly").await;
    app.emulator
        .fail_requests("/v1/subscriptions", Some(InjectedFailure::Stripe(500)));

    assert!(
        verify(&app.db, &app.stripe, Utc::now() - chrono::Duration::days(1), false)
            .await
            .is_err()
    );
    let (ok, stdout, stderr) = app.run_entitle(&["verify"]).await;
    assert!(!ok);
    assert!(!stdout.contains("no drift"), "{stdout}");
    assert!(stderr.contains("entitle:"), "{stderr}");
}

#[tokio::test]
async fn given_the_schedule_then_drift_is_fixed_without_a_person_and_counted_in_the_metrics() {
    let app = TestApp::spawn_with(Options {
        jobs: entitle::config::JobIntervals {
            verify_every: Duration::from_secs(1),
            ..entitle::config::JobIntervals::default()
        },
        ..Options::default()
    })
    .await;
    let purchase = app.fulfilled_purchase("alice", "credits_100").await;
    app.emulator.refund_charge(&app.charge_of(&purchase), None).unwrap();

    let mut text = String::new();
    for _ in 0..300 {
        let response = app.http.get(app.url("/metrics")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        text = response.text().await.unwrap();
        if text.contains(r#"entitle_drift_remaining{kind="refunded"} 0"#) && app.credits("alice").await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        text.contains(r#"entitle_drift_findings_total{kind="refunded"} 1"#),
        "{text}"
    );
    assert!(text.contains("entitle_drift_fix_events_applied_total "), "{text}");
    assert!(text.contains(r#"entitle_drift_remaining{kind="refunded"} 0"#), "{text}");
    assert!(
        text.contains("entitle_drift_check_runs_total{outcome=\"ok\"}"),
        "{text}"
    );
    assert_eq!(app.credits("alice").await, 0);
    assert_eq!(app.order_status("alice", purchase.order_id).await["status"], "refunded");
}

#[tokio::test]
async fn an_age_past_1970_compares_everything_instead_of_failing() {
    let app = TestApp::spawn().await;
    let (ok, stdout, stderr) = app.run_entitle(&["verify", "--since", "99999999999d"]).await;
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("since 1970-01-01"), "{stdout}");
}

#[tokio::test]
async fn given_a_plan_change_whose_event_never_arrived_then_verify_finds_it_and_fix_moves_the_entitlement() {
    let app = TestApp::spawn().await;
    let purchase = app.fulfilled_purchase("alice", "pro_monthly").await;
    let (status, body) = app
        .post_json(
            "/subscription/change",
            Some(&crate::helpers::token_for("alice")),
            &serde_json::json!({ "planId": "team_monthly" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(app.entitlement("alice").await["key"], "pro", "no event was delivered");

    let report = check(&app, false).await;
    // The plan, and the proration invoice that paid for it.
    assert_eq!(
        kinds(&report),
        [DriftKind::Subscription, DriftKind::UnrecordedInvoice],
        "{:?}",
        report.found
    );
    let finding = &report.found[0];
    assert!(finding.stripe.ends_with("plan team_monthly"), "{}", finding.stripe);
    assert!(finding.ours.ends_with("plan pro_monthly"), "{}", finding.ours);

    check(&app, true).await;
    let holdings = app.holdings("alice").await;
    let team = holdings["entitlements"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["key"] == "team")
        .unwrap_or_else(|| panic!("{holdings}"));
    assert_eq!(team["active"], true);
    assert!(check(&app, false).await.found.is_empty());
    // The proration tops the rest of the period up to Team's 1,000 a month, once.
    let grants = app.period_grants(purchase.order_id).await;
    assert_eq!(grants.len(), 1, "{grants:?}");
    assert!((990..=1000).contains(&grants[0]), "{grants:?}");
}
