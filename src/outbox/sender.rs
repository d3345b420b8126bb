//! One signed POST of a message to an endpoint, and what its answer means: 2xx is delivered,
//! 410 means the endpoint is gone for good, anything else (and no answer in time) is retried.

use std::time::Duration;

use reqwest::{StatusCode, redirect};

/// Endpoints answer with a short body; more of an error page than this tells an operator nothing.
const ERROR_BODY_CHARS: usize = 200;

/// One client for every send: its connections to an endpoint are kept and reused. No redirects:
/// the signature covers this message to this URL, and a receiver that moved says so by
/// answering, which is then retried until someone updates APP_WEBHOOK_URL.
pub fn http_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .redirect(redirect::Policy::none())
        .user_agent(concat!("Entitle-Webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("the TLS backend initialises")
}

/// What the endpoint made of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Delivered {
        status: u16,
    },
    /// 410 Gone: the endpoint asks to be sent nothing more.
    Gone,
    /// Any other status, or no answer: `status` is what came back, if anything did.
    Failed {
        status: Option<u16>,
        error: String,
    },
}

pub struct Request<'a> {
    pub url: &'a str,
    pub webhook_id: &'a str,
    pub timestamp: i64,
    pub signature: &'a str,
    pub body: &'a str,
}

pub async fn send(client: &reqwest::Client, timeout: Duration, request: &Request<'_>) -> Answer {
    let sent = client
        .post(request.url)
        .header("content-type", "application/json")
        .header("webhook-id", request.webhook_id)
        .header("webhook-timestamp", request.timestamp.to_string())
        .header("webhook-signature", request.signature)
        .body(request.body.to_owned())
        .send()
        .await;
    let response = match sent {
        Ok(response) => response,
        Err(err) => return failed_to_send(&err, timeout),
    };
    let status = response.status();
    if status.is_success() {
        return Answer::Delivered {
            status: status.as_u16(),
        };
    }
    if status == StatusCode::GONE {
        return Answer::Gone;
    }
    let said = response.text().await.unwrap_or_default();
    // One line however the page is laid out: it is read in `entitle deliveries` and in logs.
    let said: String = said
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .filter(|c| !c.is_control())
        .take(ERROR_BODY_CHARS)
        .collect();
    let error = match said.is_empty() {
        true => format!("answered {status}"),
        false => format!("answered {status}: {said}"),
    };
    Answer::Failed {
        status: Some(status.as_u16()),
        error,
    }
}

fn failed_to_send(err: &reqwest::Error, timeout: Duration) -> Answer {
    let error = if err.is_timeout() {
        format!("no answer within {} s", timeout.as_secs_f64())
    } else {
        // The innermost cause says what happened ("Connection refused"); the outer ones repeat the URL.
        let mut cause: &dyn std::error::Error = err;
        while let Some(inner) = cause.source() {
            cause = inner;
        }
        let kind = if err.is_connect() {
            "cannot connect"
        } else {
            "request failed"
        };
        format!("{kind}: {cause}")
    };
    Answer::Failed { status: None, error }
}
