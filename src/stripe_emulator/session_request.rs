//! `POST /v1/checkout/sessions` as Stripe reads it: the parameters Checkout takes (anything else is
//! `parameter_unknown`), then the rules Stripe applies across them (a mode, prices that suit it, an
//! expiry from 30 minutes to 24 hours ahead, `payment_intent_data` only in payment mode and
//! `subscription_data` only in subscription mode). What passes becomes a `SessionRequest`.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::{
    errors::ApiError,
    objects,
    params::{Params, Shape},
    prices::{self, is_recurring},
    products,
};

/// Stripe's bounds on `expires_at`, from the session's creation.
const MIN_EXPIRY_SECS: i64 = 30 * 60;
const MAX_EXPIRY_SECS: i64 = 24 * 60 * 60;
/// The clock of the client and Stripe's differ a little; Stripe allows for it.
const EXPIRY_SLACK_SECS: i64 = 10;
const MAX_TRIAL_DAYS: i64 = 730;

const RECURRING: Shape = Shape::Obj(&[
    ("interval", Shape::Enum(&["day", "month", "week", "year"])),
    ("interval_count", Shape::Int { min: 1 }),
]);
const PRODUCT_DATA: Shape = Shape::Obj(&[
    ("description", Shape::Str),
    ("images", Shape::List(&Shape::Str)),
    ("metadata", Shape::Metadata),
    ("name", Shape::Str),
    ("tax_code", Shape::Str),
    ("tax_details", Shape::Opaque),
    ("unit_label", Shape::Str),
]);
const PRICE_DATA: Shape = Shape::Obj(&[
    ("currency", Shape::Currency),
    ("product", Shape::Str),
    ("product_data", PRODUCT_DATA),
    ("recurring", RECURRING),
    ("tax_behavior", Shape::Enum(&["exclusive", "inclusive", "unspecified"])),
    ("unit_amount", Shape::Int { min: 0 }),
    ("unit_amount_decimal", Shape::Str),
]);
const LINE_ITEM: Shape = Shape::Obj(&[
    ("adjustable_quantity", Shape::Opaque),
    ("dynamic_tax_rates", Shape::List(&Shape::Str)),
    ("price", Shape::Str),
    ("price_data", PRICE_DATA),
    ("quantity", Shape::Int { min: 0 }),
    ("tax_rates", Shape::List(&Shape::Str)),
]);
const PAYMENT_INTENT_DATA: Shape = Shape::Obj(&[
    ("application_fee_amount", Shape::Int { min: 0 }),
    (
        "capture_method",
        Shape::Enum(&["automatic", "automatic_async", "manual"]),
    ),
    ("description", Shape::Str),
    ("metadata", Shape::Metadata),
    ("on_behalf_of", Shape::Str),
    ("receipt_email", Shape::Str),
    ("setup_future_usage", Shape::Enum(&["off_session", "on_session"])),
    ("shipping", Shape::Opaque),
    ("statement_descriptor", Shape::Str),
    ("statement_descriptor_suffix", Shape::Str),
    ("transfer_data", Shape::Opaque),
    ("transfer_group", Shape::Str),
]);
const SUBSCRIPTION_DATA: Shape = Shape::Obj(&[
    ("application_fee_percent", Shape::Str),
    ("billing_cycle_anchor", Shape::Int { min: 0 }),
    ("billing_mode", Shape::Opaque),
    ("default_tax_rates", Shape::List(&Shape::Str)),
    ("description", Shape::Str),
    ("invoice_settings", Shape::Opaque),
    ("metadata", Shape::Metadata),
    ("on_behalf_of", Shape::Str),
    ("proration_behavior", Shape::Enum(&["create_prorations", "none"])),
    ("transfer_data", Shape::Opaque),
    ("trial_end", Shape::Int { min: 0 }),
    ("trial_period_days", Shape::Int { min: 1 }),
    ("trial_settings", Shape::Opaque),
]);
const AUTOMATIC_TAX: Shape = Shape::Obj(&[("enabled", Shape::Bool), ("liability", Shape::Opaque)]);
const SETUP_INTENT_DATA: Shape = Shape::Obj(&[
    ("description", Shape::Str),
    ("metadata", Shape::Metadata),
    ("on_behalf_of", Shape::Str),
]);

/// Every parameter of Stripe's Checkout Session creation. The parts the emulator does not act on
/// are `Opaque`: accepted as sent, so a real integration is not refused for using them.
pub const CREATE_SESSION: &[(&str, Shape)] = &[
    ("adaptive_pricing", Shape::Opaque),
    ("after_expiration", Shape::Opaque),
    ("allow_promotion_codes", Shape::Bool),
    ("automatic_tax", AUTOMATIC_TAX),
    ("billing_address_collection", Shape::Enum(&["auto", "required"])),
    ("branding_settings", Shape::Opaque),
    ("cancel_url", Shape::Str),
    ("client_reference_id", Shape::Str),
    ("consent_collection", Shape::Opaque),
    ("currency", Shape::Currency),
    ("custom_fields", Shape::Opaque),
    ("custom_text", Shape::Opaque),
    ("customer", Shape::Str),
    ("customer_creation", Shape::Enum(&["always", "if_required"])),
    ("customer_email", Shape::Str),
    ("customer_update", Shape::Opaque),
    ("discounts", Shape::Opaque),
    ("excluded_payment_method_types", Shape::List(&Shape::Str)),
    ("expand", Shape::List(&Shape::Str)),
    ("expires_at", Shape::Int { min: 0 }),
    ("invoice_creation", Shape::Opaque),
    ("line_items", Shape::List(&LINE_ITEM)),
    ("locale", Shape::Str),
    ("metadata", Shape::Metadata),
    ("mode", Shape::Enum(&["payment", "setup", "subscription"])),
    ("name_collection", Shape::Opaque),
    ("optional_items", Shape::Opaque),
    ("origin_context", Shape::Enum(&["mobile_app", "web"])),
    ("payment_intent_data", PAYMENT_INTENT_DATA),
    ("payment_method_collection", Shape::Enum(&["always", "if_required"])),
    ("payment_method_configuration", Shape::Str),
    ("payment_method_data", Shape::Opaque),
    ("payment_method_options", Shape::Opaque),
    ("payment_method_types", Shape::List(&Shape::Str)),
    ("permissions", Shape::Opaque),
    ("phone_number_collection", Shape::Opaque),
    (
        "redirect_on_completion",
        Shape::Enum(&["always", "if_required", "never"]),
    ),
    ("return_url", Shape::Str),
    ("saved_payment_method_options", Shape::Opaque),
    ("setup_intent_data", SETUP_INTENT_DATA),
    ("shipping_address_collection", Shape::Opaque),
    ("shipping_options", Shape::Opaque),
    (
        "submit_type",
        Shape::Enum(&["auto", "book", "donate", "pay", "subscribe"]),
    ),
    ("subscription_data", SUBSCRIPTION_DATA),
    ("success_url", Shape::Str),
    ("tax_id_collection", Shape::Opaque),
    ("ui_mode", Shape::Enum(&["custom", "embedded", "hosted"])),
    ("wallet_options", Shape::Opaque),
];

/// One line of the session: the Price charged (from the book, or made from `price_data`) and how many.
#[derive(Debug, Clone)]
pub struct LineItem {
    pub price: Value,
    pub quantity: i64,
    /// What the hosted page shows for it.
    pub name: String,
    /// The parameter that set its price, for naming it in a refusal.
    pub price_param: String,
    /// The Product Stripe made for the line's `product_data`, metadata and all.
    pub product: Option<Value>,
}

/// A creation request that Stripe would accept.
#[derive(Debug, Clone)]
pub struct SessionRequest {
    pub mode: String,
    pub line_items: Vec<LineItem>,
    pub currency: String,
    pub expires_at: i64,
    pub allow_promotion_codes: Option<bool>,
    pub metadata: Map<String, Value>,
    /// What the subscription a subscription-mode session starts carries: `subscription_data[metadata]`.
    pub subscription_metadata: Map<String, Value>,
    pub trial_period_days: Option<i64>,
    /// `automatic_tax[enabled]`: Stripe Tax adds tax when the buyer pays.
    pub automatic_tax: bool,
}

impl SessionRequest {
    /// The sum of the line items before discounts and tax.
    pub fn amount_subtotal(&self) -> i64 {
        self.line_items
            .iter()
            .map(|item| item.price["unit_amount"].as_i64().unwrap_or_default() * item.quantity)
            .sum()
    }

    pub fn title(&self) -> String {
        self.line_items
            .first()
            .map_or_else(|| "Your purchase".to_owned(), |item| item.name.clone())
    }
}

/// A Price in the book, with the name of its product.
#[derive(Debug, Clone)]
pub struct BookEntry {
    pub price: Value,
    pub product_name: String,
}

pub fn read(
    params: &Params,
    book: &HashMap<String, BookEntry>,
    now: i64,
    counter: &mut u64,
) -> Result<SessionRequest, ApiError> {
    params.check(CREATE_SESSION)?;
    let mode = params.get("mode").ok_or_else(|| ApiError::missing("mode"))?.to_owned();
    if mode != "subscription" && params.has("subscription_data") {
        return Err(ApiError::refused(
            "subscription_data",
            format!("You can not pass `subscription_data` in `{mode}` mode."),
        ));
    }
    if mode != "payment" && params.has("payment_intent_data") {
        return Err(ApiError::refused(
            "payment_intent_data",
            format!("You can not pass `payment_intent_data` in `{mode}` mode."),
        ));
    }
    if params.has("automatic_tax") && params.get("automatic_tax[enabled]").is_none() {
        return Err(ApiError::missing("automatic_tax[enabled]"));
    }
    if params.has("allow_promotion_codes") && params.has("discounts") {
        return Err(ApiError::exclusive("allow_promotion_codes", "discounts"));
    }
    let expires_at = match params.int("expires_at") {
        None => now + MAX_EXPIRY_SECS,
        Some(at) if at < now + MIN_EXPIRY_SECS - EXPIRY_SLACK_SECS => {
            return Err(ApiError::integer_out_of_range(
                "expires_at",
                "The `expires_at` timestamp must be at least 30 minutes from Checkout Session creation.".into(),
            ));
        }
        Some(at) if at > now + MAX_EXPIRY_SECS + EXPIRY_SLACK_SECS => {
            return Err(ApiError::integer_out_of_range(
                "expires_at",
                "The `expires_at` timestamp must be less than 24 hours from Checkout Session creation.".into(),
            ));
        }
        Some(at) => at,
    };
    let trial_period_days = params.int("subscription_data[trial_period_days]");
    if trial_period_days.is_some_and(|days| days > MAX_TRIAL_DAYS) {
        return Err(ApiError::integer_out_of_range(
            "subscription_data[trial_period_days]",
            format!("This value must be less than or equal to {MAX_TRIAL_DAYS}."),
        ));
    }

    let line_items = line_items(params, book, now, counter)?;
    if mode != "setup" && line_items.is_empty() {
        return Err(ApiError::missing("line_items"));
    }
    check_prices_suit_mode(&mode, &line_items)?;
    let currency = single_currency(params, &line_items)?;
    Ok(SessionRequest {
        mode,
        line_items,
        currency,
        expires_at,
        allow_promotion_codes: params.flag("allow_promotion_codes"),
        metadata: params.metadata("metadata"),
        subscription_metadata: params.metadata("subscription_data[metadata]"),
        trial_period_days,
        automatic_tax: params.flag("automatic_tax[enabled]").unwrap_or(false),
    })
}

fn line_items(
    params: &Params,
    book: &HashMap<String, BookEntry>,
    now: i64,
    counter: &mut u64,
) -> Result<Vec<LineItem>, ApiError> {
    let mut items = Vec::new();
    for index in params.indices("line_items") {
        let name = |field: &str| format!("line_items[{index}]{field}");
        let quantity = params
            .int(&name("[quantity]"))
            .ok_or_else(|| ApiError::missing(&name("[quantity]")))?;
        let from_book = params.get(&name("[price]")).is_some();
        let (price, product_name, product) = match (params.get(&name("[price]")), params.has(&name("[price_data]"))) {
            (Some(_), true) => {
                return Err(ApiError::exclusive(&name("[price]"), &name("[price_data]")));
            }
            (Some(id), false) => match book.get(id) {
                Some(entry) => (entry.price.clone(), entry.product_name.clone(), None),
                None => return Err(ApiError::resource_missing("price", id, &name("[price]"))),
            },
            (None, true) => inline_price(params, &name("[price_data]"), now, counter)?,
            (None, false) => return Err(ApiError::missing(&name("[price]"))),
        };
        items.push(LineItem {
            price,
            quantity,
            name: product_name,
            product,
            price_param: match from_book {
                true => name("[price]"),
                false => name("[price_data][recurring]"),
            },
        });
    }
    Ok(items)
}

/// The one-off Price Stripe makes for `price_data`.
/// The one-off Price Stripe makes for `price_data`, with its name and the Product it made for
/// `product_data` (none for a `product` named by id).
type InlinePrice = (Value, String, Option<Value>);

fn inline_price(params: &Params, prefix: &str, now: i64, counter: &mut u64) -> Result<InlinePrice, ApiError> {
    let field = |name: &str| format!("{prefix}[{name}]");
    let currency = params
        .get(&field("currency"))
        .ok_or_else(|| ApiError::missing(&field("currency")))?
        .to_ascii_lowercase();
    let unit_amount = params
        .int(&field("unit_amount"))
        .ok_or_else(|| ApiError::missing(&field("unit_amount")))?;
    let product_name = match (params.get(&field("product")), params.has(&field("product_data"))) {
        (Some(_), true) => return Err(ApiError::exclusive(&field("product"), &field("product_data"))),
        (Some(product), false) => product.to_owned(),
        (None, true) => params
            .get(&field("product_data][name"))
            .ok_or_else(|| ApiError::missing(&field("product_data][name")))?
            .to_owned(),
        (None, false) => return Err(ApiError::missing(&field("product_data"))),
    };
    let interval = match params.has(&field("recurring")) {
        true => Some(
            params
                .get(&field("recurring][interval"))
                .ok_or_else(|| ApiError::missing(&field("recurring][interval")))?,
        ),
        false => None,
    };
    let (product_id, product) = match params.get(&field("product")) {
        Some(id) => (id.to_owned(), None),
        None => {
            let id = objects::new_id("prod", counter);
            let metadata = params.metadata(&field("product_data][metadata"));
            let product = products::product_object(&id, &product_name, metadata, now);
            (id, Some(product))
        }
    };
    let price = prices::price_object(
        now,
        &objects::new_id("price", counter),
        &product_id,
        unit_amount,
        &currency,
        interval,
    );
    Ok((price, product_name, product))
}

/// Payment mode charges once, so it takes no recurring price; subscription mode needs at least one
/// (one-time prices beside it go on the first invoice, as Stripe allows).
fn check_prices_suit_mode(mode: &str, items: &[LineItem]) -> Result<(), ApiError> {
    match mode {
        "payment" => match items.iter().find(|item| is_recurring(&item.price)) {
            Some(item) => Err(ApiError::refused(
                &item.price_param,
                "You specified `payment` mode but passed a recurring price. Either switch to `subscription` mode \
                 or use only one-time prices."
                    .into(),
            )),
            None => Ok(()),
        },
        "subscription" if !items.iter().any(|item| is_recurring(&item.price)) => Err(ApiError::refused(
            "line_items",
            "You must provide at least one recurring price in `subscription` mode when using prices.".into(),
        )),
        _ => Ok(()),
    }
}

fn single_currency(params: &Params, items: &[LineItem]) -> Result<String, ApiError> {
    let mut currency = params.get("currency").map(str::to_ascii_lowercase);
    for (index, item) in items.iter().enumerate() {
        let item_currency = item.price["currency"].as_str().unwrap_or_default();
        match &currency {
            Some(c) if c != item_currency => {
                return Err(ApiError::refused(
                    &format!("line_items[{index}]"),
                    "All line items must have the same currency.".into(),
                ));
            }
            _ => currency = Some(item_currency.to_owned()),
        }
    }
    Ok(currency.unwrap_or_default())
}
