//! Stripe objects as the emulator returns them: each starts from Stripe's own fixture and has the
//! fields of the case at hand set, so every response has the full shape of the real object.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

const SESSION_FIXTURE: &str = include_str!("fixtures/checkout.session.json");
const EVENT_FIXTURE: &str = include_str!("fixtures/event.json");
/// Sessions expire after 24 hours, as Stripe's do by default.
const SESSION_LIFETIME_SECS: i64 = 24 * 60 * 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentResult {
    /// A card that succeeds (4242 4242 4242 4242).
    Card,
    /// A delayed method (bank debit) that clears later.
    DelayedSucceeds,
    /// A delayed method that bounces.
    DelayedFails,
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A Stripe-looking id: prefix, then random-looking characters that are unique in this process.
pub fn new_id(prefix: &str, counter: &mut u64) -> String {
    *counter += 1;
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}_test_{}{:06}", &random[..18], counter)
}

/// Builds an open session from the create request's form parameters, or says which one is wrong.
pub fn new_session(params: &BTreeMap<String, String>, public_base: &str, counter: &mut u64) -> Result<Value, String> {
    let mode = params.get("mode").map(String::as_str).unwrap_or("payment");
    if !matches!(mode, "payment" | "subscription" | "setup") {
        return Err("mode".into());
    }
    let (amount_total, currency) = line_items_total(params)?;
    let id = new_id("cs", counter);
    let created = now();
    // Stripe accepts an expiry from 30 minutes to 24 hours ahead; the emulator takes any future time,
    // so tests and demos need not wait half an hour.
    let expires_at = match params.get("expires_at") {
        None => created + SESSION_LIFETIME_SECS,
        Some(at) => at
            .parse::<i64>()
            .ok()
            .filter(|at| *at > created)
            .ok_or_else(|| "expires_at".to_owned())?,
    };

    let mut session: Value = serde_json::from_str(SESSION_FIXTURE).expect("the fixture is JSON");
    let fields = session.as_object_mut().expect("a session is an object");
    // The fixture's placeholders that a fresh, uncustomised session does not have.
    for placeholder in [
        "shipping_cost",
        "currency_conversion",
        "collected_information",
        "shipping_address_collection",
        "after_expiration",
        "customer_details",
        "payment_intent",
    ] {
        fields.insert(placeholder.into(), Value::Null);
    }
    fields.insert(
        "total_details".into(),
        json!({ "amount_discount": 0, "amount_shipping": 0, "amount_tax": 0 }),
    );
    fields.insert("id".into(), json!(id));
    fields.insert("url".into(), json!(format!("{public_base}/c/pay/{id}")));
    fields.insert("mode".into(), json!(mode));
    fields.insert("status".into(), json!("open"));
    fields.insert("payment_status".into(), json!("unpaid"));
    fields.insert("amount_subtotal".into(), json!(amount_total));
    fields.insert("amount_total".into(), json!(amount_total));
    fields.insert("currency".into(), json!(currency));
    fields.insert("created".into(), json!(created));
    fields.insert("expires_at".into(), json!(expires_at));
    fields.insert(
        "client_reference_id".into(),
        params.get("client_reference_id").map_or(Value::Null, |v| json!(v)),
    );
    fields.insert(
        "customer_email".into(),
        params.get("customer_email").map_or(Value::Null, |v| json!(v)),
    );
    fields.insert(
        "success_url".into(),
        params.get("success_url").map_or(Value::Null, |v| json!(v)),
    );
    fields.insert(
        "cancel_url".into(),
        params.get("cancel_url").map_or(Value::Null, |v| json!(v)),
    );
    fields.insert("metadata".into(), Value::Object(nested_map(params, "metadata")));
    Ok(session)
}

/// Sums `line_items[i]` (inline `price_data` only; a `price` id is charged as its `unit_amount`
/// unknown here, so it is refused) and returns the total and the single currency.
fn line_items_total(params: &BTreeMap<String, String>) -> Result<(i64, String), String> {
    let mut total = 0i64;
    let mut currency: Option<String> = None;
    for index in 0.. {
        let prefix = format!("line_items[{index}]");
        if !params.keys().any(|key| key.starts_with(&prefix)) {
            if index == 0 {
                return Err("line_items".into());
            }
            break;
        }
        let get = |field: &str| params.get(&format!("{prefix}{field}"));
        let quantity: i64 = get("[quantity]")
            .map_or(Ok(1), |q| q.parse())
            .map_err(|_| format!("{prefix}[quantity]"))?;
        let unit_amount: i64 = get("[price_data][unit_amount]")
            .ok_or_else(|| format!("{prefix}[price_data][unit_amount]"))?
            .parse()
            .map_err(|_| format!("{prefix}[price_data][unit_amount]"))?;
        let item_currency = get("[price_data][currency]").ok_or_else(|| format!("{prefix}[price_data][currency]"))?;
        if currency.as_ref().is_some_and(|c| c != item_currency) {
            return Err(format!("{prefix}[price_data][currency]"));
        }
        currency = Some(item_currency.clone());
        total += unit_amount * quantity;
    }
    Ok((total, currency.unwrap_or_default()))
}

/// Collects `prefix[key]=value` parameters into a JSON object, as Stripe does for metadata.
fn nested_map(params: &BTreeMap<String, String>, prefix: &str) -> Map<String, Value> {
    params
        .iter()
        .filter_map(|(key, value)| {
            let inner = key.strip_prefix(prefix)?.strip_prefix('[')?.strip_suffix(']')?;
            (!inner.contains('[')).then(|| (inner.to_owned(), json!(value)))
        })
        .collect()
}

/// Completes an open session; returns it with the events its completion causes, in order.
pub fn pay(
    mut session: Value,
    result: PaymentResult,
    counter: &mut u64,
) -> Option<(Value, Vec<(&'static str, Value)>)> {
    if session["status"] != "open" {
        return None;
    }
    let subscription = session["mode"] == "subscription";
    session["status"] = json!("complete");
    session["customer"] = json!(new_id("cus", counter));
    session["customer_details"] = json!({
        "address": null, "email": "customer@example.com", "name": "Test Customer", "phone": null,
        "tax_exempt": "none", "tax_ids": [], "business_name": null, "individual_name": null
    });
    if subscription {
        session["subscription"] = json!(new_id("sub", counter));
    } else {
        session["payment_intent"] = json!(new_id("pi", counter));
    }

    let mut events = Vec::new();
    match result {
        PaymentResult::Card => {
            session["payment_status"] = json!("paid");
            events.push(("checkout.session.completed", session.clone()));
        }
        PaymentResult::DelayedSucceeds | PaymentResult::DelayedFails => {
            session["payment_status"] = json!("unpaid");
            events.push(("checkout.session.completed", session.clone()));
            if result == PaymentResult::DelayedSucceeds {
                session["payment_status"] = json!("paid");
                events.push(("checkout.session.async_payment_succeeded", session.clone()));
            } else {
                events.push(("checkout.session.async_payment_failed", session.clone()));
            }
        }
    }
    Some((session, events))
}

pub fn expire(mut session: Value) -> Option<Value> {
    if session["status"] != "open" {
        return None;
    }
    session["status"] = json!("expired");
    session["url"] = Value::Null;
    Some(session)
}

pub fn event(event_type: &str, object: Value, counter: &mut u64) -> Value {
    let mut event: Value = serde_json::from_str(EVENT_FIXTURE).expect("the fixture is JSON");
    event["id"] = json!(new_id("evt", counter));
    event["type"] = json!(event_type);
    event["created"] = json!(now());
    event["api_version"] = json!("2025-09-30.clover");
    event["pending_webhooks"] = json!(1);
    event["data"] = json!({ "object": object });
    event
}

/// Stripe's error body: `{"error": {"type", "message", "param"?}}`.
pub fn error_body(error_type: &str, message: &str, param: Option<&str>) -> Value {
    let mut error = json!({ "type": error_type, "message": message });
    if let Some(param) = param {
        error["param"] = json!(param);
        error["code"] = json!("parameter_missing");
    }
    json!({ "error": error })
}
