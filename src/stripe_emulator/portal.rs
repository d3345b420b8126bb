//! Stripe's customer portal: `POST /v1/billing_portal/sessions`, and what a customer does there to
//! their subscriptions and card (the page is `portal_page`). Each action changes the objects as
//! Stripe would and records the events Stripe sends, `*.updated` with `previous_attributes`; tests
//! may call the same methods the page does.

use axum::{
    Json,
    body::Bytes,
    extract::State,
    http::HeaderMap,
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use super::{
    EmulatorState, StripeEmulator, billing,
    customers::form_pairs,
    errors::ApiError,
    objects,
    params::{Params, Shape},
    record_change, record_event,
    subscription_update::{self, Proration},
};

/// Every parameter of portal session creation. `return_url` may be left out: the portal then
/// shows no way back, as Stripe's does when the configuration has no default either.
const CREATE_PORTAL_SESSION: &[(&str, Shape)] = &[
    ("configuration", Shape::Str),
    ("customer", Shape::Str),
    ("customer_account", Shape::Str),
    ("expand", Shape::List(&Shape::Str)),
    ("flow_data", Shape::Opaque),
    ("locale", Shape::Str),
    ("on_behalf_of", Shape::Str),
    ("return_url", Shape::Str),
];
/// The account's default portal configuration, which every session without one uses.
const DEFAULT_CONFIGURATION: &str = "bpc_test_emulator_default";

pub async fn create_portal_session(
    State(emulator): State<StripeEmulator>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let pairs = form_pairs(&body);
    let mut state = emulator.lock();
    state.record_post("/v1/billing_portal/sessions", &headers, &pairs);
    let params = Params::new(&pairs);
    if let Err(err) = params.check(CREATE_PORTAL_SESSION) {
        return err.into_response();
    }
    let Some(customer) = params.get("customer") else {
        return ApiError::missing("customer").into_response();
    };
    if !state.customers.by_id.contains_key(customer) {
        return ApiError::resource_missing("customer", customer, "customer").into_response();
    }
    let id = objects::new_id("bps", &mut state.next_id);
    let optional = |name: &str| params.get(name).map_or(Value::Null, |v| json!(v));
    let session = json!({
        "id": id,
        "object": "billing_portal.session",
        "configuration": params.get("configuration").unwrap_or(DEFAULT_CONFIGURATION),
        "created": state.now(),
        "customer": customer,
        "customer_account": null,
        "flow": null,
        "livemode": false,
        "locale": optional("locale"),
        "on_behalf_of": optional("on_behalf_of"),
        "return_url": optional("return_url"),
        "url": format!("{}/p/session/{id}", emulator.public_base),
    });
    state.customers.portal_sessions.insert(id, session.clone());
    Json(session).into_response()
}

/// What the customer does to one subscription in the portal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortalAction {
    /// Ends it now: `customer.subscription.deleted`.
    CancelNow,
    /// It runs to the end of the paid period and then ends.
    CancelAtPeriodEnd,
    /// Undoes a cancellation at the period end.
    Resume,
}

impl PortalAction {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "cancel_now" => Some(Self::CancelNow),
            "cancel_at_period_end" => Some(Self::CancelAtPeriodEnd),
            "resume" => Some(Self::Resume),
            _ => None,
        }
    }
}

/// A plan the portal offers a subscription: another recurring Price of the emulator's price book
/// (the portal switches only between real Prices) in the same currency and interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanOffer {
    pub price_id: String,
    pub product_name: String,
    pub unit_amount: i64,
}

/// How the portal made a switch, as a portal configured with Stripe's usual choices does: an
/// upgrade at once with the proration invoiced now, a downgrade at the period end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanSwitch {
    Upgraded,
    DowngradeScheduled,
}

/// Why the portal refused a card.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardRefused {
    Declined,
    IncorrectNumber,
}

impl StripeEmulator {
    pub fn portal_session(&self, id: &str) -> Option<Value> {
        self.lock().customers.portal_sessions.get(id).cloned()
    }

    /// The customer's subscriptions, newest first.
    pub fn subscriptions_of(&self, customer: &str) -> Vec<Value> {
        subscriptions_of(&self.lock(), customer)
    }

    /// The Prices the portal offers this subscription instead of its own, cheapest first.
    pub fn plan_offers(&self, subscription: &Value) -> Vec<PlanOffer> {
        plan_offers(&self.lock(), subscription)
    }

    /// The customer of the portal session switches one of their live subscriptions to one of its
    /// `plan_offers`; `None` when the subscription is not theirs, has ended, or the price is not
    /// on offer to it.
    pub fn portal_switch_plan(
        &self,
        portal_session_id: &str,
        subscription_id: &str,
        price_id: &str,
    ) -> Option<PlanSwitch> {
        let mut state = self.lock();
        let customer = portal_customer(&state, portal_session_id)?;
        let subscription = state.billing.subscriptions.get(subscription_id)?.clone();
        if subscription["customer"] != customer.as_str() || !is_live(&subscription) {
            return None;
        }
        let offer = plan_offers(&state, &subscription)
            .into_iter()
            .find(|offer| offer.price_id == price_id)?;
        let current = subscription["items"]["data"][0]["price"]["unit_amount"]
            .as_i64()
            .unwrap_or_default();
        if offer.unit_amount > current {
            subscription_update::change_price(&mut state, subscription_id, price_id, Proration::AlwaysInvoice).ok()?;
            Some(PlanSwitch::Upgraded)
        } else {
            subscription_update::schedule_price_change(&mut state, subscription_id, price_id).ok()?;
            Some(PlanSwitch::DowngradeScheduled)
        }
    }

    /// The customer of the portal session changes one of their subscriptions; the events Stripe
    /// sends for it, or `None` when the subscription is not theirs or the action does not apply to
    /// it now (resuming one that is not set to cancel, cancelling one that has ended).
    pub fn portal_change_subscription(
        &self,
        portal_session_id: &str,
        subscription_id: &str,
        action: PortalAction,
    ) -> Option<Vec<Value>> {
        let mut state = self.lock();
        let customer = portal_customer(&state, portal_session_id)?;
        let subscription = state.billing.subscriptions.get(subscription_id)?.clone();
        if subscription["customer"] != customer.as_str() || !is_live(&subscription) {
            return None;
        }
        let scheduled = subscription["cancel_at_period_end"] == true;
        let (changed, event) = match action {
            PortalAction::CancelAtPeriodEnd if !scheduled => {
                let end = subscription["items"]["data"][0]["current_period_end"].clone();
                let changed = with_cancellation(&subscription, true, end, json!(state.now()));
                let previous = previous_cancellation(&subscription);
                (
                    changed.clone(),
                    record_change(&mut state, "customer.subscription.updated", changed, previous),
                )
            }
            PortalAction::Resume if scheduled => {
                let changed = with_cancellation(&subscription, false, Value::Null, Value::Null);
                let previous = previous_cancellation(&subscription);
                (
                    changed.clone(),
                    record_change(&mut state, "customer.subscription.updated", changed, previous),
                )
            }
            PortalAction::CancelNow => {
                let now = json!(state.now());
                let canceled_at = match subscription["canceled_at"].is_null() {
                    true => now.clone(),
                    false => subscription["canceled_at"].clone(),
                };
                let mut changed = with_cancellation(&subscription, false, Value::Null, canceled_at);
                changed["status"] = json!("canceled");
                changed["ended_at"] = now;
                (
                    changed.clone(),
                    record_event(&mut state, "customer.subscription.deleted", changed),
                )
            }
            _ => return None,
        };
        state.billing.subscriptions.insert(subscription_id.to_owned(), changed);
        Some(vec![event])
    }

    /// The customer of the portal session gives a new card (a test card number): it becomes the
    /// customer's default, and Stripe retries the open invoice of each `past_due` subscription of
    /// theirs with it, which is paid now. The events Stripe sends, oldest first.
    pub fn portal_update_card(&self, portal_session_id: &str, card_number: &str) -> Result<Vec<Value>, CardRefused> {
        let last4 = match card_number
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
            .as_str()
        {
            "4242424242424242" => "4242",
            "5555555555554444" => "4444",
            "4000000000000002" | "4000000000009995" => return Err(CardRefused::Declined),
            _ => return Err(CardRefused::IncorrectNumber),
        };
        let mut state = self.lock();
        let customer_id = portal_customer(&state, portal_session_id).ok_or(CardRefused::IncorrectNumber)?;
        let mut events = Vec::new();

        let payment_method = new_card(&mut state, &customer_id, last4);
        let payment_method_id = payment_method["id"].clone();
        events.push(record_event(&mut state, "payment_method.attached", payment_method));
        if let Some(mut customer) = state.customers.by_id.get(&customer_id).cloned() {
            let previous = json!({ "invoice_settings": {
                "default_payment_method": customer["invoice_settings"]["default_payment_method"].clone()
            }});
            customer["invoice_settings"]["default_payment_method"] = payment_method_id;
            state.customers.by_id.insert(customer_id.clone(), customer.clone());
            events.push(record_change(&mut state, "customer.updated", customer, previous));
        }

        let past_due: Vec<Value> = subscriptions_of(&state, &customer_id)
            .into_iter()
            .filter(|s| s["status"] == "past_due")
            .collect();
        for mut subscription in past_due {
            let paid = subscription["latest_invoice"]
                .as_str()
                .and_then(|invoice_id| billing::pay_open_invoice(&mut state, invoice_id));
            let Some(invoice) = paid else { continue };
            events.push(record_event(&mut state, "invoice.paid", invoice));
            subscription["status"] = json!("active");
            let id = subscription["id"].as_str().unwrap_or_default().to_owned();
            state.billing.subscriptions.insert(id, subscription.clone());
            events.push(record_change(
                &mut state,
                "customer.subscription.updated",
                subscription,
                json!({ "status": "past_due" }),
            ));
        }
        Ok(events)
    }
}

fn plan_offers(state: &EmulatorState, subscription: &Value) -> Vec<PlanOffer> {
    let current = &subscription["items"]["data"][0]["price"];
    let mut offers: Vec<PlanOffer> = state
        .price_book
        .iter()
        .filter(|(id, entry)| {
            let price = &entry.price;
            current["id"] != id.as_str()
                && price["active"] != false
                && price["currency"] == current["currency"]
                && !price["recurring"].is_null()
                && price["recurring"]["interval"] == current["recurring"]["interval"]
        })
        .map(|(id, entry)| PlanOffer {
            price_id: id.clone(),
            product_name: entry.product_name.clone(),
            unit_amount: entry.price["unit_amount"].as_i64().unwrap_or_default(),
        })
        .collect();
    offers.sort_by(|a, b| (a.unit_amount, &a.price_id).cmp(&(b.unit_amount, &b.price_id)));
    offers
}

fn portal_customer(state: &EmulatorState, portal_session_id: &str) -> Option<String> {
    let session = state.customers.portal_sessions.get(portal_session_id)?;
    session["customer"].as_str().map(str::to_owned)
}

fn subscriptions_of(state: &EmulatorState, customer: &str) -> Vec<Value> {
    let mut subscriptions: Vec<Value> = state
        .billing
        .subscriptions
        .values()
        .filter(|s| s["customer"] == customer)
        .cloned()
        .collect();
    subscriptions.sort_by_key(|s| std::cmp::Reverse(s["created"].as_i64().unwrap_or_default()));
    subscriptions
}

/// A subscription the portal can still change: not ended.
pub fn is_live(subscription: &Value) -> bool {
    !matches!(subscription["status"].as_str(), Some("canceled" | "incomplete_expired"))
}

fn with_cancellation(subscription: &Value, at_period_end: bool, cancel_at: Value, canceled_at: Value) -> Value {
    let mut changed = subscription.clone();
    changed["cancel_at_period_end"] = json!(at_period_end);
    changed["cancel_at"] = cancel_at;
    let requested = !canceled_at.is_null();
    changed["canceled_at"] = canceled_at;
    changed["cancellation_details"] = json!({
        "comment": null,
        "feedback": null,
        "reason": if requested { json!("cancellation_requested") } else { Value::Null },
    });
    changed
}

/// The cancellation fields as they were, for `previous_attributes`.
fn previous_cancellation(subscription: &Value) -> Value {
    json!({
        "cancel_at": subscription["cancel_at"],
        "cancel_at_period_end": subscription["cancel_at_period_end"],
        "canceled_at": subscription["canceled_at"],
        "cancellation_details": subscription["cancellation_details"],
    })
}

fn new_card(state: &mut EmulatorState, customer: &str, last4: &str) -> Value {
    let id = objects::new_id("pm", &mut state.next_id);
    let brand = if last4 == "4444" { "mastercard" } else { "visa" };
    let card = json!({
        "id": id,
        "object": "payment_method",
        "type": "card",
        "customer": customer,
        "created": state.now(),
        "livemode": false,
        "metadata": {},
        "billing_details": { "address": null, "email": null, "name": null, "phone": null },
        "card": { "brand": brand, "last4": last4, "exp_month": 12, "exp_year": 2034, "funding": "credit", "country": "US" },
    });
    state.customers.payment_methods.insert(id, card.clone());
    card
}
