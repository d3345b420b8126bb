//! Stripe objects as the emulator returns them: each starts from Stripe's own fixture and has the
//! fields of the case at hand set, so every response has the full shape of the real object.

use serde_json::{Value, json};

use super::{params::Params, pricing, session_request::SessionRequest};

const SESSION_FIXTURE: &str = include_str!("fixtures/checkout.session.json");
const EVENT_FIXTURE: &str = include_str!("fixtures/event.json");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentResult {
    /// A card that succeeds (4242 4242 4242 4242).
    Card,
    /// A delayed method (bank debit) that clears later.
    DelayedSucceeds,
    /// A delayed method that bounces.
    DelayedFails,
}

/// The wall clock; the emulator's own time is `EmulatorState::now`, which tests can move forward.
pub fn wall_clock() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A Stripe-looking id: prefix, then random-looking characters that are unique in this process.
pub fn new_id(prefix: &str, counter: &mut u64) -> String {
    *counter += 1;
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}_test_{}{:06}", &random[..18], counter)
}

/// Builds an open session from a creation request Stripe would accept.
pub fn new_session(request: &SessionRequest, public_base: &str, params: &Params, now: i64, counter: &mut u64) -> Value {
    let id = new_id("cs", counter);
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
    let amount = request.amount_subtotal();
    fields.insert(
        "total_details".into(),
        json!({ "amount_discount": 0, "amount_shipping": 0, "amount_tax": 0 }),
    );
    fields.insert("id".into(), json!(id));
    fields.insert("url".into(), json!(format!("{public_base}/c/pay/{id}")));
    fields.insert("mode".into(), json!(request.mode));
    fields.insert("status".into(), json!("open"));
    fields.insert("payment_status".into(), json!("unpaid"));
    fields.insert("amount_subtotal".into(), json!(amount));
    fields.insert("amount_total".into(), json!(amount));
    fields.insert("currency".into(), json!(request.currency));
    fields.insert("created".into(), json!(now));
    fields.insert("expires_at".into(), json!(request.expires_at));
    fields.insert(
        "automatic_tax".into(),
        json!({
            "enabled": request.automatic_tax,
            "liability": if request.automatic_tax { json!({ "type": "self" }) } else { Value::Null },
            "status": if request.automatic_tax { json!("requires_location_inputs") } else { Value::Null },
            "provider": if request.automatic_tax { json!("stripe") } else { Value::Null },
        }),
    );
    fields.insert("discounts".into(), json!([]));
    fields.insert(
        "allow_promotion_codes".into(),
        request.allow_promotion_codes.map_or(Value::Null, Value::Bool),
    );
    for field in ["client_reference_id", "customer_email", "success_url", "cancel_url"] {
        fields.insert(field.into(), params.get(field).map_or(Value::Null, |v| json!(v)));
    }
    fields.insert("metadata".into(), Value::Object(request.metadata.clone()));
    session
}

/// Completes an open session; returns it with the events its completion causes, in order. A
/// subscription that starts with a trial charges nothing now: the session completes
/// `no_payment_required` with a total of 0, whatever the method.
pub fn pay(
    mut session: Value,
    request: Option<&SessionRequest>,
    result: PaymentResult,
    counter: &mut u64,
) -> Option<(Value, Vec<(&'static str, Value)>)> {
    if session["status"] != "open" {
        return None;
    }
    let subscription = session["mode"] == "subscription";
    session["status"] = json!("complete");
    // A session created for a customer keeps it; any other gets a new one.
    if session["customer"].is_null() {
        session["customer"] = json!(new_id("cus", counter));
    }
    session["customer_details"] = json!({
        "address": null, "email": "customer@example.com", "name": "Test Customer", "phone": null,
        "tax_exempt": "none", "tax_ids": [], "business_name": null, "individual_name": null
    });
    if subscription {
        session["subscription"] = json!(new_id("sub", counter));
        // The subscription's first invoice, which `billing` issues under this id.
        session["invoice"] = json!(new_id("in", counter));
    } else {
        session["payment_intent"] = json!(new_id("pi", counter));
    }

    let mut events = Vec::new();
    let trial = subscription && request.is_some_and(|r| r.trial_period_days.is_some());
    if trial {
        // Nothing is due today: the line items are billed when the trial ends.
        session["amount_subtotal"] = json!(0);
    }
    // The buyer's address is known now, so Stripe Tax has its figure.
    pricing::settle_total(&mut session);
    match result {
        _ if trial => {
            session["payment_status"] = json!("no_payment_required");
            events.push(("checkout.session.completed", session.clone()));
        }
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

/// Whether a completed session's money is settled (or none was due), so what it buys starts.
pub fn is_settled(session: &Value) -> bool {
    session["payment_status"] == "paid" || session["payment_status"] == "no_payment_required"
}

pub fn expire(mut session: Value) -> Option<Value> {
    if session["status"] != "open" {
        return None;
    }
    session["status"] = json!("expired");
    session["url"] = Value::Null;
    Some(session)
}

pub fn event(event_type: &str, object: Value, now: i64, counter: &mut u64) -> Value {
    let mut event: Value = serde_json::from_str(EVENT_FIXTURE).expect("the fixture is JSON");
    event["id"] = json!(new_id("evt", counter));
    event["type"] = json!(event_type);
    event["created"] = json!(now);
    event["api_version"] = json!("2025-09-30.clover");
    event["pending_webhooks"] = json!(1);
    event["data"] = json!({ "object": object });
    event
}
