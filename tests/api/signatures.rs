//! Only deliveries signed with a configured secret, recently, are believed; nothing else is even parsed.

use std::process::Command;

use entitle::stripe::signature::sign_stripe_payload;
use entitle::stripe_emulator::PaymentResult;
use reqwest::StatusCode;

use crate::helpers::{Options, TestApp, WEBHOOK_SECRET, error_code, unix_now};

async fn paid_event_body(app: &TestApp) -> Vec<u8> {
    let (_, session_id) = app.checkout("alice", "credits_100").await;
    serde_json::to_vec(&app.pay(&session_id, PaymentResult::Card)[0]).unwrap()
}

async fn assert_refused(app: &TestApp, body: Vec<u8>, header: Option<&str>, case: &str) {
    let (status, reply) = app.deliver_raw(body, header).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{case}: {reply}");
    assert_eq!(error_code(&reply), "invalid_signature", "{case}");
}

#[tokio::test]
async fn deliveries_that_are_not_signed_by_stripe_now_are_refused_and_change_nothing() {
    let app = TestApp::spawn().await;
    let body = paid_event_body(&app).await;
    let now = unix_now();
    let valid = sign_stripe_payload(&body, WEBHOOK_SECRET, now);
    let v1 = valid.split_once("v1=").unwrap().1;
    let mut tampered = body.clone();
    let position = tampered.iter().position(|b| *b == b'5').unwrap();
    tampered[position] = b'6';

    assert_refused(&app, body.clone(), None, "missing header").await;
    assert_refused(&app, body.clone(), Some("nonsense"), "malformed header").await;
    assert_refused(
        &app,
        body.clone(),
        Some(&sign_stripe_payload(&body, "whsec_wrong", now)),
        "wrong secret",
    )
    .await;
    assert_refused(&app, tampered, Some(&valid), "tampered body").await;
    assert_refused(
        &app,
        body.clone(),
        // A minute past the tolerance, signed now: a slow machine cannot bring these back within it
        // (the exact boundary is the unit tests' job, with a fixed clock).
        Some(&sign_stripe_payload(&body, WEBHOOK_SECRET, unix_now() - 360)),
        "stale",
    )
    .await;
    assert_refused(
        &app,
        body.clone(),
        Some(&sign_stripe_payload(&body, WEBHOOK_SECRET, unix_now() + 360)),
        "future",
    )
    .await;
    assert_refused(&app, body.clone(), Some(&format!("t={now},v0={v1}")), "only v0").await;

    assert_eq!(app.processed_event_count().await, 0);
    assert_eq!(app.credits("alice").await, 0);
}

#[tokio::test]
async fn several_v1_signatures_are_accepted_when_one_matches() {
    let app = TestApp::spawn().await;
    let body = paid_event_body(&app).await;
    let now = unix_now();
    let valid = sign_stripe_payload(&body, WEBHOOK_SECRET, now);
    let v1 = valid.split_once("v1=").unwrap().1;
    let header = format!("t={now},v1={},v1={v1},v0={}", "0".repeat(64), "1".repeat(64));
    let (status, reply) = app.deliver_raw(body, Some(&header)).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(app.credits("alice").await, 100);
}

#[tokio::test]
async fn during_a_secret_rotation_either_configured_secret_is_accepted() {
    let app = TestApp::spawn_with(Options {
        extra_webhook_secrets: vec!["whsec_rotated_in"],
        ..Options::default()
    })
    .await;
    let body = paid_event_body(&app).await;
    let header = sign_stripe_payload(&body, "whsec_rotated_in", unix_now());
    let (status, reply) = app.deliver_raw(body, Some(&header)).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(app.credits("alice").await, 100);
}

#[tokio::test]
async fn a_body_over_one_mebibyte_is_refused_with_413() {
    let app = TestApp::spawn().await;
    let body = vec![b' '; 1024 * 1024 + 1];
    let header = sign_stripe_payload(&body, WEBHOOK_SECRET, unix_now());
    let (status, reply) = app.deliver_raw(body, Some(&header)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_code(&reply), "payload_too_large");
}

/// The official `stripe` Node library signs test webhooks with `generateTestHeaderString`; our
/// verifier must accept exactly what it produces. `.ci/run` installs it under tests/stripe-node.
#[tokio::test]
async fn headers_from_the_official_stripe_library_are_accepted() {
    let app = TestApp::spawn().await;
    let body = paid_event_body(&app).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/stripe-node/sign.js");
    let output = Command::new("node")
        .arg(script)
        .arg(WEBHOOK_SECRET)
        .arg(String::from_utf8(body.clone()).unwrap())
        .output()
        .expect("node must be installed (see .ci/run)");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let header = String::from_utf8(output.stdout).unwrap();
    assert!(header.contains("v1="), "{header}");

    let (status, reply) = app.deliver_raw(body.clone(), Some(header.trim())).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(app.credits("alice").await, 100);

    // And the same library's header for another secret is refused.
    let output = Command::new("node")
        .arg(script)
        .arg("whsec_not_ours")
        .arg(String::from_utf8(body.clone()).unwrap())
        .output()
        .unwrap();
    let header = String::from_utf8(output.stdout).unwrap();
    let (status, _) = app.deliver_raw(body, Some(header.trim())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

/// `whsec_` alone would make the empty string the HMAC key, which anyone can sign with; a key must
/// say its mode, which every event is checked against. Both stop the binary before it serves.
#[tokio::test]
async fn the_binary_refuses_an_empty_webhook_secret_and_a_key_that_names_no_mode() {
    for (variable, key, webhook_secrets) in [
        ("STRIPE_WEBHOOK_SECRET", "sk_test_real_looking_key", "whsec_"),
        (
            "STRIPE_WEBHOOK_SECRET",
            "sk_test_real_looking_key",
            "whsec_kept_secret,whsec_",
        ),
        ("STRIPE_SECRET_KEY", "sk_real_looking_key", "whsec_kept_secret"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_entitle"))
            .env_clear()
            .env("STRIPE_SECRET_KEY", key)
            .env("STRIPE_WEBHOOK_SECRET", webhook_secrets)
            .env("AUTH_JWT_SECRET", "0123456789abcdef0123456789abcdef")
            // Where nothing listens: a binary that accepted the values stops there, never serving.
            .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/entitle_unused")
            .current_dir(std::env::temp_dir())
            .output()
            .unwrap();
        assert!(!output.status.success(), "{variable}={webhook_secrets}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.lines().count() == 1 && stderr.contains(&format!("configuration error: {variable}")),
            "{stderr}"
        );
        assert!(
            !stderr.contains("real_looking") && !stderr.contains("kept_secret"),
            "{stderr}"
        );
    }
}
