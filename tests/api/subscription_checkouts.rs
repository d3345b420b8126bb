//! One open checkout per user and subscription: starting over closes the earlier checkout at
//! Stripe, so two tabs can never both be paid and bill the buyer twice.

use entitle::stripe_emulator::PaymentResult;
use futures::future::join_all;
use reqwest::StatusCode;
use uuid::Uuid;

use crate::helpers::{TestApp, error_code};

async fn pending_orders(app: &TestApp, user: &str, plan_id: &str) -> i64 {
    sqlx::query_scalar("select count(*) from orders where user_id = $1 and plan_id = $2 and status = 'pending'")
        .bind(user)
        .bind(plan_id)
        .fetch_one(&app.db)
        .await
        .unwrap()
}

fn session_status(app: &TestApp, session_id: &str) -> String {
    app.emulator.session(session_id).unwrap()["status"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn given_an_open_subscription_checkout_when_the_user_starts_another_then_only_the_new_one_can_be_paid() {
    let app = TestApp::spawn().await;
    let (first_order, first_session) = app.checkout("alice", "pro_monthly").await;
    let (_, bobs_session) = app.checkout("bob", "pro_monthly").await;

    let (second_order, second_session) = app.checkout("alice", "pro_monthly").await;

    assert_eq!(session_status(&app, &first_session), "expired");
    assert_eq!(app.order_status("alice", first_order).await["status"], "canceled");
    assert!(
        app.emulator.pay_session(&first_session, PaymentResult::Card).is_none(),
        "the closed checkout could still be paid"
    );
    assert_eq!(
        session_status(&app, &bobs_session),
        "open",
        "another user's checkout was closed"
    );
    assert_eq!(pending_orders(&app, "alice", "pro_monthly").await, 1);

    // Stripe's expiry event comes later and changes nothing.
    let expired = app
        .emulator
        .events()
        .into_iter()
        .find(|event| {
            event["type"] == "checkout.session.expired" && event["data"]["object"]["id"] == first_session.as_str()
        })
        .expect("Stripe announced the expiry");
    assert_eq!(app.deliver_all(&[expired]).await, ["status_unchanged"]);

    let events = app.pay(&second_session, PaymentResult::Card);
    app.deliver_all(&events).await;
    assert_eq!(app.order_status("alice", second_order).await["status"], "paid");
    assert_eq!(app.entitlement("alice").await["status"], "active");
}

#[tokio::test]
async fn one_time_purchases_may_be_open_side_by_side() {
    let app = TestApp::spawn().await;
    let (_, first_session) = app.checkout("alice", "credits_100").await;
    let (_, second_session) = app.checkout("alice", "credits_100").await;

    assert_eq!(session_status(&app, &first_session), "open");
    assert_eq!(session_status(&app, &second_session), "open");
}

#[tokio::test]
async fn given_the_open_checkout_was_just_paid_when_another_is_started_then_409_and_no_new_order() {
    let app = TestApp::spawn().await;
    let (first_order, first_session) = app.checkout("alice", "pro_monthly").await;
    // Paid on Stripe's page; the webhook has not arrived yet.
    let events = app.pay(&first_session, PaymentResult::Card);

    let (status, body) = app.try_checkout("alice", "pro_monthly").await;

    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::CONFLICT, "already_subscribed"),
        "{body}"
    );
    let orders: i64 = sqlx::query_scalar("select count(*) from orders where user_id = 'alice'")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(orders, 1);
    app.deliver_all(&events).await;
    assert_eq!(app.order_status("alice", first_order).await["status"], "paid");
}

#[tokio::test]
async fn given_many_simultaneous_subscription_checkouts_then_at_most_one_stays_payable() {
    let app = TestApp::spawn().await;
    let answers = join_all((0..8).map(|_| app.try_checkout("alice", "pro_monthly"))).await;

    let mut sessions = Vec::new();
    for (status, body) in &answers {
        match *status {
            StatusCode::OK => sessions.push(
                body["checkoutUrl"]
                    .as_str()
                    .unwrap()
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .to_owned(),
            ),
            StatusCode::CONFLICT => assert_eq!(error_code(body), "checkout_in_progress", "{body}"),
            other => panic!("{other}: {body}"),
        }
    }
    assert!(!sessions.is_empty(), "{answers:?}");
    let open: Vec<&String> = sessions
        .iter()
        .filter(|id| session_status(&app, id) == "open")
        .collect();
    assert!(open.len() <= 1, "payable sessions: {open:?}");
    assert!(pending_orders(&app, "alice", "pro_monthly").await <= 1);
    let payable_orders: Vec<Uuid> = sqlx::query_scalar(
        "select id from orders where user_id = 'alice' and status = 'pending' and stripe_checkout_session_id is not null",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(payable_orders.len(), open.len());
}
