//! The official Stripe Node library reaches the emulator with a host and port only, on the port the
//! emulator's API has of its own in emulator mode, and gets what Stripe would answer
//! (tests/stripe-node/emulator.js holds the assertions; `scripts/test` installs the library).

use std::process::Command;

use serde_json::Value;

use crate::helpers::TestApp;

#[tokio::test]
async fn the_official_node_library_creates_retrieves_expires_and_lists_against_the_emulators_own_port() {
    let app = TestApp::spawn_in_emulator_mode().await;
    let port = app
        .emulator_api
        .as_deref()
        .and_then(|api| api.rsplit(':').next())
        .expect("emulator mode serves the API on its own port")
        .to_owned();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/stripe-node/emulator.js");
    let output = tokio::task::spawn_blocking(move || Command::new("node").arg(script).arg(port).output())
        .await
        .unwrap()
        .expect("node must be installed (scripts/test installs it)");
    assert!(
        output.status.success(),
        "the Node script failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let made: Value = serde_json::from_slice(&output.stdout).unwrap();
    for id in made["sessions"].as_array().unwrap() {
        let session = app.emulator.session(id.as_str().unwrap()).expect("the session exists");
        assert_eq!(session["status"], "expired");
    }
    assert_eq!(made["events"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn the_services_own_v1_routes_stay_the_services_on_its_port() {
    let app = TestApp::spawn_in_emulator_mode().await;
    let (status, body) = app.get("/v1/users/alice/balance", None).await;
    assert_eq!(
        (status, crate::helpers::error_code(&body)),
        (reqwest::StatusCode::UNAUTHORIZED, "unauthorized"),
        "{body}"
    );
    let emulator = app.emulator_api.as_deref().unwrap();
    let list: Value = app
        .http
        .get(format!("{emulator}/v1/events"))
        .bearer_auth("sk_test_x")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["object"], "list");
}

#[tokio::test]
async fn a_taken_emulator_port_stops_the_start_with_the_variable_named() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    let (_, database_url) = crate::helpers::fresh_database().await;
    let vars = std::collections::HashMap::from([
        ("DATABASE_URL", database_url),
        ("STRIPE_EMULATOR_ADDR", taken_addr.clone()),
        (
            "PLANS_FILE",
            concat!(env!("CARGO_MANIFEST_DIR"), "/plans.toml").to_owned(),
        ),
    ]);
    let config = entitle::config::Config::from_lookup(|name| vars.get(name).cloned()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let Err(err) = entitle::startup::Application::build_on(listener, config).await else {
        panic!("the app started on a taken emulator port");
    };
    let message = err.to_string();
    assert!(
        message.contains("STRIPE_EMULATOR_ADDR") && message.contains(&taken_addr),
        "{message}"
    );
}
