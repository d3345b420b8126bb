//! `POST /order-status` with `waitSeconds`: a pending order's request is held until the webhook's
//! commit wakes it, or until the wait ends. Time bounds here are deliberately loose: "well before
//! the wait ended", never a latency target.

use std::time::{Duration, Instant};

use entitle::{
    order_events::{LISTENER_APPLICATION_NAME, ORDER_STATUS_CHANNEL},
    stripe_emulator::PaymentResult,
};
use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::postgres::PgListener;
use uuid::Uuid;

use crate::helpers::{Options, TestApp, error_code, token_for};

/// Far below the 20 s waits used here, far above any honest wake-up on a slow machine. The test
/// app re-reads a waiting order only every 10 minutes (see `Options`), so an answer this quick was
/// woken by the notification.
const PROMPTLY: Duration = Duration::from_secs(10);

async fn wait_for_status(
    app: &TestApp,
    user: &str,
    order_id: Uuid,
    wait_seconds: i64,
) -> (StatusCode, Value, Duration) {
    let started = Instant::now();
    let (status, body) = app
        .post_json(
            "/order-status",
            Some(&token_for(user)),
            &json!({ "orderId": order_id, "waitSeconds": wait_seconds }),
        )
        .await;
    (status, body, started.elapsed())
}

/// Delivers the session's paid event after the waiters have had time to start waiting.
async fn pay_and_deliver_after(app: &TestApp, session_id: &str, delay: Duration) {
    let event = app.pay(session_id, PaymentResult::Card).remove(0);
    tokio::time::sleep(delay).await;
    let (status, body) = app.deliver(&event).await;
    assert_eq!(
        (status, body["outcome"].as_str()),
        (StatusCode::OK, Some("fulfilled")),
        "{body}"
    );
}

#[tokio::test]
async fn given_a_pending_order_when_the_webhook_lands_during_the_wait_then_it_answers_paid_promptly() {
    let app = TestApp::spawn().await;
    let (order_id, session_id) = app.checkout("alice", "credits_100").await;

    let ((status, body, took), ()) = tokio::join!(
        wait_for_status(&app, "alice", order_id, 20),
        pay_and_deliver_after(&app, &session_id, Duration::from_millis(300)),
    );

    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "paid");
    assert!(body["paidAt"].is_string());
    assert!(took < PROMPTLY, "answered after {took:?}");
}

#[tokio::test]
async fn given_a_pending_order_when_nothing_happens_then_it_answers_pending_when_the_wait_ends() {
    let app = TestApp::spawn().await;
    let (order_id, _) = app.checkout("alice", "credits_100").await;

    let (status, body, took) = wait_for_status(&app, "alice", order_id, 1).await;

    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "pending");
    assert!(took >= Duration::from_millis(900), "did not wait: {took:?}");
}

#[tokio::test]
async fn given_20_waiters_on_one_order_when_the_webhook_lands_then_all_of_them_answer_paid() {
    let app = TestApp::spawn().await;
    let (order_id, session_id) = app.checkout("alice", "credits_100").await;

    let waiters = join_all((0..20).map(|_| wait_for_status(&app, "alice", order_id, 20)));
    let (answers, ()) = tokio::join!(
        waiters,
        pay_and_deliver_after(&app, &session_id, Duration::from_millis(500))
    );

    for (status, body, took) in answers {
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["status"], "paid", "{body}");
        assert!(took < PROMPTLY, "answered after {took:?}");
    }
}

#[tokio::test]
async fn given_an_order_that_is_no_longer_pending_then_a_wait_returns_at_once() {
    let app = TestApp::spawn().await;
    let (order_id, session_id) = app.checkout("alice", "credits_100").await;
    pay_and_deliver_after(&app, &session_id, Duration::ZERO).await;

    let (status, body, took) = wait_for_status(&app, "alice", order_id, 20).await;

    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("paid")),
        "{body}"
    );
    assert!(took < PROMPTLY, "answered after {took:?}");
}

#[tokio::test]
async fn given_another_users_order_when_waiting_on_it_then_404_at_once() {
    let app = TestApp::spawn().await;
    let (order_id, _) = app.checkout("alice", "credits_100").await;

    let (status, body, took) = wait_for_status(&app, "bob", order_id, 20).await;

    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(error_code(&body), "order_not_found");
    assert!(took < PROMPTLY, "answered after {took:?}");
}

#[tokio::test]
async fn wait_seconds_outside_0_to_25_or_not_an_integer_is_a_400() {
    let app = TestApp::spawn().await;
    let (order_id, _) = app.checkout("alice", "credits_100").await;

    for wait in [json!(26), json!(-1), json!(1.5), json!("5"), json!(u64::MAX)] {
        let (status, body) = app
            .post_json(
                "/order-status",
                Some(&token_for("alice")),
                &json!({ "orderId": order_id, "waitSeconds": wait }),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "waitSeconds {wait}: {body}");
        assert!(error_code(&body).starts_with("invalid_"), "{body}");
    }
    let (status, body, _) = wait_for_status(&app, "alice", order_id, 0).await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("pending")));
}

#[tokio::test]
async fn given_a_paid_event_then_the_order_id_is_announced_on_order_status_and_a_duplicate_is_silent() {
    let app = TestApp::spawn().await;
    let (order_id, session_id) = app.checkout("alice", "credits_100").await;
    let mut listener = PgListener::connect_with(&app.db).await.unwrap();
    listener.listen(ORDER_STATUS_CHANNEL).await.unwrap();

    let event = app.pay(&session_id, PaymentResult::Card).remove(0);
    assert_eq!(app.deliver(&event).await.0, StatusCode::OK);
    assert_eq!(app.deliver(&event).await.0, StatusCode::OK);

    let first = tokio::time::timeout(PROMPTLY, listener.recv()).await.unwrap().unwrap();
    assert_eq!(first.payload(), order_id.to_string());
    let second = tokio::time::timeout(Duration::from_millis(500), listener.recv()).await;
    assert!(second.is_err(), "the duplicate delivery announced a change");
}

#[tokio::test]
async fn given_an_expired_session_then_the_cancellation_wakes_the_waiter() {
    let app = TestApp::spawn().await;
    let (order_id, session_id) = app.checkout("alice", "credits_100").await;
    let expired = app.emulator.expire_session(&session_id).unwrap();

    let deliver_later = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(app.deliver(&expired).await.0, StatusCode::OK);
    };
    let ((status, body, took), ()) = tokio::join!(wait_for_status(&app, "alice", order_id, 20), deliver_later);

    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("canceled")),
        "{body}"
    );
    assert!(took < PROMPTLY, "answered after {took:?}");
}

async fn terminate_listener(app: &TestApp) -> u64 {
    sqlx::query(
        "select pg_terminate_backend(pid) from pg_stat_activity
         where datname = $1 and application_name = $2",
    )
    .bind(&app.db_name)
    .bind(LISTENER_APPLICATION_NAME)
    .execute(&app.db)
    .await
    .unwrap()
    .rows_affected()
}

async fn listener_connections(app: &TestApp) -> i64 {
    sqlx::query_scalar("select count(*) from pg_stat_activity where datname = $1 and application_name = $2")
        .bind(&app.db_name)
        .bind(LISTENER_APPLICATION_NAME)
        .fetch_one(&app.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn given_the_listener_connection_dropped_then_a_webhook_still_wakes_a_waiter_and_it_listens_again() {
    let app = TestApp::spawn().await;
    let (order_id, session_id) = app.checkout("alice", "credits_100").await;
    assert_eq!(listener_connections(&app).await, 1);

    let drop_then_pay = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(terminate_listener(&app).await, 1, "found no listener to terminate");
        pay_and_deliver_after(&app, &session_id, Duration::from_millis(100)).await;
    };
    let ((status, body, took), ()) = tokio::join!(wait_for_status(&app, "alice", order_id, 20), drop_then_pay);

    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("paid")),
        "{body}"
    );
    assert!(took < PROMPTLY, "answered after {took:?}");

    let deadline = Instant::now() + PROMPTLY;
    while listener_connections(&app).await != 1 {
        assert!(Instant::now() < deadline, "the listener did not reconnect");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (order_id, session_id) = app.checkout("alice", "credits_100").await;
    let ((status, body, took), ()) = tokio::join!(
        wait_for_status(&app, "alice", order_id, 20),
        pay_and_deliver_after(&app, &session_id, Duration::from_millis(300)),
    );
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("paid")),
        "{body}"
    );
    assert!(
        took < PROMPTLY,
        "the new listener did not wake the waiter: answered after {took:?}"
    );
}

#[tokio::test]
async fn given_a_change_that_sent_no_notification_then_the_periodic_re_read_still_finds_it_before_the_wait_ends() {
    let app = TestApp::spawn_with(Options {
        order_status_reread: Duration::from_secs(1),
        ..Options::default()
    })
    .await;
    let (order_id, _) = app.checkout("alice", "credits_100").await;

    // As if the notification were lost on a listener connection that died without a sign.
    let pay_silently = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        sqlx::query("update orders set status = 'paid', paid_at = now() where id = $1")
            .bind(order_id)
            .execute(&app.db)
            .await
            .unwrap();
    };
    let ((status, body, took), ()) = tokio::join!(wait_for_status(&app, "alice", order_id, 20), pay_silently);

    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("paid")),
        "{body}"
    );
    assert!(took < PROMPTLY, "answered after {took:?}");
}
