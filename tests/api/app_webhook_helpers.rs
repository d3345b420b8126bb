//! The app's side of the webhooks, for the outbox tests: a real HTTP receiver that verifies every
//! request with the official Standard Webhooks library (`tests/support/webhook_receiver.py`), an
//! instance of the service that can be killed outright, and reads of the outbox tables.

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use entitle::config::Config;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{APP_WEBHOOK_SECRET, Options, TestApp, fast_outbox};

/// The longest any test waits for something the outbox should do within a second or two.
const PATIENCE: Duration = Duration::from_secs(30);

/// Polls `probe` until it answers `Some`, for at most `PATIENCE`; panics naming `what` otherwise.
pub async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(started.elapsed() < PATIENCE, "waited {PATIENCE:?} for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One request the receiver verified.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Received {
    pub path: String,
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub content_type: Option<String>,
    /// The body exactly as it arrived.
    pub raw: String,
    pub body: Value,
    /// What the receiver answered; `None` while it held the request open.
    pub answered: Option<u16>,
    /// When it arrived, and when the receiver had written its answer (seconds since the epoch).
    pub received_at: f64,
    pub answered_at: Option<f64>,
}

impl Received {
    pub fn event_type(&self) -> &str {
        self.body["type"].as_str().unwrap_or_default()
    }

    pub fn data(&self) -> &Value {
        &self.body["data"]
    }

    pub fn accepted(&self) -> bool {
        self.answered.is_some_and(|status| (200..300).contains(&status))
    }
}

#[derive(Debug, Deserialize)]
struct State {
    received: Vec<Received>,
    rejected: Vec<Value>,
    holdings: Value,
}

/// The receiver process, on a port of its own. Dropping it stops it.
pub struct Receiver {
    child: Option<Child>,
    pub port: u16,
    log: PathBuf,
    http: reqwest::Client,
}

impl Receiver {
    pub async fn start() -> Self {
        let log = std::env::temp_dir().join(format!("entitle-webhook-receiver-{}.jsonl", Uuid::new_v4().simple()));
        let (child, port) = spawn_receiver(log.clone(), 0).await;
        Self {
            child: Some(child),
            port,
            log,
            http: reqwest::Client::new(),
        }
    }

    /// Where the service sends: any path but the receiver's own `/_control/`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hooks", self.port)
    }

    /// Stops the process, as an app that went down; what it received is kept for `start_again`.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, with what it had received.
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "the receiver is running");
        let (child, _) = spawn_receiver(self.log.clone(), self.port).await;
        self.child = Some(child);
    }

    /// From now on, answer every webhook with `status`.
    pub async fn answer(&self, status: u16) {
        self.set_mode(json!({ "status": status, "hang": false })).await;
    }

    /// From now on, hold every webhook open without answering (until `answer`).
    pub async fn hang(&self) {
        self.set_mode(json!({ "hang": true })).await;
    }

    /// Answer after `millis`, so that senders overlap.
    pub async fn delay(&self, millis: u64) {
        self.set_mode(json!({ "delay_ms": millis })).await;
    }

    async fn set_mode(&self, mode: Value) {
        let url = format!("http://127.0.0.1:{}/_control/mode", self.port);
        let response = self.http.post(url).json(&mode).send().await.unwrap();
        assert!(response.status().is_success());
    }

    async fn state(&self) -> State {
        let url = format!("http://127.0.0.1:{}/_control/state", self.port);
        self.http.get(url).send().await.unwrap().json().await.unwrap()
    }

    /// Every request that verified, in arrival order.
    pub async fn received(&self) -> Vec<Received> {
        self.state().await.received
    }

    /// Requests whose signature did not verify.
    pub async fn rejected(&self) -> Vec<Value> {
        self.state().await.rejected
    }

    /// What an app applying `entitlements.updated` by version holds: user id → data.
    pub async fn holdings(&self) -> Value {
        self.state().await.holdings
    }

    /// Waits until what was received satisfies `done`, and returns it.
    pub async fn wait_for(&self, what: &str, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        eventually(what, || async {
            let received = self.received().await;
            done(&received).then_some(received)
        })
        .await
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_file(&self.log);
        let _ = std::fs::remove_file(self.log.with_extension("err"));
    }
}

async fn spawn_receiver(log: PathBuf, port: u16) -> (Child, u16) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/webhook_receiver.py");
    tokio::task::spawn_blocking(move || {
        // Its complaints go to a file: a pipe nobody reads could fill and stop it.
        let errors = log.with_extension("err");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(APP_WEBHOOK_SECRET)
            .arg(&log)
            .arg(port.to_string())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&errors).unwrap())
            .spawn()
            .expect("python3 runs the webhook receiver");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let Ok(port) = line.trim().parse::<u16>() else {
            let _ = child.wait();
            let why = std::fs::read_to_string(&errors).unwrap_or_default();
            panic!(
                "the webhook receiver did not start: {why}\n(it needs the official library: `python3 -m pip install standardwebhooks`, which scripts/test does)"
            );
        };
        (child, port)
    })
    .await
    .unwrap()
}

/// `Options` for an app that sends its webhooks to `urls`.
pub fn sending_to(urls: &[String]) -> Options {
    Options {
        app_webhook_urls: urls.to_vec(),
        ..Options::default()
    }
}

/// A message as the outbox holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// As the receiver sees it: `msg_<uuid without dashes>`.
    pub webhook_id: String,
    pub event_type: String,
    pub user_id: String,
}

/// An attempt as the outbox keeps it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Attempt {
    pub status: String,
    pub response_status: Option<i32>,
    pub error: Option<String>,
    pub latency_ms: Option<i32>,
    pub sender: String,
}

impl TestApp {
    /// Every message written, oldest first.
    pub async fn outbox_messages(&self) -> Vec<Message> {
        let rows: Vec<(Uuid, String, String)> =
            sqlx::query_as("select id, type, user_id from outbox_messages order by created_at, id")
                .fetch_all(&self.db)
                .await
                .unwrap();
        rows.into_iter()
            .map(|(id, event_type, user_id)| Message {
                webhook_id: format!("msg_{}", id.simple()),
                event_type,
                user_id,
            })
            .collect()
    }

    /// Deliveries by status: (pending, delivered, abandoned).
    pub async fn delivery_counts(&self) -> (i64, i64, i64) {
        sqlx::query_as(
            "select count(*) filter (where status = 'pending'), count(*) filter (where status = 'delivered'),
                    count(*) filter (where status = 'abandoned')
             from outbox_deliveries",
        )
        .fetch_one(&self.db)
        .await
        .unwrap()
    }

    /// Waits until every delivery was delivered and `receiver` accepted each message, then
    /// returns what it accepted, in arrival order.
    pub async fn all_delivered(&self, receiver: &Receiver) -> Vec<Received> {
        let messages = self.outbox_messages().await;
        eventually("every delivery to be delivered", || async {
            let (pending, _, abandoned) = self.delivery_counts().await;
            (pending == 0 && abandoned == 0).then_some(())
        })
        .await;
        let received = receiver
            .wait_for("the receiver to accept every message", |received| {
                messages
                    .iter()
                    .all(|m| received.iter().any(|r| r.id == m.webhook_id && r.accepted()))
            })
            .await;
        received.into_iter().filter(Received::accepted).collect()
    }

    /// Every attempt at delivering `webhook_id` (to any endpoint), oldest first.
    pub async fn attempts_of(&self, webhook_id: &str) -> Vec<Attempt> {
        let message = Uuid::parse_str(webhook_id.trim_start_matches("msg_")).unwrap();
        sqlx::query_as(
            "select a.status, a.response_status, a.error, a.latency_ms, a.sender
             from outbox_attempts a join outbox_deliveries d on d.id = a.delivery_id
             where d.message_id = $1 order by a.id",
        )
        .bind(message)
        .fetch_all(&self.db)
        .await
        .unwrap()
    }

    /// Every attempt made, oldest first.
    pub async fn all_attempts(&self) -> Vec<Attempt> {
        sqlx::query_as("select status, response_status, error, latency_ms, sender from outbox_attempts order by id")
            .fetch_all(&self.db)
            .await
            .unwrap()
    }

    /// The endpoint at `url`: (failures in a row, disabled reason).
    pub async fn endpoint(&self, url: &str) -> (i32, Option<String>) {
        sqlx::query_as("select consecutive_failures, disabled_reason from outbox_endpoints where url = $1")
            .bind(url)
            .fetch_one(&self.db)
            .await
            .unwrap()
    }

    /// This app's configuration, for another instance on its database with other outbox settings.
    pub fn instance_config(&self, outbox: entitle::config::OutboxSettings) -> Config {
        Config {
            outbox,
            ..self.config.clone()
        }
    }
}

/// The outbox timings of the tests, with `concurrency` senders.
pub fn senders(concurrency: u32) -> entitle::config::OutboxSettings {
    entitle::config::OutboxSettings {
        concurrency,
        ..fast_outbox()
    }
}
