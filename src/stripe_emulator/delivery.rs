//! Sends the emulator's events to the service's webhook endpoint the way Stripe does: the exact
//! JSON bytes, signed with the endpoint secret at send time, retried with exponential backoff on any
//! non-2xx answer or timeout. Optional chaos (duplicates, reordering) shows the service does not
//! depend on Stripe's good manners.

use std::{sync::Arc, time::Duration};

use serde_json::Value;
use tokio::sync::mpsc;

use crate::{config::Secret, stripe::signature::sign_stripe_payload};

#[derive(Clone, Debug)]
pub struct DeliveryConfig {
    /// The service's webhook URL, e.g. `http://127.0.0.1:3000/payment-webhook`.
    pub endpoint: String,
    pub secret: Secret,
    /// Share of events (0.0 to 1.0) delivered twice, concurrently.
    pub duplicate_rate: f64,
    /// Delay each delivery by a random 0-2 s, so events can arrive out of order.
    pub reorder: bool,
    /// Attempts per event before giving up (Stripe keeps trying for three days).
    pub max_attempts: u32,
    /// Delay before the first retry; doubled after each failure, at most a minute.
    pub first_retry_after: Duration,
}

impl DeliveryConfig {
    pub fn new(endpoint: String, secret: Secret) -> Self {
        Self {
            endpoint,
            secret,
            duplicate_rate: 0.0,
            reorder: false,
            max_attempts: 10,
            first_retry_after: Duration::from_secs(1),
        }
    }
}

/// Called with an event's id once the endpoint accepted it.
pub type OnDelivered = Arc<dyn Fn(&str) + Send + Sync>;

/// Starts the sender; every event put on the returned channel is delivered in the background.
pub fn spawn_delivery(config: DeliveryConfig, on_delivered: OnDelivered) -> mpsc::UnboundedSender<Value> {
    let (sender, mut events) = mpsc::unbounded_channel::<Value>();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("a plain HTTP client builds");
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            let body = serde_json::to_vec(&event).expect("events serialise");
            let copies = if random_fraction() < config.duplicate_rate {
                2
            } else {
                1
            };
            let id: Arc<str> = event["id"].as_str().unwrap_or_default().into();
            for _ in 0..copies {
                let delivered = {
                    let (on_delivered, id) = (on_delivered.clone(), id.clone());
                    move || on_delivered(&id)
                };
                tokio::spawn(deliver_with_retries(
                    client.clone(),
                    config.clone(),
                    body.clone(),
                    delivered,
                ));
            }
        }
    });
    sender
}

async fn deliver_with_retries(
    client: reqwest::Client,
    config: DeliveryConfig,
    body: Vec<u8>,
    delivered: impl FnOnce(),
) {
    if config.reorder {
        tokio::time::sleep(Duration::from_millis((random_fraction() * 2000.0) as u64)).await;
    }
    let mut wait = config.first_retry_after;
    for attempt in 1..=config.max_attempts {
        let signature = sign_stripe_payload(&body, config.secret.expose(), chrono::Utc::now().timestamp());
        let result = client
            .post(&config.endpoint)
            .header("content-type", "application/json; charset=utf-8")
            .header("stripe-signature", signature)
            .header(
                "user-agent",
                "Stripe/1.0 (+https://stripe.com/docs/webhooks) entitle-emulator",
            )
            .body(body.clone())
            .send()
            .await;
        match result {
            Ok(response) if response.status().is_success() => return delivered(),
            Ok(response) => {
                tracing::warn!(attempt, status = %response.status(), "emulator: webhook delivery refused; will retry")
            }
            Err(err) => tracing::warn!(attempt, error = %err, "emulator: webhook delivery failed; will retry"),
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(60));
    }
    tracing::error!(
        "emulator: gave up delivering an event after {} attempts",
        config.max_attempts
    );
}

/// A number in [0, 1) from the OS's randomness (via uuid v4), enough for chaos knobs.
fn random_fraction() -> f64 {
    (uuid::Uuid::new_v4().as_u128() >> 75) as f64 / (1u64 << 53) as f64
}
