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
