//! User routes need a valid token, and an order is visible only to its owner.

use entitle::stripe_emulator::PaymentResult;
use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

use crate::helpers::{JWT_SECRET, TestApp, error_code, event_for, token_for, token_with, unix_now};

#[tokio::test]
async fn missing_malformed_expired_wrong_key_and_unsigned_tokens_are_401() {
    let app = TestApp::spawn().await;
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(json!({ "sub": "alice", "exp": unix_now() + 3600 }).to_string())
    );
    let cases = [
        ("missing", None),
        ("malformed", Some("not.a.jwt".to_owned())),
        (
            "expired",
            Some(token_with(
                json!({ "sub": "alice", "exp": unix_now() - 10 }),
                JWT_SECRET,
            )),
        ),
        ("no exp", Some(token_with(json!({ "sub": "alice" }), JWT_SECRET))),
        (
            "wrong key",
            Some(token_with(
                json!({ "sub": "alice", "exp": unix_now() + 3600 }),
                "another-secret-that-is-long-enough-too",
            )),
        ),
        ("alg none", Some(unsigned)),
        (
            "not valid yet",
            Some(token_with(
                json!({ "sub": "alice", "exp": unix_now() + 7200, "nbf": unix_now() + 3600 }),
                JWT_SECRET,
            )),
        ),
        (
            "empty sub",
            Some(token_with(json!({ "sub": "", "exp": unix_now() + 3600 }), JWT_SECRET)),
        ),
    ];
    for (name, token) in cases {
        let (status, body) = app
            .post_json(
                "/checkout-session",
                token.as_deref(),
                &json!({ "planId": "credits_100" }),
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{name}: {body}");
        assert_eq!(error_code(&body), "unauthorized");
        let (status, _) = app
            .post_json("/order-status", token.as_deref(), &json!({ "orderId": Uuid::new_v4() }))
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{name}");
        let (status, _) = app.get("/entitlements", token.as_deref()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{name}");
    }
    let basic = app
        .http
        .get(app.url("/entitlements"))
        .header("authorization", format!("Basic {}", token_for("alice")))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), StatusCode::UNAUTHORIZED);
    assert!(app.emulator.requests().is_empty());
}

#[tokio::test]
async fn another_users_order_is_indistinguishable_from_a_missing_one() {
    let app = TestApp::spawn().await;
    let (order_id, session_id) = app.checkout("alice", "credits_100").await;

    let owner = app.order_status("alice", order_id).await;
    assert_eq!(owner["orderId"], order_id.to_string());
    assert_eq!(owner["status"], "pending");
    assert_eq!(
        (
            owner["planId"].as_str(),
            owner["amount"].as_i64(),
            owner["currency"].as_str()
        ),
        (Some("credits_100"), Some(500), Some("usd"))
    );
    assert!(owner["createdAt"].is_string() && owner["paidAt"].is_null());

    let by_session = app
        .post_json(
            "/order-status",
            Some(&token_for("alice")),
            &json!({ "sessionId": session_id }),
        )
        .await;
    assert_eq!(by_session.0, StatusCode::OK);
    assert_eq!(by_session.1["orderId"], order_id.to_string());

    let bob = token_for("bob");
    let theirs = app
        .post_json("/order-status", Some(&bob), &json!({ "orderId": order_id }))
        .await;
    let theirs_by_session = app
        .post_json("/order-status", Some(&bob), &json!({ "sessionId": session_id }))
        .await;
    let unknown = app
        .post_json("/order-status", Some(&bob), &json!({ "orderId": Uuid::new_v4() }))
        .await;
    for (status, body) in [&theirs, &theirs_by_session, &unknown] {
        assert_eq!(*status, StatusCode::NOT_FOUND);
        assert_eq!(error_code(body), "order_not_found");
    }
    assert_eq!(theirs.1, unknown.1, "the two 404s must not differ");
}

#[tokio::test]
async fn order_status_needs_exactly_one_well_formed_key() {
    let app = TestApp::spawn().await;
    let token = token_for("alice");
    for body in [
        json!({}),
        json!({ "orderId": Uuid::new_v4(), "sessionId": "cs_test_1" }),
        json!({ "sessionId": "" }),
    ] {
        let (status, reply) = app.post_json("/order-status", Some(&token), &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(error_code(&reply), "invalid_body");
    }
    let (status, reply) = app
        .post_json("/order-status", Some(&token), &json!({ "orderId": "not-a-uuid" }))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&reply), "invalid_order_id");
}

/// Status lookups that arrive together share one query (src/order_lookup.rs). Each answer must
/// still be the asker's own order, and someone else's order a 404, even when the owner's lookup
/// and a stranger's lookup of the same order are in the same batch.
#[tokio::test]
async fn simultaneous_status_polls_each_get_their_own_order_and_never_someone_elses() {
    let app = TestApp::spawn().await;
    let users: Vec<String> = (0..12).map(|i| format!("poller-{i}")).collect();
    let mut orders = Vec::new();
    for (i, user) in users.iter().enumerate() {
        let (order_id, session_id) = app.checkout(user, "credits_100").await;
        if i % 2 == 0 {
            app.pay(&session_id, PaymentResult::Card);
            let (status, _) = app
                .deliver(&event_for(&app, "checkout.session.completed", &session_id))
                .await;
            assert_eq!(status, StatusCode::OK);
        }
        orders.push(order_id);
    }

    // Every user asks, ten times over and all at once, for their own order and their neighbour's.
    let asks: Vec<(usize, usize)> = (0..10)
        .flat_map(|_| (0..users.len()).flat_map(|i| [(i, i), (i, (i + 1) % users.len())]))
        .collect();
    let answers = join_all(asks.iter().map(|&(asker, owner)| {
        let (app, token, body) = (&app, token_for(&users[asker]), json!({ "orderId": orders[owner] }));
        async move { app.post_json("/order-status", Some(&token), &body).await }
    }))
    .await;

    for (&(asker, owner), (status, body)) in asks.iter().zip(&answers) {
        if asker == owner {
            assert_eq!(*status, StatusCode::OK, "{body}");
            assert_eq!(body["orderId"], orders[owner].to_string());
            let expected = if owner % 2 == 0 { "paid" } else { "pending" };
            assert_eq!(body["status"], expected, "{} asked for their own order", users[asker]);
        } else {
            assert_eq!(
                *status,
                StatusCode::NOT_FOUND,
                "{} saw {}'s order: {body}",
                users[asker],
                users[owner]
            );
            assert_eq!(error_code(body), "order_not_found");
        }
    }
}
