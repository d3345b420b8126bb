//! Refunds and disputes delivered the way Stripe may deliver them: before the payment they reverse,
//! interleaved with each other, undone later, on an entitlement bought twice. Each scenario ends
//! where in-order delivery ends.

use entitle::stripe_emulator::PaymentResult;
use serde_json::{Value, json};

use crate::{
    helpers::{TestApp, event_for},
    lifecycle_helpers::Purchase,
};

impl TestApp {
    /// The order's status and refunded amount as the buyer's return page reads them.
    async fn order_summary(&self, user: &str, purchase: &Purchase) -> (String, i64) {
        let order = self.order_status(user, purchase.order_id).await;
        (
            order["status"].as_str().unwrap().to_owned(),
            order["amountRefunded"].as_i64().unwrap(),
        )
    }

    async fn entitlement_active(&self, user: &str, key: &str) -> bool {
        let holdings = self.holdings(user).await;
        holdings["entitlements"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["key"] == key)
            .is_some_and(|e| e["active"] == true)
    }
}

#[tokio::test]
async fn given_a_full_refund_delivered_before_the_payment_then_the_credits_are_never_kept() {
    let app = TestApp::spawn().await;
    let purchase = app.paid_purchase("alice", "credits_100").await;
    let charge = app.charge_of(&purchase);
    let (_, refund) = app.emulator.refund(&charge, None).unwrap();

    assert_eq!(app.deliver_all(&refund).await, ["awaiting_order", "awaiting_order"]);
    assert_eq!(app.deliver_all(&purchase.events).await, ["fulfilled"]);

    assert_eq!(app.credits("alice").await, 0);
    assert_eq!(app.order_summary("alice", &purchase).await, ("refunded".into(), 500));
    // The ledger shows what happened: bought, then taken back at fulfilment.
    let ledger = app.ledger(purchase.order_id).await;
    assert_eq!(
        ledger
            .iter()
            .map(|(kind, delta, _)| (kind.as_str(), *delta))
            .collect::<Vec<_>>(),
        [("purchase", 100), ("refund", -100)]
    );
}

#[tokio::test]
async fn given_a_dispute_opened_and_lost_before_the_payment_then_nothing_is_granted_for_good() {
    let app = TestApp::spawn().await;
    let purchase = app.paid_purchase("alice", "pro_lifetime").await;
    let charge = app.charge_of(&purchase);
    let (dispute, opened) = app.emulator.open_dispute(&charge).unwrap();
    let lost = app.emulator.close_dispute(&dispute, false).unwrap();

    app.deliver_all(&[lost, opened]).await;
    app.deliver_all(&purchase.events).await;

    assert_eq!(app.credits("alice").await, 0);
    assert!(!app.entitlement_active("alice", "pro_lifetime").await);
    assert_eq!(app.order_summary("alice", &purchase).await.0, "refunded");
}

#[tokio::test]
async fn given_a_subscription_payment_refunded_before_its_invoice_paid_then_the_entitlement_is_revoked() {
    let app = TestApp::spawn().await;
    let purchase = app.paid_purchase("alice", "pro_monthly").await;
    let charge = app
        .emulator
        .latest_charge_of_subscription(&purchase.subscription_id())
        .unwrap();
    let (_, refund) = app.emulator.refund(&charge, None).unwrap();

    // The refund, then the checkout, then the invoice that names the payment.
    app.deliver_all(&refund).await;
    let mut events = purchase.events.clone();
    let invoice_paid = events.pop().unwrap();
    assert_eq!(invoice_paid["type"], "invoice.paid");
    app.deliver_all(&events).await;
    assert!(
        app.entitlement_active("alice", "pro").await,
        "not yet known to be refunded"
    );
    app.deliver_all(&[invoice_paid]).await;

    assert_eq!(app.entitlement("alice").await["status"], "revoked");
    assert_eq!(app.order_summary("alice", &purchase).await.0, "refunded");
}

#[tokio::test]
async fn given_a_full_refund_during_an_inquiry_then_closing_the_inquiry_gives_nothing_back_in_any_order() {
    let app = TestApp::spawn().await;
    let permutations: [[usize; 3]; 6] = [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]];
    for (i, order) in permutations.iter().enumerate() {
        let user = format!("buyer-{i}");
        let purchase = app.fulfilled_purchase(&user, "pro_lifetime").await;
        let charge = app.charge_of(&purchase);
        let (inquiry, opened) = app.emulator.open_inquiry(&charge).unwrap();
        let refund = app.emulator.refund_charge(&charge, None).unwrap();
        let closed = app.emulator.close_dispute_as(&inquiry, "warning_closed").unwrap();
        let events = [opened, refund, closed];

        app.deliver_all(&order.map(|k| events[k].clone())).await;

        assert_eq!(app.credits(&user).await, 0, "{order:?}");
        assert_eq!(
            app.order_summary(&user, &purchase).await,
            ("refunded".into(), 9900),
            "{order:?}"
        );
        assert!(!app.entitlement_active(&user, "pro_lifetime").await, "{order:?}");
    }
}

#[tokio::test]
async fn given_a_dispute_on_a_fully_refunded_charge_when_it_is_won_then_the_refund_still_stands() {
    let app = TestApp::spawn().await;
    let purchase = app.fulfilled_purchase("alice", "pro_lifetime").await;
    let charge = app.charge_of(&purchase);
    let refund = app.emulator.refund_charge(&charge, None).unwrap();
    let (dispute, opened) = app.emulator.open_dispute(&charge).unwrap();
    let won = app.emulator.close_dispute(&dispute, true).unwrap();

    assert_eq!(
        app.deliver_all(&[refund, opened, won]).await,
        ["refunded", "disputed", "dispute_won"]
    );

    assert_eq!(app.entitlement("alice").await["status"], "revoked");
    assert_eq!(app.credits("alice").await, 0);
    assert_eq!(app.order_summary("alice", &purchase).await.0, "refunded");
}

#[tokio::test]
async fn given_a_refund_that_fails_or_is_canceled_then_what_it_took_is_given_back() {
    for undone in ["failed", "canceled"] {
        let app = TestApp::spawn().await;
        let purchase = app.fulfilled_purchase("alice", "pro_lifetime").await;
        let charge = app.charge_of(&purchase);
        let (refund_id, refunded) = app.emulator.refund(&charge, None).unwrap();
        app.deliver_all(&refunded).await;
        assert_eq!(app.credits("alice").await, 0);
        assert!(!app.entitlement_active("alice", "pro_lifetime").await);

        let undo = app.emulator.undo_refund(&refund_id, undone).unwrap();
        let outcomes = app.deliver_all(&undo).await;
        assert_eq!(outcomes[0], "refund_reversed", "{undone}");

        assert_eq!(app.credits("alice").await, 100, "{undone}");
        assert_eq!(
            app.order_summary("alice", &purchase).await,
            ("paid".into(), 0),
            "{undone}"
        );
        assert!(app.entitlement_active("alice", "pro_lifetime").await, "{undone}");
        let ledger = app.ledger(purchase.order_id).await;
        assert_eq!(ledger.last().unwrap().0, "refund_reversal", "{ledger:?}");
    }
}

#[tokio::test]
async fn given_a_refunds_failure_delivered_before_the_refund_itself_then_the_refund_never_counts() {
    let app = TestApp::spawn().await;
    let purchase = app.paid_purchase("alice", "credits_100").await;
    let charge = app.charge_of(&purchase);
    let (first_id, first) = app.emulator.refund(&charge, Some(100)).unwrap();
    let (_, second) = app.emulator.refund(&charge, Some(150)).unwrap();
    let failed = app.emulator.undo_refund(&first_id, "failed").unwrap();

    // Newest first, the payment last.
    let mut events: Vec<Value> = failed.into_iter().rev().collect();
    events.extend(second.into_iter().rev());
    events.extend(first.into_iter().rev());
    app.deliver_all(&events).await;
    app.deliver_all(&purchase.events).await;

    // Only the 150 of 500 stands: 30 credits go back.
    assert_eq!(app.credits("alice").await, 70);
    assert_eq!(app.order_summary("alice", &purchase).await, ("paid".into(), 150));
}

#[tokio::test]
async fn given_an_entitlement_bought_twice_when_one_purchase_is_refunded_then_it_stays_active() {
    let app = TestApp::spawn().await;
    let first = app.fulfilled_purchase("alice", "pro_lifetime").await;
    let second = app.fulfilled_purchase("alice", "pro_lifetime").await;

    let refund = app.emulator.refund_charge(&app.charge_of(&first), None).unwrap();
    app.deliver_all(&[refund]).await;
    assert!(app.entitlement_active("alice", "pro_lifetime").await);
    assert_eq!(app.credits("alice").await, 100);

    // The second one too: now nothing grants it.
    let (dispute, opened) = app.emulator.open_dispute(&app.charge_of(&second)).unwrap();
    app.deliver_all(&[opened]).await;
    assert_eq!(app.entitlement("alice").await["status"], "suspended");
    let lost = app.emulator.close_dispute(&dispute, false).unwrap();
    app.deliver_all(&[lost]).await;
    assert_eq!(app.entitlement("alice").await["status"], "revoked");
    assert_eq!(app.credits("alice").await, 0);
}

#[tokio::test]
async fn given_the_catalog_edited_between_order_and_payment_then_the_order_grants_what_it_was_placed_for() {
    let app = TestApp::spawn().await;
    let (order_id, session_id) = app.checkout("alice", "credits_100").await;
    // What a restart with an edited plans.toml does to the catalog table.
    sqlx::query("update plans set credits = 5000, entitlement = 'pro' where id = 'credits_100'")
        .execute(&app.db)
        .await
        .unwrap();

    let events = app.pay(&session_id, PaymentResult::Card);
    assert_eq!(app.deliver_all(&events).await, ["fulfilled"]);

    assert_eq!(app.credits("alice").await, 100);
    assert!(
        app.holdings("alice").await["entitlements"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(app.order_status("alice", order_id).await["amount"], 500);
}

/// `checkout.session.completed` for a session the buyer paid in euros (Adaptive Pricing): 463 EUR
/// charged, `merchant_amount` USD cents on the merchant's side.
fn converted_payment(app: &TestApp, session_id: &str, merchant_amount: i64) -> Value {
    let mut event = event_for(app, "checkout.session.completed", session_id);
    let session = &mut event["data"]["object"];
    session["payment_status"] = json!("paid");
    session["status"] = json!("complete");
    session["currency"] = json!("eur");
    session["amount_total"] = json!(463);
    session["currency_conversion"] = json!({
        "amount_subtotal": merchant_amount,
        "amount_total": merchant_amount,
        "fx_rate": "0.926",
        "source_currency": "usd",
    });
    event
}

#[tokio::test]
async fn given_a_payment_in_the_buyers_currency_then_it_is_checked_in_the_merchants_and_granted() {
    let app = TestApp::spawn().await;
    let (order_id, session_id) = app.checkout("alice", "credits_100").await;

    let (_, body) = app.deliver(&converted_payment(&app, &session_id, 500)).await;

    assert_eq!(body["outcome"], "fulfilled");
    assert_eq!(app.credits("alice").await, 100);
    assert_eq!(app.order_status("alice", order_id).await["status"], "paid");
}

#[tokio::test]
async fn given_a_converted_payment_short_on_the_merchants_side_then_the_order_is_under_review() {
    let app = TestApp::spawn().await;
    let (order_id, session_id) = app.checkout("alice", "credits_100").await;

    let (_, body) = app.deliver(&converted_payment(&app, &session_id, 499)).await;

    assert_eq!(body["outcome"], "amount_mismatch");
    assert_eq!(app.credits("alice").await, 0);
    assert_eq!(app.order_status("alice", order_id).await["status"], "under_review");
}

#[tokio::test]
async fn given_an_order_refunded_before_reversal_facts_were_kept_then_no_later_event_hands_it_back() {
    let app = TestApp::spawn().await;
    let purchase = app.fulfilled_purchase("alice", "pro_lifetime").await;
    let charge = app.charge_of(&purchase);
    // How the migrations leave an order refunded in full by the earlier code: the hold and the
    // clawback on file, its grant empty, no facts about the refund.
    sqlx::query(
        "update orders set status = 'refunded', amount_refunded = 9900, hold = 'refunded', legacy_hold = 'refunded'
         where id = $1",
    )
    .bind(purchase.order_id)
    .execute(&app.db)
    .await
    .unwrap();
    sqlx::query("insert into credit_ledger (user_id, order_id, kind, delta) values ('alice', $1, 'refund', -100)")
        .bind(purchase.order_id)
        .execute(&app.db)
        .await
        .unwrap();
    sqlx::query("update credit_grants set remaining = 0 where order_id = $1")
        .bind(purchase.order_id)
        .execute(&app.db)
        .await
        .unwrap();
    // And the account's totals as migration 20261203000001 takes them from the grants.
    sqlx::query(
        "update credit_accounts a set (available, reserved, due_at) =
             (select t.available, t.reserved, t.due_at from credit_totals(a.user_id) t)
         where user_id = 'alice'",
    )
    .execute(&app.db)
    .await
    .unwrap();

    let (dispute, opened) = app.emulator.open_inquiry(&charge).unwrap();
    let closed = app.emulator.close_dispute_as(&dispute, "warning_closed").unwrap();
    app.deliver_all(&[opened, closed]).await;

    assert_eq!(app.credits("alice").await, 0);
    assert_eq!(app.order_summary("alice", &purchase).await.0, "refunded");
}

#[tokio::test]
async fn given_an_order_under_review_when_its_payment_is_refunded_and_the_refund_fails_then_it_is_under_review_again() {
    let app = TestApp::spawn().await;
    let mut purchase = app.paid_purchase("alice", "credits_100").await;
    // Stripe says the session took 400 cents for a 500-cent order.
    purchase.events[0]["data"]["object"]["amount_total"] = json!(400);
    assert_eq!(app.deliver_all(&purchase.events).await, ["amount_mismatch"]);
    assert_eq!(app.order_summary("alice", &purchase).await.0, "under_review");

    let (refund_id, refunded) = app.emulator.refund(&app.charge_of(&purchase), None).unwrap();
    app.deliver_all(&refunded).await;
    assert_eq!(app.order_summary("alice", &purchase).await, ("refunded".into(), 500));

    app.deliver_all(&app.emulator.undo_refund(&refund_id, "failed").unwrap())
        .await;
    assert_eq!(app.order_summary("alice", &purchase).await, ("under_review".into(), 0));
    assert_eq!(app.credits("alice").await, 0, "never granted");
}
