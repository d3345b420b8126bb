//! POSTs of a form body through async-stripe's generic request builder (the typed crates for
//! customers and the billing portal would add two large crates to the build for two requests),
//! retried under one idempotency key as checkout's are.

use serde::de::DeserializeOwned;
use stripe::{IdempotencyKey, RequestStrategy, StripeError};
use stripe_client_core::{RequestBuilder, StripeMethod};

use super::{api::StripeApi, checkout::with_retries, retrieve::send_json};

/// `endpoint` is the route's template for metrics (`POST /v1/customers`), `path` what follows
/// `/v1`, and `what` names the call in the log of a retry.
pub(super) async fn post_form<T: DeserializeOwned>(
    api: &StripeApi,
    endpoint: &'static str,
    path: &'static str,
    body: &str,
    key: &IdempotencyKey,
    what: &'static str,
) -> Result<T, StripeError> {
    with_retries(what, || {
        let mut request = RequestBuilder::new(StripeMethod::Post, path);
        request.body = Some(body.to_owned());
        let request = request
            .customize()
            .request_strategy(RequestStrategy::Idempotent(key.clone()));
        send_json(api, endpoint, request)
    })
    .await
}
