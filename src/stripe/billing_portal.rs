//! `POST /v1/billing_portal/sessions`: a short-lived link to Stripe's customer portal, where the
//! user cancels, resumes or updates the card of what their customer pays for.

use serde::Deserialize;
use stripe::IdempotencyKey;

use super::{
    ProviderError,
    api::StripeApi,
    form_post::{FormPost, post_form},
};

#[derive(Deserialize)]
struct PortalSessionObject {
    url: String,
}

/// Opens a portal session for `customer` that links back to `return_url`; its URL. Each call is a
/// new session, so the key is new per call: it only makes this call's retries safe.
pub async fn create_portal_session(api: &StripeApi, customer: &str, return_url: &str) -> Result<String, ProviderError> {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("customer", customer)
        .append_pair("return_url", return_url)
        .finish();
    let key = IdempotencyKey::new(format!("entitle-portal-{}", uuid::Uuid::new_v4()))
        .expect("a uuid key is short and non-empty");
    let post = FormPost {
        endpoint: "POST /v1/billing_portal/sessions",
        path: "/billing_portal/sessions",
        body: &body,
        key: &key,
        what: "creating the billing portal session",
    };
    let session: PortalSessionObject = post_form(api, post).await?;
    Ok(session.url)
}
