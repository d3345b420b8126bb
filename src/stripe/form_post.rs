//! POSTs of a form body through async-stripe's generic request builder (the typed crates for
//! customers and the billing portal would add two large crates to the build for two requests),
//! retried under one idempotency key as checkout's are.

use serde::de::DeserializeOwned;
use stripe::{IdempotencyKey, RequestStrategy, StripeError};
use stripe_client_core::{RequestBuilder, StripeMethod};

use super::{api::StripeApi, checkout::with_retries, retrieve::send_json};

pub(super) struct FormPost<'a> {
    /// The route's template, for metrics: `POST /v1/customers`.
    pub endpoint: &'static str,
    /// What follows `/v1`.
    pub path: &'static str,
    pub body: &'a str,
    pub key: &'a IdempotencyKey,
    /// Names the call in the log of a retry.
    pub what: &'static str,
}

pub(super) async fn post_form<T: DeserializeOwned>(api: &StripeApi, post: FormPost<'_>) -> Result<T, StripeError> {
    with_retries(post.what, || {
        let mut request = RequestBuilder::new(StripeMethod::Post, post.path);
        request.body = Some(post.body.to_owned());
        let request = request
            .customize()
            .request_strategy(RequestStrategy::Idempotent(post.key.clone()));
        send_json(api, post.endpoint, request)
    })
    .await
}
