//! Products: the ones Stripe makes for a line item's `product_data` (keeping its metadata, which is
//! how the service recognises the prices it made inline), the book's, and `POST /v1/products`.
//! A Price names its product by id; `expand[]=items.data.price.product` on a subscription puts the
//! product itself there.

use axum::{
    Json,
    body::Bytes,
    extract::State,
    response::{IntoResponse, Response},
};
use serde_json::{Map, Value, json};

use super::{
    EmulatorState, RecordedRequest, StripeEmulator,
    errors::ApiError,
    objects,
    params::{Params, Shape},
};

const CREATE_PRODUCT: &[(&str, Shape)] = &[
    ("active", Shape::Bool),
    ("description", Shape::Str),
    ("expand", Shape::List(&Shape::Str)),
    ("id", Shape::Str),
    ("images", Shape::List(&Shape::Str)),
    ("metadata", Shape::Metadata),
    ("name", Shape::Str),
    ("tax_code", Shape::Str),
    ("unit_label", Shape::Str),
];

/// Stripe's Product object, with the fields a Product made through the API has.
pub fn product_object(id: &str, name: &str, metadata: Map<String, Value>, now: i64) -> Value {
    json!({
        "id": id,
        "object": "product",
        "active": true,
        "created": now,
        "updated": now,
        "default_price": null,
        "description": null,
        "images": [],
        "livemode": false,
        "marketing_features": [],
        "metadata": metadata,
        "name": name,
        "package_dimensions": null,
        "shippable": null,
        "statement_descriptor": null,
        "tax_code": null,
        "type": "service",
        "unit_label": null,
        "url": null
    })
}

pub async fn create_product(State(emulator): State<StripeEmulator>, body: Bytes) -> Response {
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let mut state = emulator.lock();
    state.requests.push(RecordedRequest {
        method: "POST".into(),
        path: "/v1/products".into(),
        params: pairs.iter().cloned().collect(),
        idempotency_key: None,
    });
    let params = Params::new(&pairs);
    if let Err(err) = params.check(CREATE_PRODUCT) {
        return err.into_response();
    }
    let Some(name) = params.get("name") else {
        return ApiError::missing("name").into_response();
    };
    let id = match params.get("id") {
        Some(id) if state.billing.products.contains_key(id) => {
            return ApiError::already_exists("id", format!("Product already exists with ID {id}")).into_response();
        }
        Some(id) => id.to_owned(),
        None => objects::new_id("prod", &mut state.next_id),
    };
    let now = state.now();
    let product = product_object(&id, name, params.metadata("metadata"), now);
    state.billing.products.insert(id, product.clone());
    Json(product).into_response()
}

/// The subscription with each item's `price.product` expanded to the Product, as
/// `expand[]=items.data.price.product` asks.
pub fn with_products_expanded(state: &EmulatorState, mut subscription: Value) -> Value {
    if let Some(items) = subscription["items"]["data"].as_array_mut() {
        for item in items {
            let product = &mut item["price"]["product"];
            if let Some(found) = product.as_str().and_then(|id| state.billing.products.get(id)) {
                *product = found.clone();
            }
        }
    }
    subscription
}
