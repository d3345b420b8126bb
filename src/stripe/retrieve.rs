//! Reading what Stripe holds now (a subscription, a session, its event list) through the async-stripe
//! client, so requests get its authentication, API version and error handling. The answer is read
//! into our own lenient structs rather than async-stripe's generated ones, which refuse an object
//! missing any field they require and would add a large crate per resource to the build.

use serde::de::DeserializeOwned;
use stripe::StripeError;
use stripe_client_core::{CustomizableStripeRequest, RequestBuilder, StripeMethod};

use super::{
    api::StripeApi,
    event::{CheckoutSessionObject, EventKind, WebhookEvent},
    lifecycle_objects::{InvoiceObject, ObjectList, SubscriptionObject},
};

async fn get_json<T: DeserializeOwned>(
    api: &StripeApi,
    endpoint: &'static str,
    path: String,
    query: Option<String>,
) -> Result<T, StripeError> {
    let mut request = RequestBuilder::new(StripeMethod::Get, path);
    request.query = query;
    send_json(api, endpoint, request.customize()).await
}

/// Sends any request (a GET here, the POSTs in `customers`) and reads Stripe's answer into our
/// own struct.
pub(super) async fn send_json<T: DeserializeOwned>(
    api: &StripeApi,
    endpoint: &'static str,
    request: CustomizableStripeRequest<miniserde::json::Value>,
) -> Result<T, StripeError> {
    let value = api.call(endpoint, |client| request.send(client)).await?;
    serde_json::from_str(&miniserde::json::to_string(&value))
        .map_err(|err| StripeError::JSONDeserialize(err.to_string()))
}

/// `GET /v1/subscriptions/{id}?expand[]=items.data.price.product`: the product's metadata names
/// the plan of a price the service made inline.
pub async fn retrieve_subscription(api: &StripeApi, id: &str) -> Result<SubscriptionObject, StripeError> {
    get_json(
        api,
        "GET /v1/subscriptions/{id}",
        format!("/subscriptions/{id}"),
        Some("expand%5B%5D=items.data.price.product".to_owned()),
    )
    .await
}

/// `GET /v1/invoices/{id}?expand[]=payments`: events never carry `payments`, an includable field.
pub async fn retrieve_invoice_with_payments(api: &StripeApi, id: &str) -> Result<InvoiceObject, StripeError> {
    get_json(
        api,
        "GET /v1/invoices/{id}",
        format!("/invoices/{id}"),
        Some("expand%5B%5D=payments".to_owned()),
    )
    .await
}

/// `GET /v1/checkout/sessions/{id}`.
pub async fn retrieve_checkout_session(api: &StripeApi, id: &str) -> Result<CheckoutSessionObject, StripeError> {
    get_json(
        api,
        "GET /v1/checkout/sessions/{id}",
        format!("/checkout/sessions/{id}"),
        None,
    )
    .await
}

/// `GET /v1/events/{id}`.
pub async fn retrieve_event(api: &StripeApi, id: &str) -> Result<WebhookEvent, StripeError> {
    get_json(api, "GET /v1/events/{id}", format!("/events/{id}"), None).await
}

/// One page of `GET /v1/events` of the given kinds, newest first as Stripe lists them.
pub async fn list_events_page(
    api: &StripeApi,
    types: &[EventKind],
    created_gte: i64,
    starting_after: Option<&str>,
) -> Result<ObjectList<WebhookEvent>, StripeError> {
    // Brackets percent-encoded, as async-stripe's own query encoder sends them.
    let mut query = format!("limit=100&created%5Bgte%5D={created_gte}");
    for event_type in types {
        query.push_str(&format!("&types%5B%5D={}", event_type.as_str()));
    }
    if let Some(id) = starting_after {
        query.push_str(&format!("&starting_after={id}"));
    }
    get_json(api, "GET /v1/events", "/events".to_owned(), Some(query)).await
}

/// Any object as Stripe sends it, for building an event from what Stripe holds now (the drift
/// check's fixes go through the event path with Stripe's current object).
pub async fn retrieve_raw(
    api: &StripeApi,
    endpoint: &'static str,
    path: String,
) -> Result<serde_json::Value, StripeError> {
    get_json(api, endpoint, path, None).await
}

/// `retrieve_subscription` as Stripe's JSON, its item's product expanded as there.
pub async fn retrieve_subscription_raw(api: &StripeApi, id: &str) -> Result<serde_json::Value, StripeError> {
    get_json(
        api,
        "GET /v1/subscriptions/{id}",
        format!("/subscriptions/{id}"),
        Some("expand%5B%5D=items.data.price.product".to_owned()),
    )
    .await
}

/// `GET /v1/charges?payment_intent=`: a payment's charges, with their refunded totals.
pub async fn list_charges_of(
    api: &StripeApi,
    payment_intent: &str,
) -> Result<ObjectList<serde_json::Value>, StripeError> {
    list_of_payment(api, "GET /v1/charges", "/charges", payment_intent).await
}

/// `GET /v1/disputes?payment_intent=`: a payment's disputes.
pub async fn list_disputes_of(
    api: &StripeApi,
    payment_intent: &str,
) -> Result<ObjectList<serde_json::Value>, StripeError> {
    list_of_payment(api, "GET /v1/disputes", "/disputes", payment_intent).await
}

/// `GET /v1/refunds?payment_intent=`: a payment's refunds, with their statuses.
pub async fn list_refunds_of(
    api: &StripeApi,
    payment_intent: &str,
) -> Result<ObjectList<serde_json::Value>, StripeError> {
    list_of_payment(api, "GET /v1/refunds", "/refunds", payment_intent).await
}

/// One page of a list filtered to one payment; a payment has far fewer than 100 of any of them.
async fn list_of_payment(
    api: &StripeApi,
    endpoint: &'static str,
    path: &str,
    payment_intent: &str,
) -> Result<ObjectList<serde_json::Value>, StripeError> {
    let query = format!("limit=100&payment_intent={payment_intent}");
    get_json(api, endpoint, path.to_owned(), Some(query)).await
}
