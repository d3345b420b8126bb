//! A database serves one Stripe mode for its whole life. A deployment that lost its key (and so
//! would come up emulated, where anyone may sign in as anyone) or holds the other mode's key
//! refuses to start on it, with one line saying why and what to do; the same mode restarts.

use std::process::{Command, Output};

use entitle::{
    config::{Config, Secret, StripeBackend},
    startup::Application,
};
use reqwest::StatusCode;

use crate::helpers::{Options, TestApp, fresh_database};

fn api_backend(app: &TestApp, key: &str) -> StripeBackend {
    let StripeBackend::Api { api_base, .. } = &app.config.stripe else {
        panic!("the app runs against the emulator's API");
    };
    StripeBackend::Api {
        secret_key: Secret::new(key),
        api_base: api_base.clone(),
    }
}

async fn refusal(config: Config) -> String {
    match Application::build(config).await {
        Ok(_) => panic!("the application must refuse to start"),
        Err(err) => err.to_string(),
    }
}

async fn recorded_mode(app: &TestApp) -> Vec<String> {
    sqlx::query_scalar("select mode from service_mode")
        .fetch_all(&app.db)
        .await
        .unwrap()
}

/// The binary, with nothing set but the database (URL with a password, which trust auth ignores):
/// as after a deployment lost STRIPE_SECRET_KEY.
fn run_binary_without_key(app: &TestApp, args: &[&str]) -> Output {
    let url = format!("postgres://postgres:hunter2@127.0.0.1:5432/{}", app.db_name);
    Command::new(env!("CARGO_BIN_EXE_entitle"))
        .args(args)
        .env_clear()
        .env("DATABASE_URL", url)
        .env("BIND_ADDR", "127.0.0.1:0")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap()
}

#[tokio::test]
async fn given_a_test_mode_database_when_the_key_is_lost_then_emulator_mode_refuses_to_start_on_it() {
    let app = TestApp::spawn().await;
    assert_eq!(recorded_mode(&app).await, ["test"]);

    let message = refusal(app.config_on_same_database(StripeBackend::Emulator)).await;
    assert_eq!(
        message,
        format!(
            "this database (127.0.0.1:5432/{}) serves Stripe test mode, but STRIPE_SECRET_KEY is not set, \
             so the service would start in emulator mode; set the test STRIPE_SECRET_KEY again, \
             or point DATABASE_URL at another database",
            app.db_name
        )
    );
    assert_eq!(
        recorded_mode(&app).await,
        ["test"],
        "the refused instance changed nothing"
    );
}

#[tokio::test]
async fn given_a_test_mode_database_then_the_keyless_binary_neither_serves_nor_runs_operator_commands() {
    let app = TestApp::spawn().await;
    let order_id = uuid::Uuid::new_v4().to_string();
    for args in [&[][..], &["order", &order_id], &["reconcile", "--since", "1h"]] {
        let output = run_binary_without_key(&app, args);
        assert!(!output.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("entitle: ")).collect();
        assert_eq!(lines.len(), 1, "{args:?}: {stderr}");
        assert!(
            lines[0].contains("serves Stripe test mode, but STRIPE_SECRET_KEY is not set"),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("hunter2"), "the password is never printed: {stderr}");
        assert!(!stderr.contains("STRIPE EMULATOR MODE"), "nothing was served: {stderr}");
    }
}

#[tokio::test]
async fn given_a_live_mode_database_then_a_test_key_is_refused() {
    let app = TestApp::spawn_with(Options {
        stripe_secret_key: "sk_live_emulated",
        ..Options::default()
    })
    .await;
    assert_eq!(recorded_mode(&app).await, ["live"]);
    let message = refusal(app.config_on_same_database(api_backend(&app, "rk_test_other"))).await;
    assert!(
        message.contains("serves Stripe live mode, but STRIPE_SECRET_KEY is a test key")
            && message.contains("set the live STRIPE_SECRET_KEY again"),
        "{message}"
    );
    assert!(!message.contains("rk_test_other"), "keys are never printed: {message}");
}

#[tokio::test]
async fn given_a_database_in_one_mode_then_another_instance_in_that_mode_starts_and_serves() {
    let app = TestApp::spawn().await;
    let again = app
        .start_beside(app.config_on_same_database(api_backend(&app, "rk_test_restricted")))
        .await;
    let health = app.http.get(format!("{again}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(recorded_mode(&app).await, ["test"]);
}

#[tokio::test]
async fn given_a_fresh_database_when_instances_in_two_modes_start_at_once_then_only_one_mode_runs() {
    let app = TestApp::spawn().await;
    let (_, database_url) = fresh_database().await;
    let on_fresh = |stripe: StripeBackend| Config {
        database_url: Secret::new(database_url.clone()),
        ..app.config_on_same_database(stripe)
    };
    let configs = [
        on_fresh(StripeBackend::Emulator),
        on_fresh(api_backend(&app, "sk_test_a")),
        on_fresh(StripeBackend::Emulator),
        on_fresh(api_backend(&app, "sk_test_b")),
    ];
    let modes: Vec<_> = configs.iter().map(|c| c.stripe.mode()).collect();
    let results = futures::future::join_all(configs.into_iter().map(Application::build)).await;
    let started: Vec<_> = modes
        .iter()
        .zip(&results)
        .filter(|(_, result)| result.is_ok())
        .map(|(mode, _)| *mode)
        .collect();
    assert_eq!(
        started.len(),
        2,
        "both instances of the first mode recorded, and only they, start"
    );
    assert_eq!(started[0], started[1]);
}
