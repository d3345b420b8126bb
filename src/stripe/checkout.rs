//! Creating Checkout Sessions through async-stripe. The order exists before this is called; its id
//! travels to Stripe as `client_reference_id` and metadata (on the session, and on the payment
//! intent or subscription so their later events can be traced back) and keys the request's
//! idempotency, so a retried call can never open a second session for one order.

use std::{collections::HashMap, time::Duration};

use stripe::{Client, ClientBuilder, IdempotencyKey, RequestStrategy, StripeError, StripeRequest};
use stripe_checkout::checkout_session::{
    CreateCheckoutSession, CreateCheckoutSessionAutomaticTax, CreateCheckoutSessionLineItems,
    CreateCheckoutSessionLineItemsPriceData, CreateCheckoutSessionLineItemsPriceDataRecurring,
    CreateCheckoutSessionLineItemsPriceDataRecurringInterval, CreateCheckoutSessionPaymentIntentData,
    CreateCheckoutSessionSubscriptionData, ExpireCheckoutSession, ProductData,
};
use stripe_shared::CheckoutSessionMode;
use stripe_types::Currency;
use uuid::Uuid;

use super::api::StripeApi;
use crate::catalog::{Plan, PlanKind};

/// How long one attempt may take; Stripe answers in well under a second when it is healthy.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Transient failures are retried with the same idempotency key, so a retry is always safe.
const ATTEMPTS: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error(transparent)]
    Stripe(#[from] StripeError),
    #[error("Stripe returned a checkout session without a url")]
    MissingUrl,
}

pub fn build_client(secret_key: &str, api_base: &str) -> Result<Client, StripeError> {
    ClientBuilder::new(secret_key)
        // async-stripe appends `v1/...` to the base, so it must end with a slash.
        .url(format!("{}/", api_base.trim_end_matches('/')))
        .timeout(ATTEMPT_TIMEOUT)
        .app_info("entitle", Some(env!("CARGO_PKG_VERSION").to_owned()), None)
        .build()
}

pub struct CheckoutRequest<'a> {
    pub order_id: Uuid,
    pub user_id: &'a str,
    pub plan: &'a Plan,
    pub app_base_url: &'a str,
    /// `AUTOMATIC_TAX`: Stripe Tax adds tax on top of the plan's price.
    pub automatic_tax: bool,
    /// The user's Stripe customer (`customers`): the session, and the payment or subscription it
    /// makes, belong to it, so the billing portal shows them.
    pub customer: &'a str,
}

pub struct CreatedSession {
    pub id: String,
    pub url: String,
}

pub async fn create_checkout_session(
    api: &StripeApi,
    request: CheckoutRequest<'_>,
) -> Result<CreatedSession, ProviderError> {
    let params = session_params(&request);
    let key = IdempotencyKey::new(format!("entitle-checkout-{}", request.order_id))
        .expect("a uuid key is short and non-empty");
    let session = with_retries("creating the checkout session", || {
        api.call("POST /v1/checkout/sessions", |client| {
            params
                .customize()
                .request_strategy(RequestStrategy::Idempotent(key.clone()))
                .send(client)
        })
    })
    .await?;
    let url = session.url.ok_or(ProviderError::MissingUrl)?;
    Ok(CreatedSession {
        id: session.id.to_string(),
        url,
    })
}

/// Makes an idempotent call, again after a transient failure (with the same idempotency key, so a
/// retry is always safe), up to `ATTEMPTS` times; `what` names it in the log.
pub(super) async fn with_retries<T, F, Fut>(what: &'static str, mut send: F) -> Result<T, StripeError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StripeError>>,
{
    let mut attempt = 1;
    loop {
        match send().await {
            Err(err) if attempt < ATTEMPTS && is_transient(&err) => {
                tracing::warn!(
                    attempt,
                    http_status = %super::failure::HttpStatus(&err),
                    error = %err,
                    "{what} failed; retrying"
                );
                tokio::time::sleep(Duration::from_millis(200 * 2u64.pow(attempt - 1))).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

fn is_transient(err: &StripeError) -> bool {
    match err {
        StripeError::ClientError(_) | StripeError::Timeout => true,
        StripeError::Stripe(_, status) => matches!(status, 409 | 429 | 500..=599),
        StripeError::JSONDeserialize(_) | StripeError::ConfigError(_) => false,
    }
}

fn session_params(request: &CheckoutRequest<'_>) -> CreateCheckoutSession {
    let CheckoutRequest {
        order_id,
        user_id,
        plan,
        app_base_url,
        automatic_tax,
        customer,
    } = request;
    let metadata = HashMap::from([
        ("order_id".to_owned(), order_id.to_string()),
        ("user_id".to_owned(), user_id.to_string()),
        ("plan_id".to_owned(), plan.id.clone()),
    ]);

    let mut line_item = CreateCheckoutSessionLineItems::new();
    line_item.quantity = Some(1);
    match &plan.stripe_price {
        Some(price) => line_item.price = Some(price.clone()),
        None => line_item.price_data = Some(inline_price(plan)),
    }

    // Stripe replaces {CHECKOUT_SESSION_ID} itself; it must reach Stripe unencoded.
    let success_url = format!("{app_base_url}/checkout/return?order_id={order_id}&session_id={{CHECKOUT_SESSION_ID}}");
    let cancel_url = format!("{app_base_url}/checkout/return?order_id={order_id}&canceled=1");

    let mut session = CreateCheckoutSession::new()
        .client_reference_id(order_id.to_string())
        .metadata(metadata.clone())
        .line_items(vec![line_item])
        .success_url(success_url)
        .cancel_url(cancel_url)
        // Never with `customer_email` or `customer_creation`: Stripe refuses either beside it.
        .customer(customer.to_string());
    // Both change what the buyer pays but not the subtotal, which is what fulfilment checks
    // against the catalog; only sent when on, so a session without them is as it always was.
    if plan.allow_promotion_codes {
        session = session.allow_promotion_codes(true);
    }
    if *automatic_tax {
        session = session.automatic_tax(CreateCheckoutSessionAutomaticTax::new(true));
    }

    match plan.kind {
        PlanKind::OneTime => {
            let mut payment_intent_data = CreateCheckoutSessionPaymentIntentData::new();
            payment_intent_data.metadata = Some(metadata);
            session
                .mode(CheckoutSessionMode::Payment)
                .payment_intent_data(payment_intent_data)
        }
        PlanKind::Subscription => {
            let mut subscription_data = CreateCheckoutSessionSubscriptionData::new();
            subscription_data.metadata = Some(metadata);
            // The catalog keeps it within Stripe's 1 to 730 days.
            subscription_data.trial_period_days = plan.trial_days.and_then(|days| u32::try_from(days).ok());
            session
                .mode(CheckoutSessionMode::Subscription)
                .subscription_data(subscription_data)
        }
    }
}

fn inline_price(plan: &Plan) -> CreateCheckoutSessionLineItemsPriceData {
    let Ok(currency) = plan.currency.parse::<Currency>();
    let mut price = CreateCheckoutSessionLineItemsPriceData::new(currency);
    price.unit_amount = Some(plan.amount);
    price.product_data = Some(ProductData {
        name: plan.name.clone(),
        description: None,
        images: None,
        metadata: Some(HashMap::from([("plan_id".to_owned(), plan.id.clone())])),
        tax_code: None,
        unit_label: None,
        tax_details: None,
    });
    if plan.kind == PlanKind::Subscription {
        let interval = match plan.interval.as_deref() {
            Some("day") => CreateCheckoutSessionLineItemsPriceDataRecurringInterval::Day,
            Some("week") => CreateCheckoutSessionLineItemsPriceDataRecurringInterval::Week,
            Some("year") => CreateCheckoutSessionLineItemsPriceDataRecurringInterval::Year,
            _ => CreateCheckoutSessionLineItemsPriceDataRecurringInterval::Month,
        };
        price.recurring = Some(CreateCheckoutSessionLineItemsPriceDataRecurring::new(interval));
    }
    price
}

/// Closes an open session so it can no longer be paid; Stripe then sends `checkout.session.expired`.
/// Stripe refuses (4xx) when the session is already complete or expired.
pub async fn expire_checkout_session(api: &StripeApi, session_id: &str) -> Result<(), ProviderError> {
    let request = ExpireCheckoutSession::new(session_id);
    api.call("POST /v1/checkout/sessions/{id}/expire", |client| request.send(client))
        .await?;
    Ok(())
}
