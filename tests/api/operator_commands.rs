//! The operator commands, run as the real binary against the test's database and Stripe stand-in.

use chrono::{Duration, Utc};
use entitle::{
    config::{Config, StripeBackend},
    stripe_emulator::{InjectedFailure, PaymentResult},
};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    helpers::{JWT_SECRET, TestApp, WEBHOOK_SECRET},
    lifecycle_helpers::event_id,
};

fn stripe_variables(config: &Config) -> Vec<(&'static str, String)> {
    match &config.stripe {
        StripeBackend::Api { secret_key, api_base } => {
            vec![
                ("STRIPE_SECRET_KEY", secret_key.expose().to_owned()),
                ("STRIPE_API_BASE", api_base.clone()),
            ]
        }
        StripeBackend::Emulator => vec![("STRIPE_EMULATOR", "true".to_owned())],
    }
}

impl TestApp {
    /// Runs `entitle <args>` with this app's configuration; returns (success, stdout, stderr).
    pub async fn run_entitle(&self, args: &[&str]) -> (bool, String, String) {
        self.run_entitle_with(args, &[]).await
    }

    /// As `run_entitle`, with more environment variables.
    pub async fn run_entitle_with(&self, args: &[&str], extra: &[(&str, &str)]) -> (bool, String, String) {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_entitle"));
        command
            .args(args)
            .env("DATABASE_URL", self.config.database_url.expose())
            .envs(stripe_variables(&self.config))
            .env("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
            .env("AUTH_JWT_SECRET", JWT_SECRET)
            .env("RUST_LOG", "off")
            .envs(extra.iter().copied());
        // The command calls back into this test's runtime (the emulator), so it must not block it.
        let output = tokio::task::spawn_blocking(move || command.output().unwrap())
            .await
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }
}

#[tokio::test]
async fn reconcile_since_applies_a_missed_payment() {
    let app = TestApp::spawn().await;
    let (_, session_id) = app.checkout("alice", "credits_100").await;
    app.pay(&session_id, PaymentResult::Card);

    let (ok, stdout, stderr) = app.run_entitle(&["reconcile", "--since", "72h"]).await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("applied 1"), "{stdout}");
    assert_eq!(app.credits("alice").await, 100);
}

#[tokio::test]
async fn replay_applies_an_event_once_and_order_shows_what_each_event_changed() {
    let app = TestApp::spawn().await;
    let (order_id, session_id) = app.checkout("alice", "credits_100").await;
    let completed = app.pay(&session_id, PaymentResult::Card).remove(0);
    let completed_id = completed["id"].as_str().unwrap();

    let (ok, stdout, stderr) = app.run_entitle(&["replay", completed_id]).await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("applied: fulfilled"), "{stdout}");
    let (_, again, _) = app.run_entitle(&["replay", completed_id]).await;
    assert!(again.contains("already applied"), "{again}");
    assert_eq!(app.credits("alice").await, 100);

    let payment_intent = completed["data"]["object"]["payment_intent"].as_str().unwrap();
    let charge = app.emulator.charge_for_payment_intent(payment_intent).unwrap();
    let refund = app.emulator.refund_charge(&charge, Some(250)).unwrap();
    app.deliver(&refund).await;

    let (ok, stdout, stderr) = app.run_entitle(&["order", &order_id.to_string()]).await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains(&format!("order {order_id}: paid")), "{stdout}");
    let purchase_line = stdout.find("credits +100 (purchase)").expect(&stdout);
    let refund_line = stdout.find("credits -50 (refund)").expect(&stdout);
    assert!(stdout.find(completed_id).unwrap() < purchase_line, "{stdout}");
    assert!(
        stdout.find(refund["id"].as_str().unwrap()).unwrap() < refund_line,
        "{stdout}"
    );

    let (ok, _, stderr) = app.run_entitle(&["order", "not-a-uuid"]).await;
    assert!(!ok && stderr.contains("Usage: entitle order <ORDER_ID>"), "{stderr}");
}

#[tokio::test]
async fn review_lists_every_order_whose_payment_did_not_match_with_its_reason() {
    let app = TestApp::spawn().await;
    let (ok, stdout, stderr) = app.run_entitle(&["review"]).await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("no order is under review"), "{stdout}");

    let (order_id, session_id) = app.checkout("alice", "credits_100").await;
    let mut paid_less = crate::helpers::event_for(&app, "checkout.session.completed", &session_id);
    paid_less["data"]["object"]["payment_status"] = serde_json::json!("paid");
    paid_less["data"]["object"]["amount_total"] = serde_json::json!(499);
    let (_, body) = app.deliver(&paid_less).await;
    assert_eq!(body["outcome"], "amount_mismatch");

    let (ok, stdout, stderr) = app.run_entitle(&["review"]).await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("1 order(s) under review"), "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.contains(&order_id.to_string()))
        .expect(&stdout);
    assert!(
        line.contains("user alice") && line.contains("paid 499 usd") && line.contains("500 usd"),
        "{line}"
    );
}

#[tokio::test]
async fn failed_events_shows_an_event_the_reconciler_set_aside_until_replay_applies_it() {
    let app = TestApp::spawn().await;
    let purchase = app.fulfilled_purchase("alice", "pro_monthly").await;
    let update = app
        .emulator
        .update_subscription(&purchase.subscription_id(), "active", true)
        .unwrap();
    let update_id = event_id(&update);
    app.emulator
        .fail_requests("/v1/subscriptions/", Some(InjectedFailure::Stripe(500)));

    let (ok, stdout, stderr) = app.run_entitle(&["failed-events"]).await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("no missed event is failing"), "{stdout}");

    let (ok, stdout, stderr) = app
        .run_entitle_with(&["reconcile", "--since", "1h"], &[("RECONCILER_MAX_ATTEMPTS", "1")])
        .await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("1 failed (1 now set aside)"), "{stdout}");

    let (ok, stdout, stderr) = app.run_entitle(&["failed-events"]).await;
    assert!(ok, "{stderr}");
    for expected in [
        update_id.as_str(),
        "customer.subscription.updated",
        "set aside",
        "after 1 attempt",
        "HTTP 500",
        &format!("retry: entitle replay {update_id}"),
    ] {
        assert!(stdout.contains(expected), "{expected} not in:\n{stdout}");
    }

    app.emulator.fail_requests("/v1/subscriptions/", None);
    let (ok, stdout, stderr) = app.run_entitle(&["replay", &update_id]).await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("applied: subscription_synced"), "{stdout}");
    let (_, stdout, _) = app.run_entitle(&["failed-events"]).await;
    assert!(stdout.contains("no missed event is failing"), "{stdout}");
    assert_eq!(app.entitlement("alice").await["cancelAtPeriodEnd"], true);
}

/// The line of `stdout` that contains `needle`, and where it is.
fn line_with<'a>(stdout: &'a str, needle: &str) -> (usize, &'a str) {
    stdout
        .lines()
        .enumerate()
        .find(|(_, line)| line.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{stdout}"))
}

async fn api_ok(app: &TestApp, path: &str, body: Value) -> Value {
    let (status, _, body) = app.api_post(path, &body).await;
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    body
}

#[tokio::test]
async fn user_shows_the_balance_the_grants_in_spend_order_and_the_latest_ledger_rows() {
    let app = TestApp::spawn().await;
    let (ok, stdout, stderr) = app.run_entitle(&["user", "alice"]).await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("never held credits"), "{stdout}");

    // 100 bought, 50 granted to expire next week; 40 used and 5 reserved come out of the 50 first.
    let purchase = app.fulfilled_purchase("alice", "credits_100").await;
    let expires = (Utc::now() + Duration::days(7)).to_rfc3339();
    let manual = api_ok(
        &app,
        "/v1/grants",
        json!({"userId": "alice", "credits": 50, "idempotencyKey": "promo-1", "reason": "launch promo", "expiresAt": expires}),
    )
    .await;
    let usage = api_ok(
        &app,
        "/v1/usage",
        json!({"userId": "alice", "credits": 40, "idempotencyKey": "render-1"}),
    )
    .await;
    let reservation = api_ok(
        &app,
        "/v1/reservations",
        json!({"userId": "alice", "credits": 5, "idempotencyKey": "job-1"}),
    )
    .await;

    let (ok, stdout, stderr) = app.run_entitle(&["user", "alice", "--limit", "3"]).await;
    assert!(ok, "{stderr}");
    assert!(
        stdout.starts_with("user alice: 105 available, 5 reserved, 0 overdrawn\n"),
        "{stdout}"
    );
    let (manual_at, manual_line) = line_with(&stdout, manual["id"].as_str().unwrap());
    let (purchase_at, purchase_line) = line_with(&stdout, &format!("order {}", purchase.order_id));
    assert!(manual_at < purchase_at, "the expiring grant is spent first:\n{stdout}");
    assert!(
        manual_line.contains("manual")
            && manual_line.contains("5 of 50 left")
            && manual_line.contains("\"launch promo\""),
        "{manual_line}"
    );
    assert!(
        purchase_line.contains("purchase") && purchase_line.contains("100 of 100 left, never expires"),
        "{purchase_line}"
    );
    // The three latest rows, newest first, each naming its cause; the purchase's row is beyond the limit.
    let (reserved_at, reserved_line) = line_with(&stdout, reservation["reservationId"].as_str().unwrap());
    let (used_at, used_line) = line_with(&stdout, usage["usageId"].as_str().unwrap());
    let (granted_at, granted_line) = line_with(&stdout, "manual_grant");
    assert!(reserved_at < used_at && used_at < granted_at, "{stdout}");
    assert!(
        reserved_line.contains("reservation") && reserved_line.contains("-5"),
        "{reserved_line}"
    );
    assert!(used_line.contains("usage") && used_line.contains("-40"), "{used_line}");
    assert!(granted_line.contains("+50"), "{granted_line}");
    assert!(
        !stdout.contains("evt_"),
        "the purchase row is the fourth newest:\n{stdout}"
    );

    // Spend from the purchase too, then refund it in full: what was spent of it is owed.
    api_ok(
        &app,
        "/v1/usage",
        json!({"userId": "alice", "credits": 100, "idempotencyKey": "render-2"}),
    )
    .await;
    let charge = app.charge_of(&purchase);
    let (refund, events) = app.emulator.refund(&charge, None).unwrap();
    app.deliver_all(&events).await;
    let (ok, stdout, stderr) = app.run_entitle(&["user", "alice"]).await;
    assert!(ok, "{stderr}");
    assert!(
        stdout.starts_with("user alice: 0 available, 5 reserved, 95 overdrawn\n"),
        "{stdout}"
    );
    assert!(stdout.contains("owes 95"), "{stdout}");
    assert!(stdout.contains("grants: nothing left to spend"), "{stdout}");
    let (_, refund_line) = line_with(&stdout, "UTC  refund ");
    assert!(
        refund_line.contains("-100") && refund_line.contains(&format!("order {}", purchase.order_id)),
        "{refund_line}"
    );
    assert!(refund_line.contains("event evt_"), "{refund_line} ({refund})");
    // By default every row of these six fits.
    let (_, purchase_row) = line_with(&stdout, "+100");
    assert!(
        purchase_row.contains("purchase") && purchase_row.contains("event evt_"),
        "{purchase_row}"
    );

    let (ok, stdout, _) = app.run_entitle(&["user", "--help"]).await;
    assert!(
        ok && stdout.contains("--limit <N>") && stdout.contains("[default: 20]"),
        "{stdout}"
    );
}
