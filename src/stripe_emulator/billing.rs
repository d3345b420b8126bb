//! The emulator's money after checkout: the subscription a subscription-mode checkout starts, the
//! invoices and charges that pay for things, refunds and disputes. Tests drive these through the
//! methods below, each of which changes state like Stripe would and records the events Stripe
//! would send (returned too, so a test can deliver them in whatever order it wants to prove).

use std::collections::{HashMap, HashSet};

use serde_json::{Value, json};

use super::{EmulatorState, StripeEmulator, objects, prices, record_event};

const SUBSCRIPTION_FIXTURE: &str = include_str!("fixtures/subscription.json");
const INVOICE_FIXTURE: &str = include_str!("fixtures/invoice.json");
const CHARGE_FIXTURE: &str = include_str!("fixtures/charge.json");
const DISPUTE_FIXTURE: &str = include_str!("fixtures/dispute.json");
const REFUND_FIXTURE: &str = include_str!("fixtures/refund.json");
const DAY_SECS: i64 = 24 * 60 * 60;

#[derive(Default)]
pub struct BillingState {
    pub subscriptions: HashMap<String, Value>,
    pub invoices: HashMap<String, Value>,
    pub charges: HashMap<String, Value>,
    pub disputes: HashMap<String, Value>,
    pub refunds: HashMap<String, Value>,
    /// Products by id: the book's, those made for `product_data`, those made with `POST /v1/products`.
    pub products: HashMap<String, Value>,
    /// Subscriptions whose card declines what `clock/advance` bills.
    pub declining: HashSet<String>,
    /// What price changes made with `create_prorations` add to each subscription's next invoice.
    pub pending_prorations: HashMap<String, i64>,
    /// Price changes scheduled for a subscription's period end: (schedule id, the new price).
    pub scheduled_prices: HashMap<String, (String, Value)>,
}

/// A paid session's aftermath: its charge (one-time) or its subscription with a first paid invoice
/// (of 0 when it starts with a trial). Returns the extra events, newest last.
pub fn after_paid_session(state: &mut EmulatorState, session: &Value) -> Vec<Value> {
    let amount = session["amount_total"].as_i64().unwrap_or_default();
    let customer = session["customer"].clone();
    if let Some(payment_intent) = session["payment_intent"].as_str() {
        new_charge(state, amount, payment_intent, &customer);
        return Vec::new();
    }
    let Some(subscription_id) = session["subscription"].as_str() else {
        return Vec::new();
    };
    let request = session["id"]
        .as_str()
        .and_then(|id| state.requests_by_session.get(id))
        .cloned();
    let start = state.now();
    let mut subscription: Value = serde_json::from_str(SUBSCRIPTION_FIXTURE).expect("the fixture is JSON");
    subscription["id"] = json!(subscription_id);
    subscription["customer"] = customer;
    subscription["status"] = json!("active");
    // What `subscription_data[metadata]` said: Stripe never copies the session's own metadata.
    subscription["metadata"] = request
        .as_ref()
        .map_or_else(|| json!({}), |r| Value::Object(r.subscription_metadata.clone()));
    subscription["cancel_at_period_end"] = json!(false);
    subscription["currency"] = session["currency"].clone();
    for field in ["cancel_at", "canceled_at", "ended_at", "trial_end", "trial_start"] {
        subscription[field] = Value::Null;
    }
    for field in ["created", "start_date", "billing_cycle_anchor"] {
        subscription[field] = json!(start);
    }
    let item = &mut subscription["items"]["data"][0];
    item["id"] = json!(objects::new_id("si", &mut state.next_id));
    item["subscription"] = json!(subscription_id);
    let recurring = request
        .as_ref()
        .and_then(|r| r.line_items.iter().find(|line| prices::is_recurring(&line.price)));
    match recurring {
        Some(line) => {
            item["price"] = line.price.clone();
            item["quantity"] = json!(line.quantity);
        }
        None => {
            item["price"]["unit_amount"] = json!(amount);
            item["price"]["unit_amount_decimal"] = json!(amount.to_string());
            item["price"]["currency"] = session["currency"].clone();
        }
    }
    let period_end = start + period_secs(&item["price"]);
    let trial_end = request
        .as_ref()
        .and_then(|r| r.trial_period_days)
        .map(|days| start + days * DAY_SECS);
    item["current_period_start"] = json!(start);
    item["current_period_end"] = json!(trial_end.unwrap_or(period_end));
    subscription["items"]["url"] = json!(format!("/v1/subscription_items?subscription={subscription_id}"));
    if let Some(trial_end) = trial_end {
        subscription["status"] = json!("trialing");
        subscription["trial_start"] = json!(start);
        subscription["trial_end"] = json!(trial_end);
    }

    let first_amount = if trial_end.is_some() { 0 } else { amount };
    let invoice_id = session["invoice"].as_str().map(str::to_owned);
    let invoice = new_invoice(
        state,
        &subscription,
        "subscription_create",
        true,
        first_amount,
        invoice_id,
    );
    subscription["latest_invoice"] = invoice["id"].clone();
    state
        .billing
        .subscriptions
        .insert(subscription_id.to_owned(), subscription.clone());
    vec![
        record_event(state, "customer.subscription.created", subscription),
        record_event(state, "invoice.paid", invoice),
    ]
}

/// How long one period of the price lasts (a month stands in as thirty days).
pub(super) fn period_secs(price: &Value) -> i64 {
    let count = price["recurring"]["interval_count"].as_i64().unwrap_or(1).max(1);
    count
        * match price["recurring"]["interval"].as_str() {
            Some("day") => DAY_SECS,
            Some("week") => 7 * DAY_SECS,
            Some("year") => 365 * DAY_SECS,
            _ => 30 * DAY_SECS,
        }
}

fn new_charge(state: &mut EmulatorState, amount: i64, payment_intent: &str, customer: &Value) -> Value {
    let mut charge: Value = serde_json::from_str(CHARGE_FIXTURE).expect("the fixture is JSON");
    let id = objects::new_id("ch", &mut state.next_id);
    charge["id"] = json!(id);
    charge["amount"] = json!(amount);
    charge["amount_captured"] = json!(amount);
    charge["amount_refunded"] = json!(0);
    charge["captured"] = json!(true);
    charge["created"] = json!(state.now());
    charge["customer"] = customer.clone();
    charge["payment_intent"] = json!(payment_intent);
    charge["refunds"]["url"] = json!(format!("/v1/charges/{id}/refunds"));
    state.billing.charges.insert(id, charge.clone());
    charge
}

/// An invoice of `amount` for the subscription's current period (under `id` when the session that
/// started it already named it); a paid one comes with its payment and charge.
pub(super) fn new_invoice(
    state: &mut EmulatorState,
    subscription: &Value,
    reason: &str,
    paid: bool,
    amount: i64,
    id: Option<String>,
) -> Value {
    let item = &subscription["items"]["data"][0];
    let (start, end) = (&item["current_period_start"], &item["current_period_end"]);
    let id = id.unwrap_or_else(|| objects::new_id("in", &mut state.next_id));

    let mut invoice: Value = serde_json::from_str(INVOICE_FIXTURE).expect("the fixture is JSON");
    invoice["id"] = json!(id);
    invoice["customer"] = subscription["customer"].clone();
    invoice["currency"] = subscription["currency"].clone();
    invoice["billing_reason"] = json!(reason);
    invoice["created"] = json!(state.now());
    invoice["period_start"] = start.clone();
    invoice["period_end"] = start.clone();
    for field in [
        "amount_due",
        "subtotal",
        "subtotal_excluding_tax",
        "total",
        "total_excluding_tax",
    ] {
        invoice[field] = json!(amount);
    }
    invoice["amount_overpaid"] = json!(0);
    invoice["parent"] = json!({
        "type": "subscription_details",
        "quote_details": null,
        "subscription_details": { "subscription": subscription["id"], "metadata": subscription["metadata"] }
    });
    let line = &mut invoice["lines"]["data"][0];
    line["invoice"] = json!(id);
    line["amount"] = json!(amount);
    line["period"] = json!({ "start": start, "end": end });
    invoice["lines"]["url"] = json!(format!("/v1/invoices/{id}/lines"));

    if paid {
        settle_invoice(state, &mut invoice, &subscription["customer"]);
    } else {
        invoice["status"] = json!("open");
        invoice["amount_paid"] = json!(0);
        invoice["amount_remaining"] = json!(amount);
        invoice["attempted"] = json!(true);
        invoice["attempt_count"] = json!(1);
    }
    state.billing.invoices.insert(id, invoice.clone());
    without_includable_fields(invoice)
}

/// The invoice is paid in full: its charge, its payment, and its amounts say so.
fn settle_invoice(state: &mut EmulatorState, invoice: &mut Value, customer: &Value) {
    let amount = invoice["amount_due"].as_i64().unwrap_or_default();
    let (id, currency) = (invoice["id"].clone(), invoice["currency"].clone());
    let payment_intent = objects::new_id("pi", &mut state.next_id);
    new_charge(state, amount, &payment_intent, customer);
    invoice["status"] = json!("paid");
    invoice["amount_paid"] = json!(amount);
    invoice["amount_remaining"] = json!(0);
    invoice["attempted"] = json!(true);
    invoice["attempt_count"] = json!(1);
    invoice["payments"] = json!({
        "object": "list",
        "has_more": false,
        "url": "/v1/invoice_payments",
        "data": [{
            "object": "invoice_payment",
            "id": objects::new_id("inpay", &mut state.next_id),
            "invoice": id,
            "amount_paid": amount,
            "amount_requested": amount,
            "currency": currency,
            "is_default": true,
            "livemode": false,
            "status": "paid",
            "created": state.now(),
            "payment": { "type": "payment_intent", "payment_intent": payment_intent },
            "status_transitions": { "canceled_at": null, "paid_at": state.now() }
        }]
    });
}

/// Stripe retries a subscription's open invoice (after the customer gave a new card) and it is
/// paid now: the invoice as its `invoice.paid` event carries it.
pub(super) fn pay_open_invoice(state: &mut EmulatorState, invoice_id: &str) -> Option<Value> {
    let mut invoice = state.billing.invoices.get(invoice_id)?.clone();
    if invoice["status"] != "open" {
        return None;
    }
    let attempts = invoice["attempt_count"].as_i64().unwrap_or_default();
    let customer = invoice["customer"].clone();
    settle_invoice(state, &mut invoice, &customer);
    invoice["attempt_count"] = json!(attempts + 1);
    state.billing.invoices.insert(invoice_id.to_owned(), invoice.clone());
    Some(without_includable_fields(invoice))
}

/// What one period of the subscription costs.
fn full_price(subscription: &Value) -> i64 {
    let item = &subscription["items"]["data"][0];
    item["price"]["unit_amount"].as_i64().unwrap_or_default() * item["quantity"].as_i64().unwrap_or(1)
}

/// `payments` is an includable field: Stripe sends it only when asked with `expand[]=payments`,
/// so neither events nor plain retrievals carry it.
pub fn without_includable_fields(mut invoice: Value) -> Value {
    if let Some(fields) = invoice.as_object_mut() {
        fields.remove("payments");
    }
    invoice
}

/// The period that ends now is followed by the next: the subscription's period moves on and its
/// invoice (the full price, plus any prorations waiting for it) is paid, or declined. Declined,
/// an `active` or `trialing` subscription goes `past_due`; one already `past_due` is canceled, as
/// Stripe's default "cancel the subscription if all retries fail" leaves it.
pub(super) fn bill_next_period(state: &mut EmulatorState, subscription_id: &str, paid: bool) -> Option<Vec<Value>> {
    let mut subscription = state.billing.subscriptions.get(subscription_id)?.clone();
    if !paid && subscription["status"] == "past_due" {
        return set_status(state, subscription_id, "canceled", false).map(|event| vec![event]);
    }
    let item = &mut subscription["items"]["data"][0];
    let end = item["current_period_end"].as_i64()?;
    item["current_period_start"] = json!(end);
    item["current_period_end"] = json!(end + period_secs(&item["price"]));
    let prorations = state
        .billing
        .pending_prorations
        .remove(subscription_id)
        .unwrap_or_default();
    let amount = full_price(&subscription) + prorations;
    let invoice = new_invoice(state, &subscription, "subscription_cycle", paid, amount, None);
    subscription["status"] = json!(if paid { "active" } else { "past_due" });
    subscription["latest_invoice"] = invoice["id"].clone();
    state
        .billing
        .subscriptions
        .insert(subscription_id.to_owned(), subscription.clone());
    let invoice_event = if paid { "invoice.paid" } else { "invoice.payment_failed" };
    Some(vec![
        record_event(state, invoice_event, invoice),
        record_event(state, "customer.subscription.updated", subscription),
    ])
}

/// Sets the status and `cancel_at_period_end`; a `canceled` subscription sends `deleted`.
pub(super) fn set_status(
    state: &mut EmulatorState,
    subscription_id: &str,
    status: &str,
    cancel_at_period_end: bool,
) -> Option<Value> {
    let mut subscription = state.billing.subscriptions.get(subscription_id)?.clone();
    subscription["status"] = json!(status);
    subscription["cancel_at_period_end"] = json!(cancel_at_period_end);
    subscription["cancel_at"] = if cancel_at_period_end {
        subscription["items"]["data"][0]["current_period_end"].clone()
    } else {
        Value::Null
    };
    let event_type = if status == "canceled" {
        subscription["canceled_at"] = json!(state.now());
        subscription["ended_at"] = json!(state.now());
        "customer.subscription.deleted"
    } else {
        "customer.subscription.updated"
    };
    state
        .billing
        .subscriptions
        .insert(subscription_id.to_owned(), subscription.clone());
    Some(record_event(state, event_type, subscription))
}

impl StripeEmulator {
    pub fn subscription(&self, id: &str) -> Option<Value> {
        self.lock().billing.subscriptions.get(id).cloned()
    }

    /// The invoice with every field, includable ones too.
    pub fn invoice(&self, id: &str) -> Option<Value> {
        self.lock().billing.invoices.get(id).cloned()
    }

    /// The charge as Stripe holds it now.
    pub fn charge(&self, id: &str) -> Option<Value> {
        self.lock().billing.charges.get(id).cloned()
    }

    /// The id of the charge that paid `payment_intent_id`.
    pub fn charge_for_payment_intent(&self, payment_intent_id: &str) -> Option<String> {
        let state = self.lock();
        state
            .billing
            .charges
            .values()
            .find(|charge| charge["payment_intent"] == payment_intent_id)
            .and_then(|charge| charge["id"].as_str().map(str::to_owned))
    }

    /// The id of the charge that paid the subscription's latest paid invoice.
    pub fn latest_charge_of_subscription(&self, subscription_id: &str) -> Option<String> {
        let payment_intent = {
            let state = self.lock();
            let subscription = state.billing.subscriptions.get(subscription_id)?;
            let invoice = state.billing.invoices.get(subscription["latest_invoice"].as_str()?)?;
            invoice["payments"]["data"][0]["payment"]["payment_intent"]
                .as_str()?
                .to_owned()
        };
        self.charge_for_payment_intent(&payment_intent)
    }

    /// The next period is billed and paid: `invoice.paid`, then `customer.subscription.updated`.
    pub fn renew_subscription(&self, subscription_id: &str) -> Option<Vec<Value>> {
        bill_next_period(&mut self.lock(), subscription_id, true)
    }

    /// The renewal's payment fails: `invoice.payment_failed`, and the subscription goes `past_due`.
    pub fn fail_invoice(&self, subscription_id: &str) -> Option<Vec<Value>> {
        let mut state = self.lock();
        let mut subscription = state.billing.subscriptions.get(subscription_id)?.clone();
        let amount = full_price(&subscription);
        let invoice = new_invoice(&mut state, &subscription, "subscription_cycle", false, amount, None);
        subscription["status"] = json!("past_due");
        subscription["latest_invoice"] = invoice["id"].clone();
        state
            .billing
            .subscriptions
            .insert(subscription_id.to_owned(), subscription.clone());
        Some(vec![
            record_event(&mut state, "invoice.payment_failed", invoice),
            record_event(&mut state, "customer.subscription.updated", subscription),
        ])
    }

    /// Sets the status and `cancel_at_period_end`; a `canceled` subscription sends `deleted`.
    pub fn update_subscription(
        &self,
        subscription_id: &str,
        status: &str,
        cancel_at_period_end: bool,
    ) -> Option<Value> {
        set_status(&mut self.lock(), subscription_id, status, cancel_at_period_end)
    }

    /// From now on the card behind the subscription declines (or, with `false`, pays again): the
    /// renewals and trial ends that `clock/advance` bills fail as Stripe's would.
    pub fn set_card_declines(&self, subscription_id: &str, declines: bool) {
        let mut state = self.lock();
        match declines {
            true => state.billing.declining.insert(subscription_id.to_owned()),
            false => state.billing.declining.remove(subscription_id),
        };
    }

    /// Refunds `amount` (everything left when `None`): `charge.refunded` with the running total.
    pub fn refund_charge(&self, charge_id: &str, amount: Option<i64>) -> Option<Value> {
        self.refund(charge_id, amount).map(|(_, mut events)| events.remove(0))
    }

    /// Refunds `amount` (everything left when `None`) and returns the refund's id with what Stripe
    /// sends: `charge.refunded` (the charge with its running total), then `refund.created`.
    pub fn refund(&self, charge_id: &str, amount: Option<i64>) -> Option<(String, Vec<Value>)> {
        let mut state = self.lock();
        let mut charge = state.billing.charges.get(charge_id)?.clone();
        let charged = charge["amount"].as_i64()?;
        let refunded = charge["amount_refunded"].as_i64()?;
        let amount = amount.unwrap_or(charged - refunded).min(charged - refunded);
        if amount <= 0 {
            return None;
        }
        charge["amount_refunded"] = json!(refunded + amount);
        charge["refunded"] = json!(refunded + amount == charged);
        state.billing.charges.insert(charge_id.to_owned(), charge.clone());

        let mut refund: Value = serde_json::from_str(REFUND_FIXTURE).expect("the fixture is JSON");
        let id = objects::new_id("re", &mut state.next_id);
        refund["id"] = json!(id);
        refund["amount"] = json!(amount);
        refund["currency"] = charge["currency"].clone();
        refund["charge"] = json!(charge_id);
        // As in Stripe's own fixture, a refund does not always name its payment intent.
        refund["payment_intent"] = Value::Null;
        refund["created"] = json!(state.now());
        refund["status"] = json!("succeeded");
        state.billing.refunds.insert(id.clone(), refund.clone());
        let events = vec![
            record_event(&mut state, "charge.refunded", charge),
            record_event(&mut state, "refund.created", refund),
        ];
        Some((id, events))
    }

    /// The refund fails (`failed`) or is canceled (`canceled`): the money stays with the merchant
    /// and the charge's `amount_refunded` goes back down. Stripe sends `charge.refund.updated` and
    /// `refund.updated`, and for a failure `refund.failed`.
    pub fn undo_refund(&self, refund_id: &str, status: &str) -> Option<Vec<Value>> {
        let mut state = self.lock();
        let mut refund = state.billing.refunds.get(refund_id)?.clone();
        if refund["status"] == "failed" || refund["status"] == "canceled" {
            return None;
        }
        refund["status"] = json!(status);
        if status == "failed" {
            refund["failure_reason"] = json!("expired_or_canceled_card");
        }
        let charge_id = refund["charge"].as_str()?.to_owned();
        let mut charge = state.billing.charges.get(&charge_id)?.clone();
        let refunded = charge["amount_refunded"].as_i64()? - refund["amount"].as_i64()?;
        charge["amount_refunded"] = json!(refunded.max(0));
        charge["refunded"] = json!(false);
        state.billing.charges.insert(charge_id, charge);
        state.billing.refunds.insert(refund_id.to_owned(), refund.clone());
        let mut events = vec![
            record_event(&mut state, "charge.refund.updated", refund.clone()),
            record_event(&mut state, "refund.updated", refund.clone()),
        ];
        if status == "failed" {
            events.push(record_event(&mut state, "refund.failed", refund));
        }
        Some(events)
    }

    /// The cardholder disputes the charge: `charge.dispute.created`. Returns (dispute id, event).
    pub fn open_dispute(&self, charge_id: &str) -> Option<(String, Value)> {
        self.open_dispute_as(charge_id, "needs_response")
    }

    /// An inquiry (a retrieval request, no money taken yet): `charge.dispute.created` with status
    /// `warning_needs_response`.
    pub fn open_inquiry(&self, charge_id: &str) -> Option<(String, Value)> {
        self.open_dispute_as(charge_id, "warning_needs_response")
    }

    fn open_dispute_as(&self, charge_id: &str, status: &str) -> Option<(String, Value)> {
        let mut state = self.lock();
        let mut charge = state.billing.charges.get(charge_id)?.clone();
        charge["disputed"] = json!(true);
        let mut dispute: Value = serde_json::from_str(DISPUTE_FIXTURE).expect("the fixture is JSON");
        let id = objects::new_id("dp", &mut state.next_id);
        dispute["id"] = json!(id);
        dispute["amount"] = charge["amount"].clone();
        dispute["currency"] = charge["currency"].clone();
        dispute["charge"] = json!(charge_id);
        dispute["payment_intent"] = charge["payment_intent"].clone();
        dispute["created"] = json!(state.now());
        dispute["status"] = json!(status);
        state.billing.charges.insert(charge_id.to_owned(), charge);
        state.billing.disputes.insert(id.clone(), dispute.clone());
        Some((id, record_event(&mut state, "charge.dispute.created", dispute)))
    }

    /// The dispute moves on while still open (`warning_under_review`, `needs_response` when an
    /// inquiry escalates, `under_review`): `charge.dispute.updated`.
    pub fn update_dispute(&self, dispute_id: &str, status: &str) -> Option<Value> {
        let mut state = self.lock();
        let mut dispute = state.billing.disputes.get(dispute_id)?.clone();
        dispute["status"] = json!(status);
        state.billing.disputes.insert(dispute_id.to_owned(), dispute.clone());
        Some(record_event(&mut state, "charge.dispute.updated", dispute))
    }

    /// The bank decides: `charge.dispute.closed` with status `won` or `lost`.
    pub fn close_dispute(&self, dispute_id: &str, won: bool) -> Option<Value> {
        self.close_dispute_as(dispute_id, if won { "won" } else { "lost" })
    }

    /// `charge.dispute.closed` with the given final status (`won`, `lost`, `warning_closed`).
    pub fn close_dispute_as(&self, dispute_id: &str, status: &str) -> Option<Value> {
        let mut state = self.lock();
        let mut dispute = state.billing.disputes.get(dispute_id)?.clone();
        dispute["status"] = json!(status);
        state.billing.disputes.insert(dispute_id.to_owned(), dispute.clone());
        Some(record_event(&mut state, "charge.dispute.closed", dispute))
    }
}
