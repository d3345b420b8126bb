//! Customers as Stripe keeps them: `POST /v1/customers` and `GET /v1/customers/{id}`, the
//! `customer` a Checkout Session may be created for (it must exist, and excludes `customer_email`
//! and `customer_creation`), and the customer a session made without one gets when it is paid.

use std::collections::{BTreeMap, HashMap};

use axum::{
    Json,
    body::Bytes,
    extract::{Path, State},
    http::HeaderMap,
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use super::{
    EmulatorState, RecordedRequest, StripeEmulator,
    errors::ApiError,
    objects,
    params::{Params, Shape},
};

/// A form body's parameters, as Stripe reads them whatever the content type says.
pub fn form_pairs(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

impl EmulatorState {
    /// Records a POST for tests to assert on, before it is checked (as a refused one was sent too).
    pub fn record_post(&mut self, path: &str, headers: &HeaderMap, pairs: &[(String, String)]) {
        self.requests.push(RecordedRequest {
            method: "POST".into(),
            path: path.into(),
            params: pairs.iter().cloned().collect(),
            idempotency_key: headers
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        });
    }
}

const CUSTOMER_FIXTURE: &str = include_str!("fixtures/customer.json");

/// The account's customers and what hangs off them.
#[derive(Default)]
pub struct Customers {
    pub by_id: HashMap<String, Value>,
    /// Billing portal sessions, by id (`portal`).
    pub portal_sessions: HashMap<String, Value>,
    /// Cards given in the portal, by id.
    pub payment_methods: HashMap<String, Value>,
}

/// The parameters of customer creation the emulator takes; Stripe takes more (address, shipping,
/// tax ids, …), which a service that only needs an id to bill never sends.
const CREATE_CUSTOMER: &[(&str, Shape)] = &[
    ("description", Shape::Str),
    ("email", Shape::Str),
    ("expand", Shape::List(&Shape::Str)),
    ("metadata", Shape::Metadata),
    ("name", Shape::Str),
];

pub async fn create_customer(State(emulator): State<StripeEmulator>, headers: HeaderMap, body: Bytes) -> Response {
    let pairs = form_pairs(&body);
    let mut state = emulator.lock();
    state.record_post("/v1/customers", &headers, &pairs);
    let params = Params::new(&pairs);
    if let Err(err) = params.check(CREATE_CUSTOMER) {
        return err.into_response();
    }
    let id = objects::new_id("cus", &mut state.next_id);
    let created = state.now();
    let mut customer = new_customer(&id, created);
    for field in ["description", "email", "name"] {
        customer[field] = params.get(field).map_or(Value::Null, |v| json!(v));
    }
    customer["metadata"] = Value::Object(params.metadata("metadata"));
    state.customers.by_id.insert(id, customer.clone());
    Json(customer).into_response()
}

pub async fn retrieve_customer(State(emulator): State<StripeEmulator>, Path(id): Path<String>) -> Response {
    let mut state = emulator.lock();
    state.requests.push(RecordedRequest {
        method: "GET".into(),
        path: format!("/v1/customers/{id}"),
        params: BTreeMap::new(),
        idempotency_key: None,
    });
    match state.customers.by_id.get(&id) {
        Some(customer) => Json(customer.clone()).into_response(),
        None => ApiError::no_such("customer", &id, "id").into_response(),
    }
}

fn new_customer(id: &str, created: i64) -> Value {
    let mut customer: Value = serde_json::from_str(CUSTOMER_FIXTURE).expect("the fixture is JSON");
    customer["id"] = json!(id);
    customer["created"] = json!(created);
    customer["discount"] = Value::Null;
    let prefix: String = id.trim_start_matches("cus_test_").chars().take(8).collect();
    customer["invoice_prefix"] = json!(prefix.to_ascii_uppercase());
    customer
}

/// The customer a session creation names, checked as Stripe checks it: it must exist, and
/// `customer_email` (the customer has its own) and `customer_creation` (there is nothing to make)
/// may not come with it, while `customer_update` needs it. `customer_creation` is for payment and
/// setup mode in any case: subscription mode always makes a customer.
pub fn session_customer(params: &Params, state: &EmulatorState) -> Result<Option<String>, ApiError> {
    if params.has("customer_creation") && params.get("mode") == Some("subscription") {
        return Err(ApiError::refused(
            "customer_creation",
            "`customer_creation` can only be used in `payment` and `setup` mode.".into(),
        ));
    }
    let Some(customer) = params.get("customer") else {
        if params.has("customer_update") {
            return Err(ApiError::refused(
                "customer_update",
                "`customer_update` can only be used with `customer`.".into(),
            ));
        }
        return Ok(None);
    };
    for other in ["customer_email", "customer_creation"] {
        if params.has(other) {
            return Err(ApiError::exclusive("customer", other));
        }
    }
    match state.customers.by_id.contains_key(customer) {
        true => Ok(Some(customer.to_owned())),
        false => Err(ApiError::resource_missing("customer", customer, "customer")),
    }
}

/// A paid session made without a customer got a new one (`objects::pay`): it is kept, with the
/// email the buyer gave, so it can be retrieved and its portal opened like any other.
pub fn keep_session_customer(state: &mut EmulatorState, session: &Value) {
    let Some(id) = session["customer"].as_str() else {
        return;
    };
    if !state.customers.by_id.contains_key(id) {
        let created = state.now();
        let mut customer = new_customer(id, created);
        customer["email"] = session["customer_details"]["email"].clone();
        customer["name"] = session["customer_details"]["name"].clone();
        state.customers.by_id.insert(id.to_owned(), customer);
    }
}

impl StripeEmulator {
    pub fn customer(&self, id: &str) -> Option<Value> {
        self.lock().customers.by_id.get(id).cloned()
    }

    /// Every customer in the account.
    pub fn customers(&self) -> Vec<Value> {
        self.lock().customers.by_id.values().cloned().collect()
    }

    /// The customer is deleted, as in the Dashboard: from then on Stripe answers
    /// `resource_missing` for it. False when there was none.
    pub fn delete_customer(&self, id: &str) -> bool {
        self.lock().customers.by_id.remove(id).is_some()
    }
}
