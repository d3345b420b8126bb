//! A stand-in for the part of Stripe's HTTP API this service calls, speaking Stripe's wire format:
//! form-encoded requests, JSON objects shaped like Stripe's own fixtures, Stripe-style error bodies,
//! idempotency keys honoured. The service reaches it through `STRIPE_API_BASE` with the real
//! async-stripe client, so no code path knows it is not Stripe.
//!
//! It keeps sessions and events in memory and can play the customer (pay, expire) and turn each
//! state change into an event. Tests drive it directly; faults can be injected.

mod billing;
mod lifecycle_routes;
mod objects;
mod routes;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, MutexGuard},
};

use axum::Router;
use serde_json::Value;

pub use objects::PaymentResult;

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
    events: Vec<Value>,
    requests: Vec<RecordedRequest>,
    /// Responses already given per idempotency key, replayed for a repeated key as Stripe does.
    idempotent_responses: HashMap<String, (u16, Value)>,
    /// While set, session creation answers with this HTTP status and a Stripe `api_error`.
    fail_session_creation: Option<u16>,
    next_id: u64,
    billing: billing::BillingState,
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
    }

    fn lock(&self) -> MutexGuard<'_, EmulatorState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Makes `POST /v1/checkout/sessions` fail with `status` (e.g. 500) until called with `None`.
    pub fn fail_session_creation(&self, status: Option<u16>) {
        self.lock().fail_session_creation = status;
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

    /// The customer pays: the session completes and the resulting events are returned (and
    /// recorded), newest last. A delayed method completes `unpaid`, and then succeeds or fails.
    pub fn pay_session(&self, session_id: &str, result: PaymentResult) -> Option<Vec<Value>> {
        let mut state = self.lock();
        let session = state.sessions.get(session_id)?.clone();
        let (session, event_types) = objects::pay(session, result, &mut state.next_id)?;
        state.sessions.insert(session_id.to_owned(), session.clone());
        let mut events: Vec<Value> = event_types
            .into_iter()
            .map(|(event_type, object)| record_event(&mut state, event_type, object))
            .collect();
        if session["payment_status"] == "paid" {
            events.extend(billing::after_paid_session(&mut state, &session));
        }
        Some(events)
    }

    /// The session passes its `expires_at` unpaid.
    pub fn expire_session(&self, session_id: &str) -> Option<Value> {
        let mut state = self.lock();
        let session = objects::expire(state.sessions.get(session_id)?.clone())?;
        state.sessions.insert(session_id.to_owned(), session.clone());
        Some(record_event(&mut state, "checkout.session.expired", session))
    }
}

fn record_event(state: &mut EmulatorState, event_type: &str, object: Value) -> Value {
    let event = objects::event(event_type, object, &mut state.next_id);
    state.events.push(event.clone());
    event
}
