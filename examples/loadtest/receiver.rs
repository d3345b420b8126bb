//! The app's webhook receiver for the orders scenario: the outbox sends every `order.paid` and
//! `entitlements.updated` here, and each message's first arrival is timed against the moment its
//! row was written, so the run shows how far delivery trails the webhooks that cause it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{Router, extract::State, http::HeaderMap, http::StatusCode, routing::post};
use entitle::outbox::payload::parse_webhook_id;
use sqlx::PgPool;
use uuid::Uuid;

pub const SECRET: &str = "whsec_bG9hZHRlc3Qtb3V0Ym94LXNlY3JldC0xMjM0NTY3OA==";

#[derive(Clone, Default)]
pub struct Receiver {
    /// Each message's first arrival, as seconds since the epoch (the database's clock is this
    /// machine's).
    first_seen: Arc<Mutex<HashMap<Uuid, f64>>>,
    received: Arc<Mutex<usize>>,
}

async fn receive(State(receiver): State<Receiver>, headers: HeaderMap) -> StatusCode {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
    *receiver.received.lock().unwrap() += 1;
    match headers
        .get("webhook-id")
        .and_then(|value| value.to_str().ok())
        .and_then(parse_webhook_id)
    {
        Some(id) => {
            receiver.first_seen.lock().unwrap().entry(id).or_insert(now);
            StatusCode::NO_CONTENT
        }
        None => StatusCode::BAD_REQUEST,
    }
}

impl Receiver {
    /// Serves on a port of its own; answers the URL to configure as `APP_WEBHOOK_URL`.
    pub async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks", listener.local_addr().unwrap());
        let app = Router::new().route("/hooks", post(receive)).with_state(self.clone());
        tokio::spawn(axum::serve(listener, app).into_future());
        url
    }

    /// Commit (the writing transaction's time, a little before its commit: so these latencies
    /// are upper bounds) to first arrival, per message, sorted.
    /// Only messages written at or after `since` (seconds since the epoch) count; answers how
    /// many were written, and the latencies of those that arrived.
    pub async fn latencies(&self, db: &PgPool, since: f64) -> (usize, Vec<Duration>) {
        let written: Vec<(Uuid, f64)> = sqlx::query_as(
            "select id, extract(epoch from created_at)::float8 from outbox_messages
             where created_at >= to_timestamp($1)",
        )
        .bind(since)
        .fetch_all(db)
        .await
        .unwrap();
        let seen = self.first_seen.lock().unwrap();
        let mut latencies: Vec<Duration> = written
            .iter()
            .filter_map(|(id, at)| Some(Duration::from_secs_f64((seen.get(id)? - at).max(0.0))))
            .collect();
        latencies.sort();
        (written.len(), latencies)
    }

    pub fn now() -> f64 {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
    }

    pub fn requests(&self) -> usize {
        *self.received.lock().unwrap()
    }
}

/// Deliveries not yet delivered (nor given up on).
pub async fn pending(db: &PgPool) -> i64 {
    sqlx::query_scalar("select count(*) from outbox_deliveries where status = 'pending'")
        .fetch_one(db)
        .await
        .unwrap_or(-1)
}
