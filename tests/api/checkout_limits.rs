//! Opening checkouts is bounded per user (in the database, so across instances and concurrent
//! requests) and per process (a token bucket on Stripe session creation). Past either bound the
//! answer is 429 with `Retry-After`, and nothing was written or asked of Stripe.

use entitle::config::{CheckoutLimits, Rate};
use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Options, TestApp, error_code, token_for};

/// One `POST /checkout-session`: status, `Retry-After` in seconds if any, body.
async fn open_checkout(app: &TestApp, user: &str) -> (StatusCode, Option<u64>, Value) {
    let response = app
        .http
        .post(app.url("/checkout-session"))
        .bearer_auth(token_for(user))
        .json(&json!({ "planId": "credits_100" }))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    (status, retry_after, response.json().await.unwrap())
}

fn assert_too_many(answer: &(StatusCode, Option<u64>, Value), allowed_wait: std::ops::RangeInclusive<u64>) {
    let (status, retry_after, body) = answer;
    assert_eq!(*status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(error_code(body), "too_many_checkouts");
    let retry_after = retry_after.expect("a Retry-After header");
    assert!(allowed_wait.contains(&retry_after), "Retry-After: {retry_after}");
}

fn session_creations(app: &TestApp) -> usize {
    app.emulator
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path == "/v1/checkout/sessions")
        .count()
}

async fn orders_of(app: &TestApp, user: &str) -> i64 {
    sqlx::query_scalar("select count(*) from orders where user_id = $1")
        .bind(user)
        .fetch_one(&app.db)
        .await
        .unwrap()
}

fn with_limits(per_user_per_minute: u32, sessions: Rate) -> Options {
    Options {
        checkout_limits: CheckoutLimits {
            per_user_per_minute,
            sessions,
        },
        ..Options::default()
    }
}

#[tokio::test]
async fn given_the_default_limit_when_one_user_opens_30_checkouts_at_once_then_10_open_and_others_are_unaffected() {
    let app = TestApp::spawn_with(Options {
        checkout_limits: CheckoutLimits::default(),
        ..Options::default()
    })
    .await;
    let alice = join_all((0..30).map(|_| open_checkout(&app, "alice")));
    let (answers, bob) = futures::join!(alice, open_checkout(&app, "bob"));

    let opened = answers.iter().filter(|(status, ..)| *status == StatusCode::OK).count();
    assert_eq!(opened, 10);
    for refused in answers.iter().filter(|(status, ..)| *status != StatusCode::OK) {
        assert_too_many(refused, 1..=60);
    }
    assert_eq!(bob.0, StatusCode::OK, "{}", bob.2);
    assert_eq!(orders_of(&app, "alice").await, 10);
    assert_eq!(session_creations(&app), 11, "no Stripe call for a refused checkout");
}

#[tokio::test]
async fn given_a_user_at_the_limit_then_the_window_slides_whatever_became_of_the_orders() {
    let app = TestApp::spawn_with(with_limits(2, CheckoutLimits::default().sessions)).await;
    let (first, _) = app.checkout("alice", "credits_100").await;
    app.checkout("alice", "credits_100").await;
    // An order that ended still counts, but only while it is in the window.
    sqlx::query("update orders set status = 'canceled', created_at = now() - interval '50 seconds' where id = $1")
        .bind(first)
        .execute(&app.db)
        .await
        .unwrap();
    // Room comes back when the older of the two leaves the window, in about 10 s.
    assert_too_many(&open_checkout(&app, "alice").await, 1..=10);
    assert_eq!(orders_of(&app, "alice").await, 2);

    sqlx::query("update orders set created_at = now() - interval '61 seconds' where user_id = 'alice'")
        .execute(&app.db)
        .await
        .unwrap();
    let (status, _, body) = open_checkout(&app, "alice").await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn given_a_tiny_session_bucket_when_it_is_spent_then_every_user_waits_for_the_next_token() {
    // One token back every 1000 s: none arrives while the test runs, however slow the machine.
    let rate = Rate {
        per_second: 0.001,
        burst: 2,
    };
    let app = TestApp::spawn_with(with_limits(1000, rate)).await;
    app.checkout("alice", "credits_100").await;
    app.checkout("bob", "credits_100").await;

    assert_too_many(&open_checkout(&app, "alice").await, 900..=1000);
    assert_too_many(&open_checkout(&app, "carol").await, 900..=1000);
    assert_eq!(app.order_count().await, 2, "a refused checkout writes no order");
    assert_eq!(session_creations(&app), 2);
}
