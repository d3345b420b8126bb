//! Money that goes back takes back what it bought: refunds claw credits back (in proportion when
//! partial) or revoke a subscription's access; disputes suspend until won, and keep it taken if lost.
//! Every change is a ledger or history row naming its event, and redeliveries change nothing.

use crate::{helpers::TestApp, lifecycle_helpers::event_id};

#[tokio::test]
async fn given_paid_credits_when_fully_refunded_then_they_are_clawed_back_once_and_the_order_is_refunded() {
    let app = TestApp::spawn().await;
    let purchase = app.fulfilled_purchase("alice", "credits_100").await;
    assert_eq!(app.credits("alice").await, 100);
    let charge = app.charge_of(&purchase);

    let refund = app.emulator.refund_charge(&charge, None).unwrap();
    assert_eq!(
        app.deliver_all(&[refund.clone(), refund.clone()]).await,
        ["refunded", "duplicate"]
    );

    assert_eq!(app.credits("alice").await, 0);
    let order = app.order_status("alice", purchase.order_id).await;
    assert_eq!(order["status"], "refunded");
    assert_eq!(order["amountRefunded"], 500);
    let ledger = app.ledger(purchase.order_id).await;
    assert_eq!(ledger[1], ("refund".into(), -100, Some(event_id(&refund))));
    assert_eq!(ledger.len(), 2);
}

#[tokio::test]
async fn given_paid_credits_when_partly_refunded_then_the_share_rounded_down_is_clawed_back() {
    let app = TestApp::spawn().await;
    let purchase = app.fulfilled_purchase("alice", "credits_100").await;
    let charge = app.charge_of(&purchase);

    // 333 of 500 cents: 66.6 credits, so 66 go back.
    let first = app.emulator.refund_charge(&charge, Some(333)).unwrap();
    assert_eq!(
        app.deliver_all(std::slice::from_ref(&first)).await,
        ["partially_refunded"]
    );
    assert_eq!(app.credits("alice").await, 34);
    let order = app.order_status("alice", purchase.order_id).await;
    assert_eq!(
        (order["status"].as_str(), order["amountRefunded"].as_i64()),
        (Some("paid"), Some(333))
    );

    let rest = app.emulator.refund_charge(&charge, None).unwrap();
    // Delivered twice, and the older event once more after it: the total never claws twice.
    app.deliver_all(&[rest.clone(), rest, first]).await;
    assert_eq!(app.credits("alice").await, 0);
    assert_eq!(app.order_status("alice", purchase.order_id).await["status"], "refunded");
}

#[tokio::test]
async fn given_a_subscription_when_its_charge_is_refunded_then_full_revokes_and_partial_does_not() {
    let app = TestApp::spawn().await;
    let purchase = app.fulfilled_purchase("alice", "pro_monthly").await;
    let charge = app
        .emulator
        .latest_charge_of_subscription(&purchase.subscription_id())
        .unwrap();

    // invoice.paid events leave out `payments`, so the service asked for the invoice expanded.
    assert!(purchase.events[2]["data"]["object"].get("payments").is_none());
    assert!(app.emulator.requests().iter().any(
        |r| r.path.starts_with("/v1/invoices/") && r.params.get("expand[]").map(String::as_str) == Some("payments")
    ));

    let partial = app.emulator.refund_charge(&charge, Some(500)).unwrap();
    assert_eq!(app.deliver_all(&[partial]).await, ["partially_refunded"]);
    assert_eq!(app.entitlement("alice").await["status"], "active");

    let full = app.emulator.refund_charge(&charge, None).unwrap();
    assert_eq!(app.deliver_all(std::slice::from_ref(&full)).await, ["refunded"]);
    assert_eq!(app.entitlement("alice").await["status"], "revoked");
    let history = app.entitlement_history(purchase.order_id).await;
    assert!(
        history.contains(&("revoked".into(), Some(event_id(&full)))),
        "{history:?}"
    );

    // Stripe still calls the subscription active; the refund's revocation holds.
    let update = app
        .emulator
        .update_subscription(&purchase.subscription_id(), "active", false)
        .unwrap();
    app.deliver_all(&[update]).await;
    assert_eq!(app.entitlement("alice").await["status"], "revoked");
}

#[tokio::test]
async fn given_a_dispute_on_credits_when_lost_then_they_stay_clawed_back_and_the_order_is_refunded() {
    let app = TestApp::spawn().await;
    let purchase = app.fulfilled_purchase("alice", "credits_100").await;
    let charge = app.charge_of(&purchase);

    let (dispute_id, opened) = app.emulator.open_dispute(&charge).unwrap();
    assert_eq!(
        app.deliver_all(&[opened.clone(), opened]).await,
        ["disputed", "duplicate"]
    );
    assert_eq!(app.credits("alice").await, 0);
    assert_eq!(app.order_status("alice", purchase.order_id).await["status"], "disputed");

    let closed = app.emulator.close_dispute(&dispute_id, false).unwrap();
    assert_eq!(app.deliver_all(&[closed]).await, ["dispute_lost"]);
    assert_eq!(app.credits("alice").await, 0);
    assert_eq!(app.order_status("alice", purchase.order_id).await["status"], "refunded");
}

#[tokio::test]
async fn given_a_dispute_on_credits_when_won_then_they_are_restored_and_the_order_is_paid_again() {
    let app = TestApp::spawn().await;
    let purchase = app.fulfilled_purchase("alice", "credits_100").await;
    let charge = app.charge_of(&purchase);

    let (dispute_id, opened) = app.emulator.open_dispute(&charge).unwrap();
    app.deliver_all(&[opened]).await;
    let closed = app.emulator.close_dispute(&dispute_id, true).unwrap();
    assert_eq!(
        app.deliver_all(&[closed.clone(), closed.clone()]).await,
        ["dispute_won", "duplicate"]
    );

    assert_eq!(app.credits("alice").await, 100);
    assert_eq!(app.order_status("alice", purchase.order_id).await["status"], "paid");
    let kinds: Vec<String> = app
        .ledger(purchase.order_id)
        .await
        .into_iter()
        .map(|(kind, _, _)| kind)
        .collect();
    assert_eq!(kinds, ["purchase", "dispute", "dispute_reversal"]);
    assert_eq!(app.ledger(purchase.order_id).await[2].2, Some(event_id(&closed)));
}

#[tokio::test]
async fn given_a_dispute_on_a_subscription_then_access_is_suspended_until_won_or_revoked_when_lost() {
    for (won, final_status) in [(true, "active"), (false, "revoked")] {
        let app = TestApp::spawn().await;
        let purchase = app.fulfilled_purchase("alice", "pro_monthly").await;
        let charge = app
            .emulator
            .latest_charge_of_subscription(&purchase.subscription_id())
            .unwrap();

        let (dispute_id, opened) = app.emulator.open_dispute(&charge).unwrap();
        app.deliver_all(&[opened]).await;
        let suspended = app.entitlement("alice").await;
        assert_eq!(
            (suspended["status"].as_str(), suspended["active"].as_bool()),
            (Some("suspended"), Some(false))
        );

        let closed = app.emulator.close_dispute(&dispute_id, won).unwrap();
        app.deliver_all(&[closed]).await;
        assert_eq!(app.entitlement("alice").await["status"], final_status, "won = {won}");
    }
}

#[tokio::test]
async fn given_a_dispute_closed_before_its_created_arrives_then_nothing_stays_suspended() {
    let app = TestApp::spawn().await;
    let purchase = app.fulfilled_purchase("alice", "credits_100").await;
    let charge = app.charge_of(&purchase);
    let (dispute_id, opened) = app.emulator.open_dispute(&charge).unwrap();
    let closed = app.emulator.close_dispute(&dispute_id, true).unwrap();

    app.deliver_all(&[closed, opened]).await;
    assert_eq!(app.credits("alice").await, 100);
    assert_eq!(app.order_status("alice", purchase.order_id).await["status"], "paid");
}

#[tokio::test]
async fn given_a_refunded_subscription_when_the_user_buys_again_then_the_new_purchase_grants_afresh() {
    let app = TestApp::spawn().await;
    let first = app.fulfilled_purchase("alice", "pro_monthly").await;
    let charge = app
        .emulator
        .latest_charge_of_subscription(&first.subscription_id())
        .unwrap();
    let refund = app.emulator.refund_charge(&charge, None).unwrap();
    app.deliver_all(&[refund]).await;
    assert_eq!(app.entitlement("alice").await["status"], "revoked");

    app.fulfilled_purchase("alice", "pro_monthly").await;
    let entitlement = app.entitlement("alice").await;
    assert_eq!(
        (entitlement["status"].as_str(), entitlement["active"].as_bool()),
        (Some("active"), Some(true))
    );
}

#[tokio::test]
async fn given_refund_dispute_and_subscription_events_racing_then_none_fails_and_the_dispute_holds() {
    let app = TestApp::spawn().await;
    let purchase = app.fulfilled_purchase("alice", "pro_monthly").await;
    let subscription_id = purchase.subscription_id();
    let charge = app.emulator.latest_charge_of_subscription(&subscription_id).unwrap();
    let mut events = app.emulator.renew_subscription(&subscription_id).unwrap();
    events.push(app.emulator.refund_charge(&charge, Some(100)).unwrap());
    events.push(app.emulator.open_dispute(&charge).unwrap().1);
    events.push(
        app.emulator
            .update_subscription(&subscription_id, "active", false)
            .unwrap(),
    );

    let deliveries = events.iter().cycle().take(events.len() * 5);
    let replies = futures::future::join_all(deliveries.map(|event| app.deliver(event))).await;
    assert!(
        replies.iter().all(|(status, _)| *status == reqwest::StatusCode::OK),
        "{replies:?}"
    );
    assert_eq!(app.entitlement("alice").await["status"], "suspended");
}

#[tokio::test]
async fn given_a_lost_dispute_whose_created_never_arrived_then_the_credits_are_still_taken_back_once() {
    let app = TestApp::spawn().await;
    let purchase = app.fulfilled_purchase("alice", "credits_100").await;
    let charge = app.charge_of(&purchase);
    let (dispute_id, opened) = app.emulator.open_dispute(&charge).unwrap();
    let lost = app.emulator.close_dispute(&dispute_id, false).unwrap();

    assert_eq!(app.deliver_all(std::slice::from_ref(&lost)).await, ["dispute_lost"]);
    assert_eq!(app.credits("alice").await, 0);
    assert_eq!(app.order_status("alice", purchase.order_id).await["status"], "refunded");

    // The `created` arriving late changes nothing more.
    app.deliver_all(&[opened]).await;
    assert_eq!(app.credits("alice").await, 0);
    assert_eq!(app.order_status("alice", purchase.order_id).await["status"], "refunded");
}

#[tokio::test]
async fn given_a_lost_dispute_after_a_partial_refund_when_the_rest_is_refunded_then_no_more_than_the_purchase_is_taken()
{
    let app = TestApp::spawn().await;
    let purchase = app.fulfilled_purchase("alice", "credits_100").await;
    let charge = app.charge_of(&purchase);

    let half = app.emulator.refund_charge(&charge, Some(250)).unwrap();
    app.deliver_all(&[half]).await;
    assert_eq!(app.credits("alice").await, 50);
    let (dispute_id, opened) = app.emulator.open_dispute(&charge).unwrap();
    let lost = app.emulator.close_dispute(&dispute_id, false).unwrap();
    app.deliver_all(&[opened, lost]).await;
    assert_eq!(app.credits("alice").await, 0);

    let rest = app.emulator.refund_charge(&charge, None).unwrap();
    app.deliver_all(&[rest]).await;
    assert_eq!(
        app.credits("alice").await,
        0,
        "refund and dispute together take back the purchase once"
    );
}
