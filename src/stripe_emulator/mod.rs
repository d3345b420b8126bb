//! A stand-in for the part of Stripe's HTTP API this service calls, speaking Stripe's wire format:
//! form-encoded requests, JSON objects shaped like Stripe's own fixtures, Stripe's error bodies,
//! idempotency keys honoured, and what Stripe refuses refused (`params`, `session_request`). The
//! service reaches it through `STRIPE_API_BASE` with the real async-stripe client, so no code path
//! knows it is not Stripe.
//!
//! It keeps sessions and events in memory and can play the customer (pay, expire) and turn each
//! state change into an event. Tests drive it directly; faults can be injected.

mod billing;
mod checkout_page;
mod clock;
mod currencies;
mod customers;
mod delivery;
mod errors;
mod event_list;
mod idempotency;
mod lifecycle_routes;
mod objects;
mod params;
mod payment_lists;
mod portal;
mod portal_page;
mod prices;
mod pricing;
mod products;
mod routes;
mod session_request;
mod subscription_update;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use axum::Router;
use serde_json::Value;
use tokio::sync::mpsc;

pub use delivery::DeliveryConfig;
pub use errors::ApiError;
pub use lifecycle_routes::InjectedFailure;
pub use objects::PaymentResult;
pub use portal::{CardRefused, PlanOffer, PlanSwitch, PortalAction};
pub use prices::BookPrice;
pub use pricing::EMULATED_TAX_PERCENT;
pub use subscription_update::Proration;

/// One API request as the emulator received it, for tests to assert on.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub params: BTreeMap<String, String>,
    pub idempotency_key: Option<String>,
}

#[derive(Default)]
struct EmulatorState {
    sessions: HashMap<String, Value>,
    /// What each session was created with beyond what the session object shows (Stripe keeps line
    /// items and `subscription_data` apart from the session too).
    requests_by_session: HashMap<String, session_request::SessionRequest>,
    /// The account's Prices, by id, that line items may name.
    price_book: HashMap<String, session_request::BookEntry>,
    /// Where recorded events go to be sent to the service, when delivery is on.
    outbox: Option<mpsc::UnboundedSender<Value>>,
    events: Vec<Value>,
    requests: Vec<RecordedRequest>,
    /// What each idempotency key was used for, replayed for a repeated key as Stripe does.
    idempotent: HashMap<idempotency::Slot, idempotency::KeyState>,
    /// While set, session creation answers with this HTTP status and a Stripe `api_error`.
    fail_session_creation: Option<u16>,
    /// While set, every API call waits this long before it is answered (a slow Stripe).
    api_latency: Option<Duration>,
    /// API calls whose path starts with the prefix are answered with the failure instead.
    injected_failures: Vec<(String, InjectedFailure)>,
    next_id: u64,
    billing: billing::BillingState,
    customers: customers::Customers,
    /// How far the emulator's clock runs ahead of the wall clock (`clock/advance`), in seconds.
    clock_offset: i64,
}

impl EmulatorState {
    /// The emulator's time: the wall clock plus however far tests have advanced it. Everything the
    /// emulator stamps or compares (objects' `created`, periods, expiry) reads this.
    fn now(&self) -> i64 {
        objects::wall_clock() + self.clock_offset
    }
}

#[derive(Clone)]
pub struct StripeEmulator {
    state: Arc<Mutex<EmulatorState>>,
    /// Where hosted checkout pages live, e.g. `http://127.0.0.1:4242`.
    public_base: Arc<str>,
}

impl StripeEmulator {
    pub fn new(public_base: impl Into<String>) -> Self {
        Self {
            state: Arc::default(),
            public_base: public_base.into().trim_end_matches('/').into(),
        }
    }

    pub fn router(&self) -> Router {
        routes::router(self.clone())
            .merge(checkout_page::router(self.clone()))
            .merge(portal_page::router(self.clone()))
            .merge(clock::router(self.clone()))
            .layer(axum::middleware::from_fn(routes::stamp_request_id))
    }

    /// From now on, every event is also POSTed, signed, to the service (as Stripe does).
    pub fn start_delivery(&self, config: DeliveryConfig) {
        let emulator = self.clone();
        // Stripe counts an event's endpoints still to be reached; `delivery_success` filters on it.
        let on_delivered: delivery::OnDelivered = Arc::new(move |id: &str| {
            if let Some(event) = emulator.lock().events.iter_mut().find(|e| e["id"] == id) {
                event["pending_webhooks"] = 0.into();
            }
        });
        self.lock().outbox = Some(delivery::spawn_delivery(config, on_delivered));
    }

    /// Expires open sessions when their `expires_at` passes, checking once a second.
    pub fn start_expiry_clock(&self) {
        let emulator = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let state = emulator.lock();
                let now = state.now();
                let due: Vec<String> = state
                    .sessions
                    .values()
                    .filter(|s| s["status"] == "open" && s["expires_at"].as_i64().is_some_and(|at| at <= now))
                    .filter_map(|s| s["id"].as_str().map(str::to_owned))
                    .collect();
                drop(state);
                for id in due {
                    emulator.expire_session(&id);
                }
            }
        });
    }

    fn lock(&self) -> MutexGuard<'_, EmulatorState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Makes `POST /v1/checkout/sessions` fail with `status` (e.g. 500) until called with `None`.
    pub fn fail_session_creation(&self, status: Option<u16>) {
        self.lock().fail_session_creation = status;
    }

    /// Makes every API call wait `latency` before it is answered, until called with `None`.
    pub fn set_api_latency(&self, latency: Option<Duration>) {
        self.lock().api_latency = latency;
    }

    /// Makes every API call whose path starts with `path_prefix` (e.g. `/v1/invoices/`) fail as
    /// `failure` says, until called again for that prefix with `None`.
    pub fn fail_requests(&self, path_prefix: &str, failure: Option<InjectedFailure>) {
        let mut state = self.lock();
        state.injected_failures.retain(|(prefix, _)| prefix != path_prefix);
        if let Some(failure) = failure {
            state.injected_failures.push((path_prefix.to_owned(), failure));
        }
    }

    fn record(&self, method: &str, path: &str, params: &[(String, String)], idempotency_key: Option<String>) {
        self.lock().requests.push(RecordedRequest {
            method: method.into(),
            path: path.into(),
            params: params.iter().cloned().collect(),
            idempotency_key,
        });
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    pub fn session(&self, id: &str) -> Option<Value> {
        self.lock().sessions.get(id).cloned()
    }

    pub fn events(&self) -> Vec<Value> {
        self.lock().events.clone()
    }

    /// Moves a recorded event's `created`, as if it had happened then (events made within one test
    /// otherwise share a second). Stripe's list stays ordered by `created`.
    pub fn set_event_created(&self, event_id: &str, created: i64) -> bool {
        let mut state = self.lock();
        match state.events.iter_mut().find(|e| e["id"] == event_id) {
            Some(event) => {
                event["created"] = created.into();
                true
            }
            None => false,
        }
    }

    /// The customer pays: the session completes and the resulting events are returned (and
    /// recorded), newest last. A delayed method completes `unpaid`, and then succeeds or fails.
    pub fn pay_session(&self, session_id: &str, result: PaymentResult) -> Option<Vec<Value>> {
        let mut state = self.lock();
        let session = state.sessions.get(session_id)?.clone();
        let state = &mut *state;
        let request = state.requests_by_session.get(session_id);
        let (session, event_types) = objects::pay(session, request, result, &mut state.next_id)?;
        customers::keep_session_customer(state, &session);
        state.sessions.insert(session_id.to_owned(), session.clone());
        let mut events: Vec<Value> = event_types
            .into_iter()
            .map(|(event_type, object)| record_event(state, event_type, object))
            .collect();
        if objects::is_settled(&session) {
            events.extend(billing::after_paid_session(state, &session));
        }
        Some(events)
    }

    /// As `pay_session`, but a delayed method's outcome is only decided (and its event sent) after
    /// `clearing_time`, as a bank debit clears days later in real life.
    pub fn pay_session_later(&self, session_id: &str, result: PaymentResult, clearing_time: Duration) -> bool {
        let mut state = self.lock();
        let Some(session) = state.sessions.get(session_id).cloned() else {
            return false;
        };
        let state_ref = &mut *state;
        let request = state_ref.requests_by_session.get(session_id);
        let Some((session, mut events)) = objects::pay(session, request, result, &mut state_ref.next_id) else {
            return false;
        };
        let (first_type, first_object) = events.remove(0);
        customers::keep_session_customer(&mut state, &first_object);
        state.sessions.insert(session_id.to_owned(), first_object.clone());
        record_event(&mut state, first_type, first_object.clone());
        if objects::is_settled(&first_object) {
            billing::after_paid_session(&mut state, &first_object);
        }
        drop(state);
        if let Some((later_type, later_object)) = events.pop() {
            let emulator = self.clone();
            let session_id = session_id.to_owned();
            tokio::spawn(async move {
                tokio::time::sleep(clearing_time).await;
                let mut state = emulator.lock();
                state.sessions.insert(session_id, session.clone());
                record_event(&mut state, later_type, later_object);
                if objects::is_settled(&session) {
                    billing::after_paid_session(&mut state, &session);
                }
            });
        }
        true
    }

    fn title(&self, session_id: &str) -> Option<String> {
        self.lock().requests_by_session.get(session_id).map(|r| r.title())
    }

    /// Puts a Price in the emulated account, as one made in Stripe's dashboard: line items may name
    /// it by id and `GET /v1/prices/{id}` answers it.
    pub fn add_price(&self, price: BookPrice) {
        let product = format!("prod_book_{}", price.id.trim_start_matches("price_"));
        let mut state = self.lock();
        let object = prices::price_object(
            state.now(),
            &price.id,
            &product,
            price.unit_amount,
            &price.currency,
            price.interval.as_deref(),
        );
        let now = state.now();
        let product_object = products::product_object(&product, &price.product_name, Default::default(), now);
        state.billing.products.insert(product, product_object);
        let entry = session_request::BookEntry {
            price: object,
            product_name: price.product_name,
        };
        state.price_book.insert(price.id, entry);
    }

    pub fn price(&self, id: &str) -> Option<Value> {
        self.lock().price_book.get(id).map(|entry| entry.price.clone())
    }

    /// The buyer enters a promotion code worth `percent_off` on the hosted page, before paying.
    /// Refused (`false`) unless the session is open and was created with `allow_promotion_codes`.
    pub fn enter_promotion_code(&self, session_id: &str, code: &str, percent_off: i64) -> bool {
        self.lock()
            .sessions
            .get_mut(session_id)
            .is_some_and(|session| pricing::enter_promotion_code(session, code, percent_off))
    }

    /// Moves an open session's `expires_at`, as if it had been created with that expiry.
    pub fn set_session_expiry(&self, session_id: &str, expires_at: i64) -> bool {
        match self.lock().sessions.get_mut(session_id) {
            Some(session) => {
                session["expires_at"] = expires_at.into();
                true
            }
            None => false,
        }
    }

    /// The session passes its `expires_at` unpaid.
    pub fn expire_session(&self, session_id: &str) -> Option<Value> {
        expire_open_session(&mut self.lock(), session_id)
    }
}

fn expire_open_session(state: &mut EmulatorState, session_id: &str) -> Option<Value> {
    let session = objects::expire(state.sessions.get(session_id)?.clone())?;
    state.sessions.insert(session_id.to_owned(), session.clone());
    Some(record_event(state, "checkout.session.expired", session))
}

fn record_event(state: &mut EmulatorState, event_type: &str, object: Value) -> Value {
    let now = state.now();
    let event = objects::event(event_type, object, now, &mut state.next_id);
    publish(state, event)
}

/// An event for a change to `object`, with what the changed fields were before in
/// `data.previous_attributes`, as Stripe sends `*.updated` events.
fn record_change(state: &mut EmulatorState, event_type: &str, object: Value, previous: Value) -> Value {
    let now = state.now();
    let mut event = objects::event(event_type, object, now, &mut state.next_id);
    event["data"]["previous_attributes"] = previous;
    publish(state, event)
}

/// `customer.subscription.updated`, with what changed as it was before (`previous_attributes`).
fn record_update(state: &mut EmulatorState, subscription: Value, previous: Value) -> Value {
    record_change(state, "customer.subscription.updated", subscription, previous)
}

fn publish(state: &mut EmulatorState, event: Value) -> Value {
    state.events.push(event.clone());
    if let Some(outbox) = &state.outbox {
        let _ = outbox.send(event.clone());
    }
    event
}
