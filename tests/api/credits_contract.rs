//! The server API's contract as the issue states it: who may call it, what a bad request gets (a
//! 400 naming the field, and nothing written), the shapes of the answers, idempotent replays, and
//! reservations from hold to commit, release or expiry.

use chrono::{Duration, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{API_KEY, TestApp, error_code, rfc3339, sleep_past, token_for, with_time_to_spare};

const MARGIN: std::time::Duration = std::time::Duration::from_millis(400);

#[tokio::test]
async fn only_an_api_key_opens_the_server_api_and_only_a_user_token_opens_the_user_routes() {
    let app = TestApp::spawn().await;
    app.grant_credits("alice", 50).await;
    let before = app.credit_rows().await;
    let key = format!("Bearer {API_KEY}");
    let jwt = format!("Bearer {}", token_for("alice"));
    let usage = json!({"userId": "alice", "credits": 5, "idempotencyKey": "auth-1"});
    let grant = json!({"userId": "alice", "credits": 5, "idempotencyKey": "auth-g", "reason": "r"});
    let refused = [
        None,
        Some(""),
        Some("Bearer"),
        Some("Bearer "),
        Some("Bearer garbage"),
        Some(API_KEY),
        Some(&*format!("Basic {API_KEY}")),
        Some(&*format!("Bearer {API_KEY}x")),
        Some(&*format!("Bearer {}", &API_KEY[..API_KEY.len() - 1])),
        Some(&*jwt),
    ];
    for auth in refused {
        for (method, path, body) in [
            (Method::GET, "/v1/users/alice/balance", None),
            (
                Method::POST,
                "/v1/check",
                Some(json!({"userId": "alice", "credits": 1})),
            ),
            (Method::POST, "/v1/usage", Some(usage.clone())),
            (
                Method::POST,
                "/v1/reservations",
                Some(json!({"userId": "alice", "credits": 5, "idempotencyKey": "auth-r"})),
            ),
            (
                Method::POST,
                "/v1/reservations/00000000-0000-0000-0000-000000000000/commit",
                Some(json!({})),
            ),
            (
                Method::POST,
                "/v1/reservations/00000000-0000-0000-0000-000000000000/release",
                Some(json!({})),
            ),
            (Method::POST, "/v1/grants", Some(grant.clone())),
        ] {
            let (status, body) = app.request_with_auth(method, path, auth, body.as_ref()).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{path} with {auth:?}: {body}");
            assert_eq!(error_code(&body), "unauthorized");
        }
    }
    assert_eq!(app.credit_rows().await, before, "a refused call wrote something");

    // The key is not a user's token, wherever a user's token goes.
    for (method, path, body) in [
        (Method::GET, "/entitlements", None),
        (
            Method::POST,
            "/checkout-session",
            Some(json!({"planId": "credits_100"})),
        ),
        (
            Method::POST,
            "/order-status",
            Some(json!({"orderId": "00000000-0000-0000-0000-000000000000"})),
        ),
    ] {
        let (status, body) = app.request_with_auth(method, path, Some(&key), body.as_ref()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path} with the API key: {body}");
    }
    assert_eq!(app.order_count().await, 0);

    // And the right credentials work, the scheme in any case.
    let (status, body) = app
        .request_with_auth(
            Method::GET,
            "/v1/users/alice/balance",
            Some(&format!("bearer {API_KEY}")),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = app.get("/entitlements", Some(&token_for("alice"))).await;
    assert_eq!(status, StatusCode::OK);
}

/// Each bad request: a 400 whose message names the field, and not a row or a credit changed.
async fn refused(app: &TestApp, path: &str, body: &Value, field: &str) {
    let before = app.credit_rows().await;
    let (status, replayed, answer) = app.api_post(path, body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {body}: {answer}");
    assert!(!replayed);
    let code = error_code(&answer);
    assert!(code == "invalid_body" || code == "invalid_json", "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(field),
        "{path} {body}: the message does not name `{field}`: {message}"
    );
    assert_eq!(app.credit_rows().await, before, "{path} {body} wrote something");
}

#[tokio::test]
async fn bad_input_is_a_400_naming_the_field_and_changes_nothing() {
    let app = TestApp::spawn().await;
    app.grant_credits("alice", 100).await;
    let (status, _, held) = app.reserve("alice", 10, "held", None).await;
    assert_eq!(status, StatusCode::OK, "{held}");
    let long_user = "u".repeat(256);
    let long_key = "k".repeat(256);
    let long_text = "d".repeat(1001);
    let big_metadata = json!({ "blob": "x".repeat(9000) });

    let usage = |patch: Value| {
        let mut body = json!({"userId": "alice", "credits": 1, "idempotencyKey": "u-bad"});
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                body.as_object_mut().unwrap().remove(k);
            } else {
                body[k] = v.clone();
            }
        }
        body
    };
    for (patch, field) in [
        (json!({"userId": null}), "userId"),
        (json!({"userId": ""}), "userId"),
        (json!({"userId": long_user}), "userId"),
        (json!({"userId": 7}), "userId"),
        (json!({"userId": "a\u{0}b"}), "userId"),
        (json!({"credits": null}), "credits"),
        (json!({"credits": 0}), "credits"),
        (json!({"credits": -5}), "credits"),
        (json!({"credits": 1.5}), "credits"),
        (json!({"credits": "5"}), "credits"),
        (json!({"credits": 1_000_000_000_001i64}), "credits"),
        (json!({"credits": 1e30}), "credits"),
        (json!({"idempotencyKey": null}), "idempotencyKey"),
        (json!({"idempotencyKey": ""}), "idempotencyKey"),
        (json!({"idempotencyKey": long_key}), "idempotencyKey"),
        (json!({"idempotencyKey": 12}), "idempotencyKey"),
        (json!({"description": long_text}), "description"),
        (json!({"description": "a\u{0}b"}), "description"),
        (json!({"description": 5}), "description"),
        (json!({"metadata": [1, 2]}), "metadata"),
        (json!({"metadata": "text"}), "metadata"),
        (json!({"metadata": big_metadata}), "metadata"),
        (json!({"metadata": {"a": "\u{0}"}}), "metadata"),
        (json!({"user_id": "alice"}), "user_id"),
        (json!({"extra": true}), "extra"),
    ] {
        refused(&app, "/v1/usage", &usage(patch), field).await;
    }

    let reservation = json!({"userId": "alice", "credits": 1, "idempotencyKey": "r-bad"});
    for (patch, field) in [
        (json!({"ttlSeconds": 0}), "ttlSeconds"),
        (json!({"ttlSeconds": -1}), "ttlSeconds"),
        (json!({"ttlSeconds": 86_401}), "ttlSeconds"),
        (json!({"ttlSeconds": 1.5}), "ttlSeconds"),
        (json!({"credits": 0}), "credits"),
        (json!({"userId": ""}), "userId"),
        (json!({"idempotencyKey": ""}), "idempotencyKey"),
    ] {
        let mut body = reservation.clone();
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        refused(&app, "/v1/reservations", &body, field).await;
    }

    let grant = json!({"userId": "alice", "credits": 5, "idempotencyKey": "g-bad", "reason": "promo"});
    let past = rfc3339(Utc::now() - Duration::seconds(5));
    for (patch, field) in [
        (json!({"credits": 0}), "credits"),
        (json!({"credits": -1}), "credits"),
        (json!({"reason": ""}), "reason"),
        (json!({"reason": "   "}), "reason"),
        (json!({"reason": long_text}), "reason"),
        (json!({"expiresAt": past}), "expiresAt"),
        (json!({"expiresAt": "tomorrow"}), "expiresAt"),
        (json!({"expiresAt": 1_900_000_000}), "expiresAt"),
        (json!({"userId": long_user}), "userId"),
    ] {
        let mut body = grant.clone();
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        refused(&app, "/v1/grants", &body, field).await;
    }
    let mut no_reason = grant.clone();
    no_reason.as_object_mut().unwrap().remove("reason");
    refused(&app, "/v1/grants", &no_reason, "reason").await;

    for (body, field) in [
        (json!({"userId": "alice", "credits": -1}), "credits"),
        (json!({"userId": "alice", "credits": "1"}), "credits"),
        (json!({"userId": "", "credits": 1}), "userId"),
        (json!({"userId": "alice", "entitlement": ""}), "entitlement"),
        (json!({"userId": "alice"}), "credits"),
        (json!({"credits": 1}), "userId"),
    ] {
        refused(&app, "/v1/check", &body, field).await;
    }

    let id = held["reservationId"].as_str().unwrap();
    let commit = format!("/v1/reservations/{id}/commit");
    for (body, field) in [
        (json!({"credits": -1}), "credits"),
        (json!({"credits": 11}), "credits"),
        (json!({"credits": "3"}), "credits"),
        (json!({"credits": 2.5}), "credits"),
        (json!({"credit": 3}), "credit"),
    ] {
        refused(&app, &commit, &body, field).await;
    }
    // Still held, all of it: the refusals did not settle it.
    let balance = app.consistent_balance("alice").await;
    assert_eq!(balance["credits"]["reserved"], 10, "{balance}");
    assert_eq!(balance["credits"]["available"], 90, "{balance}");

    // The user id in the path follows the same rule.
    let (status, body) = app.api_get(&format!("/v1/users/{long_user}/balance")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("userId"), "{body}");

    // Not JSON at all.
    let before = app.credit_rows().await;
    let response = app
        .http
        .post(app.url("/v1/usage"))
        .bearer_auth(API_KEY)
        .header("content-type", "application/json")
        .body("{\"userId\": \"alice\",")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(app.credit_rows().await, before);
}

#[tokio::test]
async fn the_balance_of_an_unknown_user_is_zero_and_writes_nothing() {
    let app = TestApp::spawn().await;
    let before = app.credit_rows().await;
    let balance = app.balance("nobody").await;
    assert_eq!(
        balance,
        json!({
            "userId": "nobody",
            "credits": {"available": 0, "reserved": 0, "overdrawn": 0},
            "grants": [],
            "entitlements": [],
        })
    );
    let (status, _, body) = app
        .api_post(
            "/v1/check",
            &json!({"userId": "nobody", "credits": 1, "entitlement": "pro"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"allowed": false, "available": 0, "entitlement": {"key": "pro", "active": false}})
    );
    // A user id any token's `sub` could carry, however odd, is addressable.
    let odd = "user with spaces/é/😀";
    let encoded: String = odd
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let balance = app.balance(&encoded).await;
    assert_eq!(balance["userId"], odd, "{balance}");
    let max = "m".repeat(255);
    assert_eq!(app.balance(&max).await["credits"]["available"], 0);
    assert_eq!(app.credit_rows().await, before, "reading a balance wrote something");
}

/// A token's `sub` may be any 1 to 255 bytes; whoever bought credits under it is someone the
/// server API can name.
#[tokio::test]
async fn any_user_id_a_token_may_carry_is_one_the_api_can_address() {
    let app = TestApp::spawn().await;
    let odd = "tab\there\u{7f}";
    app.fulfilled_purchase(odd, "credits_100").await;
    assert_eq!(app.credits(odd).await, 100);
    let encoded = odd.replace('\t', "%09").replace('\u{7f}', "%7F");
    let (status, balance) = app.api_get(&format!("/v1/users/{encoded}/balance")).await;
    assert_eq!(status, StatusCode::OK, "{balance}");
    assert_eq!(balance["userId"], odd);
    assert_eq!(balance["credits"]["available"], 100);
    let (status, _, body) = app.usage(odd, 40, "odd-1").await;
    assert_eq!(
        (status, body["available"].as_i64()),
        (StatusCode::OK, Some(60)),
        "{body}"
    );
    assert_eq!(app.credits(odd).await, 60);
    assert_eq!(app.ledger_sum(odd).await, 60);
}

#[tokio::test]
async fn the_balance_shows_the_grants_in_spend_order_and_the_entitlements_as_the_user_sees_them() {
    let app = TestApp::spawn().await;
    let purchase = app.fulfilled_purchase("alice", "pro_lifetime").await;
    let late = rfc3339(Utc::now() + Duration::days(30));
    let soon = rfc3339(Utc::now() + Duration::days(2));
    let manual = app.grant_expiring("alice", 20, &late).await;
    let sooner = app.grant_expiring("alice", 5, &soon).await;
    let never = app.grant_credits("alice", 7).await;

    let balance = app.consistent_balance("alice").await;
    assert_eq!(balance["userId"], "alice");
    assert_eq!(
        balance["credits"],
        json!({"available": 132, "reserved": 0, "overdrawn": 0})
    );
    let grants = balance["grants"].as_array().unwrap();
    let ids: Vec<&str> = grants.iter().map(|g| g["id"].as_str().unwrap()).collect();
    // The one expiring first, then the next; those that never expire by age: the purchase, then
    // the manual grant made after it.
    assert_eq!(ids.len(), 4, "{balance}");
    assert_eq!(ids[0], sooner["id"].as_str().unwrap());
    assert_eq!(ids[1], manual["id"].as_str().unwrap());
    assert_eq!(ids[3], never);
    assert_eq!(
        (grants[2]["source"].as_str(), grants[2]["granted"].as_i64()),
        (Some("purchase"), Some(100))
    );
    assert_eq!(grants[2]["expiresAt"], Value::Null);
    assert_eq!(grants[0]["source"], "manual");
    assert_eq!(grants[0]["expiresAt"].as_str().unwrap().get(..19), soon.get(..19));
    for grant in grants {
        for field in ["id", "source", "granted", "remaining", "expiresAt"] {
            assert!(grant.get(field).is_some(), "{field} missing from {grant}");
        }
    }

    let holdings = app.holdings("alice").await;
    assert_eq!(balance["entitlements"], holdings["entitlements"]);
    assert_eq!(balance["entitlements"][0]["key"], "pro_lifetime");
    assert_eq!(holdings["credits"], 132);

    // Spending follows that order: the sooner grant, then the later one, then the oldest.
    let (status, _, body) = app.usage("alice", 30, "spend-30").await;
    assert_eq!(
        (status, body["available"].as_i64()),
        (StatusCode::OK, Some(102)),
        "{body}"
    );
    let balance = app.consistent_balance("alice").await;
    let remaining: Vec<(String, i64)> = balance["grants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["id"].as_str().unwrap().to_owned(), g["remaining"].as_i64().unwrap()))
        .collect();
    let purchase_grant = &ids[2];
    assert_eq!(
        remaining,
        vec![((*purchase_grant).to_owned(), 95), (never.clone(), 7)],
        "{balance}"
    );
    let (status, _, _) = app.usage("alice", 101, "spend-101").await;
    assert_eq!(status, StatusCode::OK);
    let balance = app.consistent_balance("alice").await;
    assert_eq!(balance["grants"].as_array().unwrap().len(), 1, "{balance}");
    assert_eq!(balance["grants"][0]["remaining"], 1);
    let _ = purchase;
}

#[tokio::test]
async fn a_check_says_whether_credits_and_an_entitlement_allow_and_writes_nothing() {
    let app = TestApp::spawn().await;
    app.fulfilled_purchase("alice", "pro_lifetime").await;
    let before = app.credit_rows().await;
    let app = &app;
    let check = |body: Value| async move {
        let (status, replayed, answer) = app.api_post("/v1/check", &body).await;
        assert_eq!((status, replayed), (StatusCode::OK, false), "{body}: {answer}");
        answer
    };
    let cases = [
        (
            json!({"userId": "alice", "credits": 100}),
            json!({"allowed": true, "available": 100, "entitlement": null}),
        ),
        (
            json!({"userId": "alice", "credits": 101}),
            json!({"allowed": false, "available": 100, "entitlement": null}),
        ),
        (
            json!({"userId": "alice", "credits": 0}),
            json!({"allowed": true, "available": 100, "entitlement": null}),
        ),
        (
            json!({"userId": "alice", "entitlement": "pro_lifetime"}),
            json!({"allowed": true, "available": 100, "entitlement": {"key": "pro_lifetime", "active": true}}),
        ),
        (
            json!({"userId": "alice", "entitlement": "pro"}),
            json!({"allowed": false, "available": 100, "entitlement": {"key": "pro", "active": false}}),
        ),
        (
            json!({"userId": "alice", "credits": 50, "entitlement": "pro_lifetime"}),
            json!({"allowed": true, "available": 100, "entitlement": {"key": "pro_lifetime", "active": true}}),
        ),
        (
            json!({"userId": "alice", "credits": 500, "entitlement": "pro_lifetime"}),
            json!({"allowed": false, "available": 100, "entitlement": {"key": "pro_lifetime", "active": true}}),
        ),
        (
            json!({"userId": "alice", "credits": 1, "entitlement": "pro"}),
            json!({"allowed": false, "available": 100, "entitlement": {"key": "pro", "active": false}}),
        ),
    ];
    for (body, expected) in cases {
        assert_eq!(check(body.clone()).await, expected, "{body}");
    }
    assert_eq!(app.credit_rows().await, before, "a check wrote something");

    // What is reserved is not available to a check either.
    let (status, _, _) = app.reserve("alice", 60, "r", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(check(json!({"userId": "alice", "credits": 41})).await["allowed"], false);
    assert_eq!(check(json!({"userId": "alice", "credits": 40})).await["allowed"], true);
    app.consistent_balance("alice").await;
}

#[tokio::test]
async fn a_replayed_usage_answers_exactly_as_the_first_time_even_after_the_balance_moved() {
    let app = TestApp::spawn().await;
    app.grant_credits("alice", 100).await;
    let usage = json!({
        "userId": "alice", "credits": 30, "idempotencyKey": "job-1",
        "description": "render", "metadata": {"job": {"id": 7, "tags": ["a", "b"]}, "attempt": 1},
    });
    let (status, replayed, first) = app.api_post("/v1/usage", &usage).await;
    assert_eq!((status, replayed), (StatusCode::OK, false), "{first}");
    assert_eq!(first["credits"], 30);
    assert_eq!(first["available"], 70);
    assert!(first["usageId"].is_string());

    // Other things happen to the balance.
    let (status, _, _) = app.usage("alice", 10, "job-2").await;
    assert_eq!(status, StatusCode::OK);
    app.grant_credits("alice", 5).await;
    let rows = app.credit_rows().await;

    // The same request again, its metadata's keys in another order: the first answer, replayed.
    let same = json!({
        "metadata": {"attempt": 1, "job": {"tags": ["a", "b"], "id": 7}},
        "idempotencyKey": "job-1", "description": "render", "credits": 30, "userId": "alice",
    });
    for _ in 0..3 {
        let (status, replayed, again) = app.api_post("/v1/usage", &same).await;
        assert_eq!((status, replayed), (StatusCode::OK, true), "{again}");
        assert_eq!(again, first, "a replay answers what the first call answered");
    }
    assert_eq!(app.credit_rows().await, rows, "a replay wrote something");

    // The same key with anything else different: 409, nothing written.
    for (field, value) in [
        ("credits", json!(31)),
        ("description", json!("other")),
        ("description", Value::Null),
        ("metadata", json!({"job": {"id": 8, "tags": ["a", "b"]}, "attempt": 1})),
        ("metadata", Value::Null),
        ("userId", json!("bob")),
    ] {
        let mut other = usage.clone();
        if value.is_null() {
            other.as_object_mut().unwrap().remove(field);
        } else {
            other[field] = value;
        }
        let (status, replayed, body) = app.api_post("/v1/usage", &other).await;
        assert_eq!(
            (status, error_code(&body)),
            (StatusCode::CONFLICT, "idempotency_key_reused"),
            "{field}: {body}"
        );
        assert!(!replayed);
    }
    assert_eq!(app.credit_rows().await, rows);
    let balance = app.consistent_balance("alice").await;
    assert_eq!(balance["credits"]["available"], 65);
    assert_eq!(app.balance("bob").await["credits"]["available"], 0);

    // A key is a usage's only, not a reservation's: the same string there is another key.
    let (status, replayed, body) = app.reserve("alice", 5, "job-1", None).await;
    assert_eq!((status, replayed), (StatusCode::OK, false), "{body}");
}

#[tokio::test]
async fn a_refused_usage_says_how_many_are_available_and_holds_no_key() {
    let app = TestApp::spawn().await;
    // Nothing at all: refused, and the user is not even written down.
    let before = app.credit_rows().await;
    let (status, _, body) = app.usage("carol", 1, "c-1").await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::PAYMENT_REQUIRED, "insufficient_credits")
    );
    assert!(
        body["error"]["message"].as_str().unwrap().contains("0 available"),
        "{body}"
    );
    let (status, _, _) = app.reserve("carol", 1, "c-r0", None).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(app.credit_rows().await, before, "a refusal wrote something");

    app.grant_credits("carol", 40).await;
    let (status, _, _) = app.reserve("carol", 15, "c-r", None).await;
    assert_eq!(status, StatusCode::OK);
    let before = app.credit_rows().await;
    let (status, _, body) = app.usage("carol", 26, "c-2").await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("25 available"),
        "{body}"
    );
    let (status, _, body) = app.reserve("carol", 26, "c-r2", None).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::PAYMENT_REQUIRED, "insufficient_credits")
    );
    assert_eq!(app.credit_rows().await, before);
    // Exactly what is available may be spent.
    let (status, _, body) = app.usage("carol", 25, "c-2").await;
    assert_eq!(
        (status, body["available"].as_i64()),
        (StatusCode::OK, Some(0)),
        "{body}"
    );
    let balance = app.consistent_balance("carol").await;
    assert_eq!(
        balance["credits"],
        json!({"available": 0, "reserved": 15, "overdrawn": 0})
    );
}

#[tokio::test]
async fn a_reservation_is_committed_or_released_once_and_each_settlement_answers_again_the_same() {
    let app = TestApp::spawn().await;
    app.grant_credits("alice", 100).await;
    let (status, replayed, held) = app.reserve("alice", 40, "r-1", Some(600)).await;
    assert_eq!((status, replayed), (StatusCode::OK, false), "{held}");
    assert_eq!(held["credits"], 40);
    let id = held["reservationId"].as_str().unwrap().to_owned();
    let expires = chrono::DateTime::parse_from_rfc3339(held["expiresAt"].as_str().unwrap()).unwrap();
    let ttl = (expires.with_timezone(&Utc) - Utc::now()).num_seconds();
    assert!((590..=600).contains(&ttl), "{held}");

    // The same request replays it; another with the key is refused.
    let (status, replayed, again) = app.reserve("alice", 40, "r-1", Some(600)).await;
    assert_eq!((status, replayed), (StatusCode::OK, true), "{again}");
    assert_eq!(again, held);
    let (status, _, body) = app.reserve("alice", 40, "r-1", None).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::CONFLICT, "idempotency_key_reused")
    );
    let balance = app.consistent_balance("alice").await;
    assert_eq!(
        balance["credits"],
        json!({"available": 60, "reserved": 40, "overdrawn": 0})
    );

    // Commit part of it: that is spent, the rest comes back.
    let (status, committed) = app.commit_reservation(&id, Some(15)).await;
    assert_eq!(status, StatusCode::OK, "{committed}");
    assert_eq!(committed["reservationId"], id.as_str());
    assert_eq!(committed["status"], "committed");
    assert_eq!(committed["spent"], 15);
    assert_eq!(committed["credits"], 40);
    let rows = app.credit_rows().await;
    let (status, again) = app.commit_reservation(&id, Some(15)).await;
    assert_eq!((status, &again), (StatusCode::OK, &committed));
    assert_eq!(app.credit_rows().await, rows);
    let (status, body) = app.commit_reservation(&id, Some(16)).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::CONFLICT, "reservation_committed")
    );
    let (status, body) = app.release_reservation(&id).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::CONFLICT, "reservation_committed")
    );
    assert_eq!(app.credit_rows().await, rows);
    let balance = app.consistent_balance("alice").await;
    assert_eq!(
        balance["credits"],
        json!({"available": 85, "reserved": 0, "overdrawn": 0})
    );

    // Commit without an amount spends all of it.
    let (_, _, all) = app.reserve("alice", 20, "r-2", None).await;
    let all_id = all["reservationId"].as_str().unwrap();
    let (status, body) = app.commit_reservation(all_id, None).await;
    assert_eq!((status, body["spent"].as_i64()), (StatusCode::OK, Some(20)), "{body}");
    // An empty body is the same as `{}`.
    let response = app
        .http
        .post(app.url(&format!("/v1/reservations/{all_id}/commit")))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    // Release hands all of it back, and again answers the same.
    let (_, _, freed) = app.reserve("alice", 30, "r-3", None).await;
    let freed_id = freed["reservationId"].as_str().unwrap();
    assert_eq!(app.balance("alice").await["credits"]["available"], 35);
    let (status, released) = app.release_reservation(freed_id).await;
    assert_eq!(status, StatusCode::OK, "{released}");
    assert_eq!(
        (released["status"].as_str(), released["spent"].as_i64()),
        (Some("released"), Some(0))
    );
    let rows = app.credit_rows().await;
    let (status, again) = app.release_reservation(freed_id).await;
    assert_eq!((status, &again), (StatusCode::OK, &released));
    let (status, body) = app.commit_reservation(freed_id, None).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::CONFLICT, "reservation_released")
    );
    assert_eq!(app.credit_rows().await, rows);

    // A commit of nothing spends nothing and releases it all.
    let (_, _, zero) = app.reserve("alice", 5, "r-4", None).await;
    let (status, body) = app
        .commit_reservation(zero["reservationId"].as_str().unwrap(), Some(0))
        .await;
    assert_eq!((status, body["spent"].as_i64()), (StatusCode::OK, Some(0)), "{body}");

    let balance = app.consistent_balance("alice").await;
    assert_eq!(
        balance["credits"],
        json!({"available": 65, "reserved": 0, "overdrawn": 0})
    );
    let kinds: Vec<(String, i64)> = app.ledger_of("alice").await;
    assert_eq!(
        kinds,
        [
            ("manual_grant", 100),
            ("reservation", -40),
            ("reservation_release", 25),
            ("reservation", -20),
            ("reservation", -30),
            ("reservation_release", 30),
            ("reservation", -5),
            ("reservation_release", 5),
        ]
        .map(|(k, d)| (k.to_owned(), d))
    );
}

#[tokio::test]
async fn an_unknown_reservation_is_a_404_whatever_its_id() {
    let app = TestApp::spawn().await;
    app.grant_credits("alice", 10).await;
    let (_, _, usage) = app.usage("alice", 1, "u").await;
    let usage_id = usage["usageId"].as_str().unwrap().to_owned();
    for id in [
        "00000000-0000-0000-0000-000000000000",
        uuid::Uuid::new_v4().to_string().as_str(),
        "not-a-uuid",
        // A usage is not a reservation.
        usage_id.as_str(),
    ] {
        let (status, body) = app.commit_reservation(id, None).await;
        assert_eq!(
            (status, error_code(&body)),
            (StatusCode::NOT_FOUND, "reservation_not_found"),
            "{id}"
        );
        let (status, body) = app.release_reservation(id).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{id}: {body}");
    }
    assert_eq!(app.consistent_balance("alice").await["credits"]["available"], 9);
}

#[tokio::test]
async fn a_reservation_past_its_ttl_releases_itself_and_can_no_longer_be_committed() {
    let app = TestApp::spawn().await;
    app.grant_credits("alice", 50).await;
    let (status, _, held) = app.reserve("alice", 30, "short", Some(1)).await;
    assert_eq!(status, StatusCode::OK, "{held}");
    let id = held["reservationId"].as_str().unwrap().to_owned();
    let (_, _, kept) = app.reserve("alice", 10, "long", None).await;
    let reserved = app.balance("alice").await["credits"]["reserved"].clone();
    let short_until = chrono::DateTime::parse_from_rfc3339(held["expiresAt"].as_str().unwrap()).unwrap();
    if Utc::now() < short_until {
        // Both held while the short one still ran (always, unless the machine is very slow).
        assert_eq!(reserved, 40);
    }
    sleep_past(held["expiresAt"].as_str().unwrap(), MARGIN).await;

    let balance = app.consistent_balance("alice").await;
    assert_eq!(
        balance["credits"],
        json!({"available": 40, "reserved": 10, "overdrawn": 0})
    );
    let rows = app.credit_rows().await;
    let (status, body) = app.commit_reservation(&id, None).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::CONFLICT, "reservation_expired")
    );
    let (status, body) = app.commit_reservation(&id, Some(5)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    // Releasing what released itself is done already.
    let (status, body) = app.release_reservation(&id).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("released")),
        "{body}"
    );
    assert_eq!(body["spent"], 0);
    assert_eq!(app.credit_rows().await, rows);
    // A replay of the reservation names it as it is; nothing is held again.
    let (status, replayed, again) = app.reserve("alice", 30, "short", Some(1)).await;
    assert_eq!((status, replayed), (StatusCode::OK, true), "{again}");
    assert_eq!(again["reservationId"], id.as_str());
    assert_eq!(app.credit_rows().await, rows);

    // The one with the default TTL is still held and commits.
    let (status, body) = app
        .commit_reservation(kept["reservationId"].as_str().unwrap(), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let balance = app.consistent_balance("alice").await;
    assert_eq!(
        balance["credits"],
        json!({"available": 40, "reserved": 0, "overdrawn": 0})
    );
}

#[tokio::test]
async fn credits_held_past_their_ttl_can_be_spent_by_the_next_debit_at_once() {
    let app = TestApp::spawn().await;
    app.grant_credits("alice", 50).await;
    let (_, _, held) = app.reserve("alice", 30, "short", Some(1)).await;
    sleep_past(held["expiresAt"].as_str().unwrap(), MARGIN).await;
    // Nothing read the balance since: the debit itself finds the hold gone.
    let (status, _, body) = app.usage("alice", 50, "all").await;
    assert_eq!(
        (status, body["available"].as_i64()),
        (StatusCode::OK, Some(0)),
        "{body}"
    );
    let (status, _, body) = app.reserve("alice", 1, "more", None).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{body}");
    app.consistent_balance("alice").await;
}

#[tokio::test]
async fn a_manual_grant_is_made_once_per_key_and_replays_its_first_answer() {
    let app = TestApp::spawn().await;
    let expires = rfc3339(Utc::now() + Duration::days(10));
    let grant = json!({
        "userId": "alice", "credits": 25, "idempotencyKey": "promo-1", "reason": "welcome", "expiresAt": expires,
    });
    let (status, replayed, first) = app.api_post("/v1/grants", &grant).await;
    assert_eq!((status, replayed), (StatusCode::OK, false), "{first}");
    assert_eq!(first["remaining"], 25);
    assert!(first["id"].is_string());
    let at = chrono::DateTime::parse_from_rfc3339(first["expiresAt"].as_str().unwrap()).unwrap();
    assert_eq!(rfc3339(at.with_timezone(&Utc)), expires);

    let (status, _, _) = app.usage("alice", 10, "u").await;
    assert_eq!(status, StatusCode::OK);
    let rows = app.credit_rows().await;
    // The same instant written with another offset is the same request.
    let same_instant = chrono::DateTime::parse_from_rfc3339(&expires)
        .unwrap()
        .with_timezone(&chrono::FixedOffset::east_opt(2 * 3600).unwrap())
        .to_rfc3339();
    let mut same = grant.clone();
    same["expiresAt"] = json!(same_instant);
    for body in [&grant, &same] {
        let (status, replayed, again) = app.api_post("/v1/grants", body).await;
        assert_eq!((status, replayed), (StatusCode::OK, true), "{again}");
        assert_eq!(again, first, "a replay answers what the first call answered");
    }
    assert_eq!(app.credit_rows().await, rows);
    for (field, value) in [
        ("credits", json!(26)),
        ("reason", json!("other")),
        ("expiresAt", json!(rfc3339(Utc::now() + Duration::days(11)))),
        ("userId", json!("bob")),
    ] {
        let mut other = grant.clone();
        other[field] = value;
        let (status, _, body) = app.api_post("/v1/grants", &other).await;
        assert_eq!(
            (status, error_code(&body)),
            (StatusCode::CONFLICT, "idempotency_key_reused"),
            "{field}: {body}"
        );
    }
    let mut no_expiry = grant.clone();
    no_expiry.as_object_mut().unwrap().remove("expiresAt");
    let (status, _, body) = app.api_post("/v1/grants", &no_expiry).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(app.credit_rows().await, rows);
    assert_eq!(app.consistent_balance("alice").await["credits"]["available"], 15);
}

#[tokio::test]
async fn a_grant_replayed_after_its_expiry_is_still_the_same_grant() {
    let app = &TestApp::spawn().await;
    with_time_to_spare(Duration::milliseconds(1500), |n, span| async move {
        let user = format!("alice-{n}");
        let expires = rfc3339(Utc::now() + span);
        let grant = json!({
            "userId": user, "credits": 25, "idempotencyKey": format!("short-promo-{n}"), "reason": "flash",
            "expiresAt": expires,
        });
        let (status, _, first) = app.api_post("/v1/grants", &grant).await;
        if status == StatusCode::BAD_REQUEST {
            // Its time came before it was made.
            return false;
        }
        assert_eq!(status, StatusCode::OK, "{first}");
        sleep_past(&expires, MARGIN).await;
        // A client retrying the request it never saw answered gets that answer, not a 400 because
        // the time it named has come.
        let (status, replayed, again) = app.api_post("/v1/grants", &grant).await;
        assert_eq!((status, replayed), (StatusCode::OK, true), "{again}");
        assert_eq!(again, first);
        let balance = app.consistent_balance(&user).await;
        assert_eq!(balance["credits"]["available"], 0);
        assert_eq!(
            app.ledger_of(&user).await,
            [("manual_grant".to_owned(), 25), ("expiry".to_owned(), -25)]
        );
        true
    })
    .await;
}

#[tokio::test]
async fn a_grant_past_its_expiry_loses_what_is_left_of_it_and_nothing_more() {
    let app = &TestApp::spawn().await;
    with_time_to_spare(Duration::milliseconds(1500), |n, span| async move {
        let user = format!("alice-{n}");
        let until = Utc::now() + span;
        let expires = rfc3339(until);
        app.grant_expiring(&user, 10, &expires).await;
        app.grant_credits(&user, 5).await;
        // Spent from the expiring grant first.
        let (status, _, body) = app.usage(&user, 4, &format!("u1-{n}")).await;
        if Utc::now() >= until {
            return false;
        }
        assert_eq!(
            (status, body["available"].as_i64()),
            (StatusCode::OK, Some(11)),
            "{body}"
        );
        sleep_past(&expires, MARGIN).await;

        let balance = app.consistent_balance(&user).await;
        assert_eq!(
            balance["credits"],
            json!({"available": 5, "reserved": 0, "overdrawn": 0})
        );
        assert_eq!(balance["grants"].as_array().unwrap().len(), 1);
        let (status, _, body) = app.usage(&user, 6, &format!("u2-{n}")).await;
        assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains("5 available"),
            "{body}"
        );
        assert_eq!(
            app.ledger_of(&user).await,
            [("manual_grant", 10), ("manual_grant", 5), ("usage", -4), ("expiry", -6)].map(|(k, d)| (k.to_owned(), d))
        );
        // Read again: nothing expires twice.
        app.consistent_balance(&user).await;
        assert_eq!(app.ledger_of(&user).await.len(), 4);
        true
    })
    .await;
}

/// Credits a reservation held from a grant that expired meanwhile: spent if committed, and
/// expired with the rest of their grant if handed back.
#[tokio::test]
async fn credits_held_from_a_grant_that_expires_meanwhile_are_spent_when_committed_and_expire_when_released() {
    let app = &TestApp::spawn().await;
    with_time_to_spare(Duration::milliseconds(1500), |n, span| async move {
        let user = format!("alice-{n}");
        let until = Utc::now() + span;
        let expires = rfc3339(until);
        app.grant_expiring(&user, 50, &expires).await;
        app.grant_credits(&user, 20).await;
        // 30, then 20 of the 25, from the expiring grant (it is spent first); 5 from the lasting one.
        let (status, _, first) = app.reserve(&user, 30, &format!("r1-{n}"), None).await;
        assert_eq!(status, StatusCode::OK, "{first}");
        let (status, _, second) = app.reserve(&user, 25, &format!("r2-{n}"), None).await;
        assert_eq!(status, StatusCode::OK, "{second}");
        if Utc::now() >= until {
            return false;
        }
        sleep_past(&expires, MARGIN).await;

        // Nothing of the expiring grant was left to expire, but what was held stays held.
        let balance = app.consistent_balance(&user).await;
        assert_eq!(
            balance["credits"],
            json!({"available": 15, "reserved": 55, "overdrawn": 0}),
            "{balance}"
        );
        // Committing 10 of 30: spent; the 20 handed back belong to a grant gone by, so they expire.
        let (status, body) = app
            .commit_reservation(first["reservationId"].as_str().unwrap(), Some(10))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let balance = app.consistent_balance(&user).await;
        assert_eq!(
            balance["credits"],
            json!({"available": 15, "reserved": 25, "overdrawn": 0}),
            "{balance}"
        );
        // The 25: 20 from the expired grant, 5 from the lasting one (last taken, first handed back).
        let (status, body) = app.release_reservation(second["reservationId"].as_str().unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let balance = app.consistent_balance(&user).await;
        assert_eq!(
            balance["credits"],
            json!({"available": 20, "reserved": 0, "overdrawn": 0}),
            "{balance}"
        );
        let (status, _, body) = app.usage(&user, 20, &format!("rest-{n}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        app.consistent_balance(&user).await;
        true
    })
    .await;
}

#[tokio::test]
async fn a_reservation_of_an_expiring_grant_that_outlives_it_gives_back_credits_that_expire() {
    let app = &TestApp::spawn().await;
    with_time_to_spare(Duration::milliseconds(1200), |n, span| async move {
        let user = format!("alice-{n}");
        let until = Utc::now() + span;
        let expires = rfc3339(until);
        app.grant_expiring(&user, 10, &expires).await;
        // Part held, part left in the grant to expire on time; the hold outlives the grant.
        let ttl = 2 * span.num_seconds().max(1) + 1;
        let (status, _, held) = app.reserve(&user, 6, &format!("r-{n}"), Some(ttl)).await;
        if Utc::now() >= until {
            return false;
        }
        assert_eq!(status, StatusCode::OK, "{held}");
        let held_until = chrono::DateTime::parse_from_rfc3339(held["expiresAt"].as_str().unwrap()).unwrap();
        sleep_past(&expires, MARGIN).await;
        let balance = app.consistent_balance(&user).await;
        if Utc::now() < held_until {
            // Read while the hold stood (always, unless the machine is very slow).
            assert_eq!(
                balance["credits"],
                json!({"available": 0, "reserved": 6, "overdrawn": 0})
            );
        }
        sleep_past(held["expiresAt"].as_str().unwrap(), MARGIN).await;
        let balance = app.consistent_balance(&user).await;
        assert_eq!(
            balance["credits"],
            json!({"available": 0, "reserved": 0, "overdrawn": 0})
        );
        let (status, _, body) = app.usage(&user, 1, &format!("u-{n}")).await;
        assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{body}");
        true
    })
    .await;
}

#[tokio::test]
async fn the_periodic_sweep_writes_expiries_of_users_nobody_asks_about() {
    let app = &TestApp::spawn().await;
    with_time_to_spare(Duration::seconds(1), |n, span| async move {
        let user = format!("idle-{n}");
        let until = Utc::now() + span;
        app.grant_expiring(&user, 10, &rfc3339(until)).await;
        let (status, _, held) = app.reserve(&user, 4, &format!("r-{n}"), Some(1)).await;
        if Utc::now() >= until {
            return false;
        }
        assert_eq!(status, StatusCode::OK, "{held}");
        sleep_past(&rfc3339(until), MARGIN).await;
        sleep_past(held["expiresAt"].as_str().unwrap(), MARGIN).await;
        // The sweep runs every 30 s; wait for it without touching the user.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
        loop {
            let rows = app.ledger_of(&user).await;
            let sum: i64 = rows.iter().map(|(_, d)| d).sum();
            if sum == 0 {
                let expired: i64 = rows.iter().filter(|(k, _)| k == "expiry").map(|(_, d)| d).sum();
                assert_eq!(expired, -10, "{rows:?}");
                assert!(rows.contains(&("reservation_release".to_owned(), 4)), "{rows:?}");
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no sweep wrote the expiry: {rows:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        app.consistent_balance(&user).await;
        true
    })
    .await;
}
