//! Refunds and disputes of a purchase whose credits are being spent: what is left of its grant goes
//! back first, what was spent is owed (nothing can be spent until new credits cover it), and the
//! ledger stays the sum of the balance through every turn.

use chrono::{Duration, Utc};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{TestApp, error_code, rfc3339, sleep_past, with_time_to_spare};

fn credits(balance: &serde_json::Value) -> (i64, i64, i64) {
    let c = &balance["credits"];
    (
        c["available"].as_i64().unwrap(),
        c["reserved"].as_i64().unwrap(),
        c["overdrawn"].as_i64().unwrap(),
    )
}

#[tokio::test]
async fn a_partial_refund_takes_its_share_from_what_is_left_of_the_purchase() {
    let app = TestApp::spawn().await;
    let purchase = app.fulfilled_purchase("alice", "credits_100").await;
    let (status, _, _) = app.usage("alice", 30, "u1").await;
    assert_eq!(status, StatusCode::OK);
    // Half the money back: 50 credits, of the 70 still there.
    let (_, events) = app.emulator.refund(&app.charge_of(&purchase), Some(250)).unwrap();
    app.deliver_all(&events).await;
    let balance = app.consistent_balance("alice").await;
    assert_eq!(credits(&balance), (20, 0, 0));
    assert_eq!(balance["grants"][0]["remaining"], 20);
    assert_eq!(app.credits("alice").await, 20);
    // Redelivered, nothing more is taken.
    app.deliver_all(&events).await;
    assert_eq!(credits(&app.consistent_balance("alice").await), (20, 0, 0));
}

#[tokio::test]
async fn a_refund_of_spent_credits_leaves_them_owed_and_nothing_spendable_until_covered() {
    let app = TestApp::spawn().await;
    app.grant_credits("alice", 50).await;
    let purchase = app.fulfilled_purchase("alice", "credits_100").await;
    // Spent: all 50 of the manual grant (older) and 70 of the purchase.
    let (status, _, _) = app.usage("alice", 120, "u1").await;
    assert_eq!(status, StatusCode::OK);
    let (_, events) = app.emulator.refund(&app.charge_of(&purchase), None).unwrap();
    app.deliver_all(&events).await;

    // 30 left of the purchase go back; the 70 spent are owed.
    let balance = app.consistent_balance("alice").await;
    assert_eq!(credits(&balance), (0, 0, 70));
    assert_eq!(balance["grants"], json!([]));
    assert_eq!(app.credits("alice").await, -70);
    let holdings = app.holdings("alice").await;
    assert_eq!(holdings["creditsOverdrawn"], true);

    // Nothing can be spent, held or allowed while credits are owed.
    let rows = app.credit_rows().await;
    let (status, _, body) = app.usage("alice", 1, "u2").await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::PAYMENT_REQUIRED, "insufficient_credits")
    );
    assert!(
        body["error"]["message"].as_str().unwrap().contains("0 available"),
        "{body}"
    );
    let (status, _, _) = app.reserve("alice", 1, "r1", None).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED);
    let (_, _, check) = app
        .api_post("/v1/check", &json!({"userId": "alice", "credits": 1}))
        .await;
    assert_eq!(check, json!({"allowed": false, "available": 0, "entitlement": null}));
    assert_eq!(app.credit_rows().await, rows);

    // New credits pay what is owed first: a grant of 50 leaves nothing, and says so.
    let (status, _, grant) = app
        .api_post(
            "/v1/grants",
            &json!({"userId": "alice", "credits": 50, "idempotencyKey": "g1", "reason": "goodwill"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{grant}");
    assert_eq!(
        (grant["granted"].as_i64(), grant["remaining"].as_i64()),
        (Some(50), Some(0))
    );
    assert_eq!(credits(&app.consistent_balance("alice").await), (0, 0, 20));
    // Replayed, the grant says what it said.
    let (_, replayed, again) = app
        .api_post(
            "/v1/grants",
            &json!({"userId": "alice", "credits": 50, "idempotencyKey": "g1", "reason": "goodwill"}),
        )
        .await;
    assert!(replayed);
    assert_eq!(again, grant);
    // The next one covers the rest, and what is left of it can be spent.
    let (_, _, grant) = app
        .api_post(
            "/v1/grants",
            &json!({"userId": "alice", "credits": 30, "idempotencyKey": "g2", "reason": "goodwill"}),
        )
        .await;
    assert_eq!(grant["remaining"], 10);
    assert_eq!(credits(&app.consistent_balance("alice").await), (10, 0, 0));
    let (status, _, body) = app.usage("alice", 10, "u3").await;
    assert_eq!((status, body["available"].as_i64()), (StatusCode::OK, Some(0)));
    assert_eq!(app.ledger_sum("alice").await, 0);
}

#[tokio::test]
async fn credits_owed_are_covered_by_the_spendable_credits_the_user_still_has() {
    let app = TestApp::spawn().await;
    let purchase = app.fulfilled_purchase("alice", "credits_100").await;
    let (status, _, _) = app.usage("alice", 90, "u1").await;
    assert_eq!(status, StatusCode::OK);
    // Granted after the spend: not spent, but it pays for the purchase's spent credits.
    let soon = rfc3339(Utc::now() + Duration::days(1));
    app.grant_expiring("alice", 25, &soon).await;
    app.grant_credits("alice", 40).await;
    let (_, events) = app.emulator.refund(&app.charge_of(&purchase), None).unwrap();
    app.deliver_all(&events).await;
    // 10 left of the purchase go back, 90 spent are paid from the 65 others: 25 still owed.
    let balance = app.consistent_balance("alice").await;
    assert_eq!(credits(&balance), (0, 0, 25), "{balance}");
}

#[tokio::test]
async fn a_refund_while_credits_are_reserved_owes_them_until_the_reservation_is_settled() {
    let app = TestApp::spawn().await;
    let first = app.fulfilled_purchase("alice", "credits_100").await;
    let second = app.fulfilled_purchase("bob", "credits_100").await;
    for user in ["alice", "bob"] {
        let (status, _, body) = app.reserve(user, 80, &format!("held-{user}"), None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    for purchase in [&first, &second] {
        let (_, events) = app.emulator.refund(&app.charge_of(purchase), None).unwrap();
        app.deliver_all(&events).await;
    }
    // The 20 not held go back; the 80 held are owed while held.
    for user in ["alice", "bob"] {
        let balance = app.consistent_balance(user).await;
        assert_eq!(credits(&balance), (0, 80, 80), "{user}: {balance}");
    }

    // Released: they come back and pay what was owed.
    let alice: String = sqlx::query_scalar("select id::text from credit_spends where user_id = 'alice'")
        .fetch_one(&app.db)
        .await
        .unwrap();
    let (status, body) = app.release_reservation(&alice).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(credits(&app.consistent_balance("alice").await), (0, 0, 0));

    // Committed: spent, and owed for good.
    let bob: String = sqlx::query_scalar("select id::text from credit_spends where user_id = 'bob'")
        .fetch_one(&app.db)
        .await
        .unwrap();
    let (status, body) = app.commit_reservation(&bob, Some(50)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(credits(&app.consistent_balance("bob").await), (0, 0, 50));
}

#[tokio::test]
async fn a_dispute_takes_the_credits_back_while_open_and_a_won_dispute_hands_them_back() {
    let app = TestApp::spawn().await;
    let purchase = app.fulfilled_purchase("alice", "credits_100").await;
    let (status, _, _) = app.usage("alice", 70, "u1").await;
    assert_eq!(status, StatusCode::OK);
    let (dispute, opened) = app.emulator.open_dispute(&app.charge_of(&purchase)).unwrap();
    app.deliver_all(&[opened]).await;
    assert_eq!(credits(&app.consistent_balance("alice").await), (0, 0, 70));
    // Spent while open: refused.
    let (status, _, _) = app.usage("alice", 1, "u2").await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED);

    let won = app.emulator.close_dispute(&dispute, true).unwrap();
    app.deliver_all(&[won.clone(), won]).await;
    let balance = app.consistent_balance("alice").await;
    assert_eq!(credits(&balance), (30, 0, 0), "{balance}");
    let kinds: Vec<String> = app.ledger_of("alice").await.into_iter().map(|(k, _)| k).collect();
    assert_eq!(kinds, ["purchase", "usage", "dispute", "dispute_reversal"]);
}

#[tokio::test]
async fn a_lost_dispute_keeps_them_taken_and_a_failed_refund_hands_them_back() {
    let app = TestApp::spawn().await;
    let disputed = app.fulfilled_purchase("alice", "credits_100").await;
    let refunded = app.fulfilled_purchase("alice", "credits_100").await;
    // 100 of the first purchase (the older), 60 of the second.
    let (status, _, _) = app.usage("alice", 160, "u1").await;
    assert_eq!(status, StatusCode::OK);

    let (dispute, opened) = app.emulator.open_dispute(&app.charge_of(&disputed)).unwrap();
    app.deliver_all(&[opened]).await;
    // All 100 spent; 40 of the other purchase pay for it.
    assert_eq!(credits(&app.consistent_balance("alice").await), (0, 0, 60));
    let lost = app.emulator.close_dispute(&dispute, false).unwrap();
    app.deliver_all(&[lost]).await;
    assert_eq!(credits(&app.consistent_balance("alice").await), (0, 0, 60));

    let charge = app.charge_of(&refunded);
    let (refund, events) = app.emulator.refund(&charge, None).unwrap();
    app.deliver_all(&events).await;
    assert_eq!(credits(&app.consistent_balance("alice").await), (0, 0, 160));
    // The refund fails: its 100 come back and pay for what is owed.
    let undone = app.emulator.undo_refund(&refund, "failed").unwrap();
    app.deliver_all(&undone).await;
    let balance = app.consistent_balance("alice").await;
    assert_eq!(credits(&balance), (0, 0, 60), "{balance}");
    app.grant_credits("alice", 61).await;
    assert_eq!(credits(&app.consistent_balance("alice").await), (1, 0, 0));
}

/// Credits a reservation hands back at its TTL pay what is owed as they would have when it ran
/// out, however late its expiry is written: here after the grant they came back to expired too.
#[tokio::test]
async fn credits_back_from_a_hold_past_its_ttl_pay_what_is_owed_however_late_that_is_written() {
    let app = &TestApp::spawn().await;
    with_time_to_spare(Duration::milliseconds(3000), |n, span| async move {
        let user = format!("alice-{n}");
        let purchase = app.fulfilled_purchase(&user, "credits_100").await;
        let until = Utc::now() + span;
        let soon = rfc3339(until);
        app.grant_expiring(&user, 50, &soon).await;
        // The hold takes the expiring grant (spent first), the usage the purchase; the refund then
        // leaves all 100 of it owed.
        let (status, _, held) = app.reserve(&user, 50, &format!("r-{n}"), Some(1)).await;
        if Utc::now() >= until {
            return false;
        }
        assert_eq!(status, StatusCode::OK, "{held}");
        let (status, _, _) = app.usage(&user, 100, &format!("u-{n}")).await;
        assert_eq!(status, StatusCode::OK);
        let (_, events) = app.emulator.refund(&app.charge_of(&purchase), None).unwrap();
        app.deliver_all(&events).await;

        // Nobody looks at the user until the grant has expired as well.
        sleep_past(&soon, std::time::Duration::from_millis(400)).await;
        let held_until = chrono::DateTime::parse_from_rfc3339(held["expiresAt"].as_str().unwrap()).unwrap();
        // The hold ran out while its grant still ran (unless the machine took seconds to get here):
        // its 50 came back spendable and paid 50 of the 100 owed, and the grant expired empty.
        let owed = if held_until < until { 50 } else { 100 };
        let balance = app.consistent_balance(&user).await;
        assert_eq!(credits(&balance), (0, 0, owed), "{balance}");
        true
    })
    .await;
}

/// The same, when new credits come while the hold's expiry is still unwritten: they pay only what
/// the hold's credits did not.
#[tokio::test]
async fn a_grant_after_a_hold_ran_out_pays_only_what_the_holds_credits_did_not() {
    let app = &TestApp::spawn().await;
    with_time_to_spare(Duration::milliseconds(3000), |n, span| async move {
        let user = format!("alice-{n}");
        let purchase = app.fulfilled_purchase(&user, "credits_100").await;
        let until = Utc::now() + span;
        let soon = rfc3339(until);
        app.grant_expiring(&user, 50, &soon).await;
        let (status, _, held) = app.reserve(&user, 50, &format!("r-{n}"), Some(1)).await;
        if Utc::now() >= until {
            return false;
        }
        assert_eq!(status, StatusCode::OK, "{held}");
        let (status, _, _) = app.usage(&user, 100, &format!("u-{n}")).await;
        assert_eq!(status, StatusCode::OK);
        let (_, events) = app.emulator.refund(&app.charge_of(&purchase), None).unwrap();
        app.deliver_all(&events).await;

        // Past the hold's TTL, before its grant expires: 200 new credits, of which 50 pay what
        // the hold's 50 did not.
        sleep_past(
            held["expiresAt"].as_str().unwrap(),
            std::time::Duration::from_millis(300),
        )
        .await;
        let grant = json!({"userId": user, "credits": 200, "idempotencyKey": format!("g-{n}"), "reason": "r"});
        let (status, _, grant) = app.api_post("/v1/grants", &grant).await;
        assert_eq!(status, StatusCode::OK, "{grant}");
        sleep_past(&soon, std::time::Duration::from_millis(400)).await;
        let held_until = chrono::DateTime::parse_from_rfc3339(held["expiresAt"].as_str().unwrap()).unwrap();
        let left = if held_until < until { 150 } else { 100 };
        assert_eq!(grant["remaining"], left, "{grant}");
        let balance = app.consistent_balance(&user).await;
        assert_eq!(credits(&balance), (left, 0, 0), "{balance}");
        true
    })
    .await;
}
