//! The Stripe client the service holds: async-stripe's, with every HTTP call it makes counted and
//! timed by endpoint and status for `/metrics`. The calls themselves live beside this (checkout,
//! retrieve); they reach the client only through [`StripeApi::call`], so none goes uncounted.

use std::{future::Future, time::Instant};

use stripe::{Client, StripeError};

use crate::metrics::Metrics;

#[derive(Clone)]
pub struct StripeApi {
    client: Client,
    metrics: Metrics,
}

impl StripeApi {
    pub fn new(client: Client, metrics: Metrics) -> Self {
        Self { client, metrics }
    }

    /// The client itself, for requests the service never makes (tests of the emulator): what is
    /// sent through it is not counted.
    pub fn uncounted(&self) -> &Client {
        &self.client
    }

    /// Makes one call (one HTTP request: a caller's retry is another call). `endpoint` is the
    /// route's template, `POST /v1/checkout/sessions/{id}/expire`, never a filled-in path.
    pub(super) async fn call<'a, T, Fut>(
        &'a self,
        endpoint: &'static str,
        send: impl FnOnce(&'a Client) -> Fut,
    ) -> Result<T, StripeError>
    where
        Fut: Future<Output = Result<T, StripeError>>,
    {
        let started = Instant::now();
        let result = send(&self.client).await;
        let status = match &result {
            Ok(_) => "200",
            Err(err) => status_label(err),
        };
        self.metrics.stripe_call(endpoint, status, started.elapsed());
        result
    }
}

/// The status of a failed call as a label: the statuses Stripe documents by number, any other by
/// class, and why there is none when there is none.
fn status_label(err: &StripeError) -> &'static str {
    match err {
        StripeError::Stripe(_, status) => match status {
            400 => "400",
            401 => "401",
            402 => "402",
            403 => "403",
            404 => "404",
            409 => "409",
            424 => "424",
            429 => "429",
            500 => "500",
            502 => "502",
            503 => "503",
            504 => "504",
            400..=499 => "4xx",
            500..=599 => "5xx",
            _ => "other",
        },
        // An answer that was not Stripe's JSON (async-stripe keeps no status for it).
        StripeError::JSONDeserialize(_) => "unreadable",
        StripeError::Timeout => "timeout",
        StripeError::ClientError(_) => "no_answer",
        StripeError::ConfigError(_) => "not_sent",
    }
}
