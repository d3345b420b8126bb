//! `LOG_FORMAT=json`: the binary writes one JSON object per line, every request ends in a line
//! with its request id, route, status and latency, and no secret or token is ever in a line.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::{Value, json};

use crate::helpers::{API_KEY, fresh_database};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn with_log_format_json_every_line_is_json_and_each_request_is_logged_with_its_status_and_latency() {
    let (_, database_url) = fresh_database().await;
    let port = free_port();
    let jwt_secret = "a-json-logs-test-secret-of-at-least-32-chars";
    let mut server = Command::new(env!("CARGO_BIN_EXE_entitle"))
        .env_clear()
        .env("DATABASE_URL", &database_url)
        .env("BIND_ADDR", format!("127.0.0.1:{port}"))
        .env("STRIPE_EMULATOR_ADDR", "127.0.0.1:0")
        .env("LOG_FORMAT", "json")
        .env("ENTITLE_API_KEYS", API_KEY)
        .env("AUTH_JWT_SECRET", jwt_secret)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let mut up = false;
    for _ in 0..300 {
        if http.get(format!("{base}/healthz")).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "the server did not start within 30 s");

    let signed_in: Value = http
        .post(format!("{base}/dev/token"))
        .json(&json!({"userId": "alice"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = signed_in["token"].as_str().expect("a dev token").to_owned();
    let entitlements = http
        .get(format!("{base}/entitlements"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(entitlements.status(), 200);
    let request_id = entitlements.headers()["x-request-id"].to_str().unwrap().to_owned();
    let check = http
        .post(format!("{base}/v1/check"))
        .bearer_auth(API_KEY)
        .json(&json!({"userId": "alice", "credits": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(check.status(), 200);

    // SIGTERM: the server shuts down gracefully, which writes out the queued lines.
    Command::new("kill").arg(server.id().to_string()).status().unwrap();
    let output = tokio::task::spawn_blocking(move || {
        let _ = server.wait();
        let mut stderr = String::new();
        std::io::Read::read_to_string(server.stderr.as_mut().unwrap(), &mut stderr).unwrap();
        stderr
    })
    .await
    .unwrap();

    let lines: Vec<Value> = output
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not a JSON line: {line}")))
        .collect();
    assert!(!lines.is_empty(), "nothing was logged");
    let in_request = |line: &Value, id: &str| {
        line["spans"]
            .as_array()
            .is_some_and(|spans| spans.iter().any(|span| span["request_id"] == id))
    };
    let finished = lines
        .iter()
        .find(|line| line["message"] == "finished processing request" && in_request(line, &request_id))
        .unwrap_or_else(|| panic!("no line ends request {request_id}:\n{output}"));
    assert_eq!(finished["status"], 200, "{finished}");
    assert!(
        finished["latency_ms"].as_f64().is_some_and(|ms| ms >= 0.0),
        "{finished}"
    );
    let span = finished["spans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["request_id"] == request_id.as_str())
        .unwrap();
    assert_eq!(span["route"], "/entitlements", "{finished}");
    assert_eq!(span["method"], "GET", "{finished}");

    for secret in [API_KEY, jwt_secret, token.as_str()] {
        assert!(
            !output.contains(secret),
            "a secret or token reached the logs:\n{output}"
        );
    }
}
