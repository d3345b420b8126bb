//! The API's contract: Schemathesis generates requests from `GET /openapi.json` (valid ones and
//! invalid ones) and checks each answer against the document: no 5xx, and every status, content
//! type, header and body as documented. `scripts/test` installs the pinned Schemathesis into a
//! venv and points `SCHEMATHESIS` at it; these tests fail rather than skip without it.

use std::{path::PathBuf, process::Output};

use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{API_KEY, TestApp};

const METRICS_TOKEN: &str = "contract-metrics-token-0123456789abcdef";
/// What the issue asks of every answer.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_schema_conformance,response_headers_conformance";
/// Which credential each security scheme of the document is sent with.
const CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/contract/schemathesis.toml");

fn schemathesis() -> PathBuf {
    let program = std::env::var_os("SCHEMATHESIS").map_or_else(|| PathBuf::from("schemathesis"), PathBuf::from);
    let found = std::process::Command::new(&program)
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    assert!(
        found,
        "Schemathesis is not installed: run the suite with scripts/test, which installs it into a venv, or set \
         SCHEMATHESIS to a `schemathesis` binary (pip install schemathesis==4.32.5)"
    );
    program
}

/// Emulator mode, as `cargo run` starts it, with an API key and a metrics token so every security
/// scheme is exercised, and a user who has credits to spend.
async fn contract_app() -> (TestApp, String) {
    let app =
        TestApp::spawn_in_emulator_mode_with(&[("ENTITLE_API_KEYS", API_KEY), ("METRICS_TOKEN", METRICS_TOKEN)]).await;
    let token = app.dev_token("contract-user").await;
    app.grant_credits("contract-user", 1_000).await;
    (app, token)
}

/// Runs Schemathesis against `app` with the document at `location` (a URL, or a file with `--url`
/// among `extra`), in a scratch directory of its own so nothing it caches lands in the tree.
async fn run_schemathesis(token: &str, location: String, extra: &[String]) -> (bool, String) {
    let program = schemathesis();
    let scratch = std::env::temp_dir().join(format!("entitle-contract-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&scratch).unwrap();
    let mut command = std::process::Command::new(program);
    command
        .current_dir(&scratch)
        .env("ENTITLE_CONTRACT_USER_TOKEN", token)
        .env("ENTITLE_CONTRACT_API_KEY", API_KEY)
        .env("ENTITLE_CONTRACT_METRICS_TOKEN", METRICS_TOKEN)
        .args(["--no-color", "--config-file", CONFIG, "run", &location])
        .args(["--checks", CHECKS])
        // Bounded: a few hundred requests in all. One worker: with more, Python 3.11's ast module
        // can fail inside Hypothesis (a CPython bug), which would read as our failure.
        .args(["--max-examples", "25", "--workers", "1", "--request-timeout", "35"])
        // The stateful phase chains calls along links the document does not declare.
        .args(["--phases", "examples,coverage,fuzzing", "--generation-database", "none"])
        .args(extra);
    // Off the runtime's thread, so the app in this process keeps answering.
    let output: Output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("schemathesis runs");
    let _ = std::fs::remove_dir_all(&scratch);
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[tokio::test]
async fn every_answer_to_generated_requests_conforms_to_the_document() {
    let (app, token) = contract_app().await;

    let (passed, report) = run_schemathesis(&token, app.url("/openapi.json"), &[]).await;

    assert!(passed, "Schemathesis found answers that break the document:\n{report}");
    // Every documented operation was exercised (the document's own route is not among them).
    let (_, doc) = app.get("/openapi.json", None).await;
    let operations = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|item| item.as_object().unwrap().len())
        .sum::<usize>();
    assert!(
        report.contains(&format!("Tested: {}", operations - 1)),
        "expected {} operations tested:\n{report}",
        operations - 1
    );
}

/// A document that says something false about an answer, and what Schemathesis must then report.
fn lies(doc: &Value) -> Vec<(&'static str, Value, &'static str)> {
    let mut wrong_schema = doc.clone();
    wrong_schema["components"]["schemas"]["Health"]["properties"]["status"] = json!({ "type": "integer" });
    let mut missing_status = doc.clone();
    missing_status["paths"]["/v1/check"]["post"]["responses"]
        .as_object_mut()
        .unwrap()
        .remove("400");
    let mut wrong_content_type = doc.clone();
    let ok = &mut wrong_content_type["paths"]["/plans"]["get"]["responses"]["200"]["content"];
    let json = ok.as_object_mut().unwrap().remove("application/json").unwrap();
    ok["text/plain"] = json;
    vec![
        ("/healthz", wrong_schema, "Response violates schema"),
        ("/v1/check", missing_status, "Undocumented status code"),
        ("/plans", wrong_content_type, "Undocumented Content-Type"),
    ]
}

#[tokio::test]
async fn a_document_that_misdescribes_an_answer_fails_the_run() {
    let (app, token) = contract_app().await;
    let (status, doc) = app.get("/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);

    for (path, lie, finding) in lies(&doc) {
        let file = std::env::temp_dir().join(format!("entitle-contract-{}.json", Uuid::new_v4()));
        std::fs::write(&file, serde_json::to_vec(&lie).unwrap()).unwrap();
        let extra = [
            "--url".to_owned(),
            app.address.clone(),
            "--include-path".to_owned(),
            path.to_owned(),
        ];

        let (passed, report) = run_schemathesis(&token, file.display().to_string(), &extra).await;

        let _ = std::fs::remove_file(&file);
        assert!(!passed, "{path}: a false document passed:\n{report}");
        assert!(report.contains(finding), "{path}: expected `{finding}`:\n{report}");
    }
}
