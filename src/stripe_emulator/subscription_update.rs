//! `POST /v1/subscriptions/{id}` for what a plan change sends (`items`, `proration_behavior`,
//! `cancel_at_period_end`, `metadata`), and `change_price`, the same change for the emulator's own
//! pages (the billing portal). A price change sends `customer.subscription.updated` with the old
//! items in `previous_attributes`; its proration is invoiced and paid at once (`always_invoice`),
//! left for the next renewal's invoice (`create_prorations`, Stripe's default) or dropped (`none`).
//!
//! A downgrade at the period end is what Stripe does with a subscription schedule whose next phase
//! has the lower price: `schedule_price_change` attaches such a schedule (the subscription's
//! `schedule` names it), and when the period ends the price changes, with the same
//! `customer.subscription.updated` an immediate change sends, before the next period is billed at
//! the new price.

use axum::{
    Json,
    body::Bytes,
    extract::{Path, State},
    http::HeaderMap,
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use super::{
    EmulatorState, RecordedRequest, StripeEmulator, billing,
    errors::ApiError,
    objects,
    params::{Params, Shape},
    prices, record_update,
};

/// How a price change is charged for the rest of the current period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proration {
    /// Stripe's default: the difference goes on the next renewal's invoice.
    CreateProrations,
    /// The difference is invoiced and paid now (`billing_reason: subscription_update`).
    AlwaysInvoice,
    /// The new price starts with the next period's invoice; the rest of this one is not charged.
    None,
}

impl Proration {
    fn parse(value: &str) -> Option<Self> {
        match value {
            "create_prorations" => Some(Self::CreateProrations),
            "always_invoice" => Some(Self::AlwaysInvoice),
            "none" => Some(Self::None),
            _ => None,
        }
    }
}

const PRICE_DATA: Shape = Shape::Obj(&[
    ("currency", Shape::Currency),
    ("product", Shape::Str),
    (
        "recurring",
        Shape::Obj(&[
            ("interval", Shape::Enum(&["day", "month", "week", "year"])),
            ("interval_count", Shape::Int { min: 1 }),
        ]),
    ),
    ("tax_behavior", Shape::Enum(&["exclusive", "inclusive", "unspecified"])),
    ("unit_amount", Shape::Int { min: 0 }),
    ("unit_amount_decimal", Shape::Str),
]);
const ITEM: Shape = Shape::Obj(&[
    ("id", Shape::Str),
    ("deleted", Shape::Bool),
    ("metadata", Shape::Metadata),
    ("price", Shape::Str),
    ("price_data", PRICE_DATA),
    ("quantity", Shape::Int { min: 0 }),
]);
const UPDATE_SUBSCRIPTION: &[(&str, Shape)] = &[
    ("cancel_at_period_end", Shape::Bool),
    ("expand", Shape::List(&Shape::Str)),
    ("items", Shape::List(&ITEM)),
    ("metadata", Shape::Metadata),
    (
        "proration_behavior",
        Shape::Enum(&["always_invoice", "create_prorations", "none"]),
    ),
    ("proration_date", Shape::Int { min: 0 }),
];

pub async fn update_subscription(
    State(emulator): State<StripeEmulator>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let mut state = emulator.lock();
    state.requests.push(RecordedRequest {
        method: "POST".into(),
        path: format!("/v1/subscriptions/{id}"),
        params: pairs.iter().cloned().collect(),
        idempotency_key: headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    });
    match apply_update(&mut state, &id, &Params::new(&pairs)) {
        Ok(subscription) => Json(subscription).into_response(),
        Err(err) => err.into_response(),
    }
}

/// Checks every parameter before changing anything, as Stripe does, then applies them in one go.
fn apply_update(state: &mut EmulatorState, id: &str, params: &Params) -> Result<Value, ApiError> {
    params.check(UPDATE_SUBSCRIPTION)?;
    let subscription = state
        .billing
        .subscriptions
        .get(id)
        .cloned()
        .ok_or_else(|| ApiError::no_such("subscription", id, "id"))?;
    if subscription["status"] == "canceled" {
        return Err(ApiError::refused(
            "id",
            "A canceled subscription can only update its cancellation_details and metadata.".into(),
        ));
    }
    let proration = params
        .get("proration_behavior")
        .map_or(Proration::CreateProrations, |v| {
            Proration::parse(v).unwrap_or(Proration::CreateProrations)
        });
    let new_price = match params.indices("items").as_slice() {
        [] => None,
        [index] => Some(item_price(state, &subscription, params, *index)?),
        _ => {
            return Err(ApiError::refused(
                "items",
                "The emulator's subscriptions have one item; send only `items[0]`.".into(),
            ));
        }
    };

    if params.has("metadata") || params.has("cancel_at_period_end") {
        let mut subscription = subscription;
        let mut previous = json!({});
        if params.has("metadata") {
            previous["metadata"] = subscription["metadata"].clone();
            let metadata = subscription["metadata"].as_object_mut().expect("metadata is an object");
            for (key, value) in params.metadata("metadata") {
                metadata.insert(key, value);
            }
        }
        if let Some(cancel) = params.flag("cancel_at_period_end") {
            previous["cancel_at_period_end"] = subscription["cancel_at_period_end"].clone();
            subscription["cancel_at_period_end"] = json!(cancel);
            subscription["cancel_at"] = match cancel {
                true => subscription["items"]["data"][0]["current_period_end"].clone(),
                false => Value::Null,
            };
            subscription["canceled_at"] = match cancel {
                true => json!(state.now()),
                false => Value::Null,
            };
        }
        state.billing.subscriptions.insert(id.to_owned(), subscription.clone());
        if new_price.is_none() {
            record_update(state, subscription, previous);
        }
    }
    if let Some(price) = new_price {
        change_to(state, id, price, proration);
    }
    Ok(state.billing.subscriptions[id].clone())
}

/// The Price `items[index]` names (by id or as `price_data`), for the subscription's one item.
fn item_price(
    state: &mut EmulatorState,
    subscription: &Value,
    params: &Params,
    index: usize,
) -> Result<Value, ApiError> {
    let name = |field: &str| format!("items[{index}][{field}]");
    let item_id = params.get(&name("id")).ok_or_else(|| {
        ApiError::refused(
            &name("id"),
            "The emulator's subscriptions have one item: name it with `items[0][id]` to change its price.".into(),
        )
    })?;
    if subscription["items"]["data"][0]["id"] != item_id {
        return Err(ApiError::resource_missing("subscription_item", item_id, &name("id")));
    }
    match (params.get(&name("price")), params.has(&name("price_data"))) {
        (Some(_), true) => Err(ApiError::exclusive(&name("price"), &name("price_data"))),
        (Some(price_id), false) => state
            .price_book
            .get(price_id)
            .map(|entry| entry.price.clone())
            .ok_or_else(|| ApiError::resource_missing("price", price_id, &name("price"))),
        (None, true) => {
            let field = |inner: &str| format!("items[{index}][price_data][{inner}]");
            let currency = params
                .get(&field("currency"))
                .ok_or_else(|| ApiError::missing(&field("currency")))?;
            let product = params
                .get(&field("product"))
                .ok_or_else(|| ApiError::missing(&field("product")))?;
            if !state.billing.products.contains_key(product) {
                return Err(ApiError::resource_missing("product", product, &field("product")));
            }
            let interval = params
                .get(&field("recurring][interval"))
                .ok_or_else(|| ApiError::missing(&field("recurring][interval")))?;
            let unit_amount = params
                .int(&field("unit_amount"))
                .ok_or_else(|| ApiError::missing(&field("unit_amount")))?;
            let now = state.now();
            Ok(prices::price_object(
                now,
                &objects::new_id("price", &mut state.next_id),
                product,
                unit_amount,
                &currency.to_ascii_lowercase(),
                Some(interval),
            ))
        }
        (None, false) => Err(ApiError::missing(&name("price"))),
    }
}

/// Moves the subscription's item to `new_price_id` (a Price in the emulator's book) now, charging
/// the rest of the period as `proration` says; the billing portal's plan switch calls this.
pub fn change_price(
    state: &mut EmulatorState,
    subscription_id: &str,
    new_price_id: &str,
    proration: Proration,
) -> Result<Value, ApiError> {
    let price = state
        .price_book
        .get(new_price_id)
        .map(|entry| entry.price.clone())
        .ok_or_else(|| ApiError::resource_missing("price", new_price_id, "items[0][price]"))?;
    if !state.billing.subscriptions.contains_key(subscription_id) {
        return Err(ApiError::no_such("subscription", subscription_id, "id"));
    }
    change_to(state, subscription_id, price, proration);
    Ok(state.billing.subscriptions[subscription_id].clone())
}

/// The new price takes the item from now: `customer.subscription.updated` with the old items,
/// then the proration as asked.
fn change_to(state: &mut EmulatorState, subscription_id: &str, price: Value, proration: Proration) {
    let Some(mut subscription) = state.billing.subscriptions.get(subscription_id).cloned() else {
        return;
    };
    let previous = json!({ "items": subscription["items"].clone() });
    let old_price = subscription["items"]["data"][0]["price"].clone();
    subscription["items"]["data"][0]["price"] = price.clone();
    subscription["schedule"] = Value::Null;
    state.billing.scheduled_prices.remove(subscription_id);
    state
        .billing
        .subscriptions
        .insert(subscription_id.to_owned(), subscription.clone());
    record_update(state, subscription.clone(), previous);

    let item = &subscription["items"]["data"][0];
    let quantity = item["quantity"].as_i64().unwrap_or(1);
    let (start, end) = (
        item["current_period_start"].as_i64().unwrap_or_default(),
        item["current_period_end"].as_i64().unwrap_or_default(),
    );
    let now = state.now().clamp(start, end);
    // The unused time on the old price is credited, the rest of the period on the new one charged.
    let left = |price: &Value| {
        let full = price["unit_amount"].as_i64().unwrap_or_default() * quantity;
        if end > start {
            full * (end - now) / (end - start)
        } else {
            0
        }
    };
    let (credited, charged) = (left(&old_price), left(&price));
    match proration {
        Proration::None => {}
        Proration::CreateProrations => {
            *state
                .billing
                .pending_prorations
                .entry(subscription_id.to_owned())
                .or_default() += charged - credited;
        }
        Proration::AlwaysInvoice => {
            // A credit larger than the charge is left on the customer's balance: nothing is due now.
            let due = (charged - credited).max(0);
            let mut invoice = billing::new_invoice(state, &subscription, "subscription_update", true, due, None);
            let line = invoice["lines"]["data"][0].clone();
            let proration_line = |amount: i64, price: &Value, description: String| {
                let mut line = line.clone();
                line["amount"] = json!(amount);
                line["description"] = json!(description);
                line["period"] = json!({ "start": now, "end": end });
                line["pricing"] = json!({
                    "type": "price_details",
                    "price_details": { "price": price["id"], "product": price["product"] },
                    "unit_amount_decimal": null
                });
                line
            };
            invoice["lines"]["data"] = json!([
                proration_line(-credited, &old_price, "Unused time on the old price".into()),
                proration_line(charged, &price, "Remaining time on the new price".into()),
            ]);
            invoice["lines"]["total_count"] = json!(2);
            if let Some(id) = invoice["id"].as_str()
                && let Some(stored) = state.billing.invoices.get_mut(id)
            {
                stored["lines"] = invoice["lines"].clone();
            }
            subscription["latest_invoice"] = invoice["id"].clone();
            state
                .billing
                .subscriptions
                .insert(subscription_id.to_owned(), subscription);
            super::record_event(state, "invoice.paid", invoice);
        }
    }
}

/// Schedules the subscription's move to `new_price_id` for its period end (a downgrade, as the
/// billing portal does them): the subscription names its schedule and sends
/// `customer.subscription.updated`; nothing is charged or changed until the period ends.
pub fn schedule_price_change(
    state: &mut EmulatorState,
    subscription_id: &str,
    new_price_id: &str,
) -> Result<Value, ApiError> {
    let price = state
        .price_book
        .get(new_price_id)
        .map(|entry| entry.price.clone())
        .ok_or_else(|| ApiError::resource_missing("price", new_price_id, "phases[1][items][0][price]"))?;
    let mut subscription = state
        .billing
        .subscriptions
        .get(subscription_id)
        .cloned()
        .ok_or_else(|| ApiError::no_such("subscription", subscription_id, "id"))?;
    let schedule_id = objects::new_id("sub_sched", &mut state.next_id);
    let previous = json!({ "schedule": subscription["schedule"].clone() });
    subscription["schedule"] = json!(schedule_id);
    state
        .billing
        .scheduled_prices
        .insert(subscription_id.to_owned(), (schedule_id, price));
    state
        .billing
        .subscriptions
        .insert(subscription_id.to_owned(), subscription.clone());
    record_update(state, subscription.clone(), previous);
    Ok(subscription)
}

/// At the period end, a scheduled price takes over (its schedule is then released, as a
/// schedule whose last phase has begun is), before the next period is billed at it.
pub(super) fn apply_scheduled_price(state: &mut EmulatorState, subscription_id: &str) -> Vec<Value> {
    let Some((_, price)) = state.billing.scheduled_prices.remove(subscription_id) else {
        return Vec::new();
    };
    let Some(mut subscription) = state.billing.subscriptions.get(subscription_id).cloned() else {
        return Vec::new();
    };
    let previous = json!({ "items": subscription["items"].clone(), "schedule": subscription["schedule"].clone() });
    subscription["items"]["data"][0]["price"] = price;
    subscription["schedule"] = Value::Null;
    state
        .billing
        .subscriptions
        .insert(subscription_id.to_owned(), subscription.clone());
    vec![record_update(state, subscription, previous)]
}

impl StripeEmulator {
    /// `change_price`, for tests and the emulator's pages.
    pub fn change_price(
        &self,
        subscription_id: &str,
        new_price_id: &str,
        proration: Proration,
    ) -> Result<Value, ApiError> {
        change_price(&mut self.lock(), subscription_id, new_price_id, proration)
    }

    /// `schedule_price_change`, for tests and the emulator's pages.
    pub fn schedule_price_change(&self, subscription_id: &str, new_price_id: &str) -> Result<Value, ApiError> {
        schedule_price_change(&mut self.lock(), subscription_id, new_price_id)
    }
}
