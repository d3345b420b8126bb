//! Prices: the book of Prices that exist in the emulated account (made from the service's catalog
//! at startup, so a plan's `stripe_price` can be charged), and the one-off Prices Stripe makes for a
//! line item's inline `price_data`. Both have the full shape of Stripe's Price object.

use serde_json::{Value, json};

const SUBSCRIPTION_FIXTURE: &str = include_str!("fixtures/subscription.json");

/// A Price to put in the emulator's book.
#[derive(Debug, Clone)]
pub struct BookPrice {
    pub id: String,
    pub unit_amount: i64,
    pub currency: String,
    /// `day`, `week`, `month` or `year` for a recurring price; `None` for a one-time price.
    pub interval: Option<String>,
    /// The product's name, shown on the hosted page.
    pub product_name: String,
}

/// Stripe's Price object (taken from the subscription fixture's item, which carries a full one).
pub fn price_object(
    now: i64,
    id: &str,
    product: &str,
    unit_amount: i64,
    currency: &str,
    interval: Option<&str>,
) -> Value {
    let subscription: Value = serde_json::from_str(SUBSCRIPTION_FIXTURE).expect("the fixture is JSON");
    let mut price = subscription["items"]["data"][0]["price"].clone();
    price["id"] = json!(id);
    price["product"] = json!(product);
    price["created"] = json!(now);
    price["unit_amount"] = json!(unit_amount);
    price["unit_amount_decimal"] = json!(unit_amount.to_string());
    price["currency"] = json!(currency);
    price["transform_quantity"] = Value::Null;
    match interval {
        Some(interval) => {
            price["type"] = json!("recurring");
            price["recurring"]["interval"] = json!(interval);
        }
        None => {
            price["type"] = json!("one_time");
            price["recurring"] = Value::Null;
        }
    }
    price
}

pub fn is_recurring(price: &Value) -> bool {
    price["type"] == "recurring"
}
