//! Moving a subscription to another plan at Stripe: `POST /v1/subscriptions/{id}` replacing its
//! item's price, through async-stripe's client (its request builder, so the call gets the client's
//! authentication, API version, idempotency and error handling). A plan the service prices inline
//! gets a Product of its own (`POST /v1/products` with a fixed id and `metadata[plan_id]`), which
//! is how the plan is recognised when Stripe later shows the price.

use stripe::{IdempotencyKey, RequestStrategy, StripeError};
use stripe_client_core::{RequestBuilder, StripeMethod};
use stripe_shared::ApiErrorsCode;
use url::form_urlencoded::Serializer;

use super::{api::StripeApi, lifecycle_objects::SubscriptionObject};
use crate::catalog::Plan;

/// The Product a plan's inline prices belong to: one per plan, made once, found by id.
pub fn plan_product_id(plan_id: &str) -> String {
    format!("entitle_plan_{plan_id}")
}

/// The change to send: the item to replace and how Stripe charges the rest of the period.
pub struct PriceChange<'a> {
    pub subscription_id: &'a str,
    pub item_id: &'a str,
    pub plan: &'a Plan,
    /// Stripe's `proration_behavior`: `always_invoice`, `create_prorations` or `none`.
    pub proration_behavior: &'static str,
}

async fn post_form<T: serde::de::DeserializeOwned>(
    api: &StripeApi,
    endpoint: &'static str,
    path: String,
    form: String,
    key: Option<IdempotencyKey>,
) -> Result<T, StripeError> {
    let mut request = RequestBuilder::new(StripeMethod::Post, path);
    request.body = Some(form);
    let value: miniserde::json::Value = api
        .call(endpoint, |client| {
            let customized = request.customize();
            match key {
                Some(key) => customized
                    .request_strategy(RequestStrategy::Idempotent(key))
                    .send(client),
                None => customized.send(client),
            }
        })
        .await?;
    serde_json::from_str(&miniserde::json::to_string(&value))
        .map_err(|err| StripeError::JSONDeserialize(err.to_string()))
}

/// Makes sure the plan's Product exists (Stripe answers `resource_already_exists` once it does).
pub async fn ensure_plan_product(api: &StripeApi, plan: &Plan) -> Result<(), StripeError> {
    let form = {
        Serializer::new(String::new())
            .append_pair("id", &plan_product_id(&plan.id))
            .append_pair("name", &plan.name)
            .append_pair("metadata[plan_id]", &plan.id)
            .finish()
    };
    match post_form::<serde_json::Value>(api, "POST /v1/products", "/products".into(), form, None).await {
        Ok(_) => Ok(()),
        Err(StripeError::Stripe(err, 400)) if err.code == Some(ApiErrorsCode::ResourceAlreadyExists) => Ok(()),
        Err(err) => Err(err),
    }
}

/// Replaces the subscription item's price with the plan's: its `stripe_price`, or inline price
/// data under the plan's Product. Keyed so a retried request cannot change the price twice.
pub async fn change_subscription_price(
    api: &StripeApi,
    change: &PriceChange<'_>,
) -> Result<SubscriptionObject, StripeError> {
    let form = price_change_form(change);
    let key = IdempotencyKey::new(format!(
        "entitle-plan-change-{}-{}-{}",
        change.subscription_id, change.item_id, change.plan.id
    ))
    .map_err(|err| StripeError::ConfigError(err.to_string()))?;
    post_form(
        api,
        "POST /v1/subscriptions/{id}",
        format!("/subscriptions/{}", change.subscription_id),
        form,
        Some(key),
    )
    .await
}

/// The form, built apart: `url`'s serializer is not `Send`, so it must not live across an await.
fn price_change_form(change: &PriceChange<'_>) -> String {
    let plan = change.plan;
    let mut form = Serializer::new(String::new());
    form.append_pair("items[0][id]", change.item_id);
    match &plan.stripe_price {
        Some(price) => {
            form.append_pair("items[0][price]", price);
        }
        None => {
            form.append_pair("items[0][price_data][currency]", &plan.currency)
                .append_pair("items[0][price_data][product]", &plan_product_id(&plan.id))
                .append_pair("items[0][price_data][unit_amount]", &plan.amount.to_string())
                .append_pair(
                    "items[0][price_data][recurring][interval]",
                    plan.interval.as_deref().unwrap_or("month"),
                );
        }
    }
    form.append_pair("proration_behavior", change.proration_behavior);
    form.finish()
}
