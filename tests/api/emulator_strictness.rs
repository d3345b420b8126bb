//! The emulator refuses what Stripe refuses, the way Stripe does (status, `error.type`,
//! `error.code`, `error.param`), so a request our tests pass is one Stripe would take. Also: its
//! `Request-Id`, Idempotency-Key semantics, the event list's filters and pagination, the price
//! book, and what a completed subscription session leaves behind.

use reqwest::{StatusCode, redirect::Policy};
use serde_json::{Value, json};
use stripe::StripeError;
use stripe_checkout::checkout_session::{
    CreateCheckoutSession, CreateCheckoutSessionLineItems, CreateCheckoutSessionLineItemsPriceData,
    CreateCheckoutSessionPaymentIntentData, ProductData,
};
use stripe_shared::CheckoutSessionMode;
use stripe_types::Currency;

use crate::helpers::{TestApp, unix_now};
use entitle::{config::StripeBackend, stripe_emulator::BookPrice};

/// Talks to an emulator over HTTP as a Stripe client would, with form bodies.
struct Api {
    base: String,
    http: reqwest::Client,
}

struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Answer {
    /// (status, type, code, param) of an error answer.
    fn refusal(&self) -> (StatusCode, &str, Option<&str>, Option<&str>) {
        let error = &self.body["error"];
        (
            self.status,
            error["type"].as_str().unwrap_or("(none)"),
            error["code"].as_str(),
            error["param"].as_str(),
        )
    }
}

impl Api {
    /// The emulator the app calls as its Stripe (its own port in the default test setup).
    fn of(app: &TestApp) -> Self {
        let base = match &app.config.stripe {
            StripeBackend::Api { api_base, .. } => api_base.clone(),
            StripeBackend::Emulator => app
                .emulator_api
                .clone()
                .expect("emulator mode serves the API on its own port"),
        };
        Self {
            base,
            http: reqwest::Client::builder().redirect(Policy::none()).build().unwrap(),
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let response = request.bearer_auth("sk_test_emulated").send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.json().await.unwrap_or(Value::Null);
        Answer { status, headers, body }
    }

    async fn post(&self, path: &str, form: &[(&str, String)], key: Option<&str>) -> Answer {
        let mut request = self.http.post(format!("{}{path}", self.base)).form(form);
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        self.send(request).await
    }

    async fn get(&self, path: &str) -> Answer {
        self.send(self.http.get(format!("{}{path}", self.base))).await
    }

    async fn create_session(&self, form: &[(&str, String)]) -> Answer {
        self.post("/v1/checkout/sessions", form, None).await
    }
}

/// A form body, as Stripe clients send it.
type Form = Vec<(&'static str, String)>;

/// A payment-mode session Stripe accepts, to vary one thing at a time.
fn payment_session() -> Form {
    vec![
        ("mode", "payment".into()),
        ("success_url", "https://example.com/ok".into()),
        ("line_items[0][quantity]", "1".into()),
        ("line_items[0][price_data][currency]", "usd".into()),
        ("line_items[0][price_data][unit_amount]", "500".into()),
        ("line_items[0][price_data][product_data][name]", "100 credits".into()),
        ("metadata[order_id]", "o-1".into()),
    ]
}

fn subscription_session() -> Form {
    let mut form = payment_session();
    form[0].1 = "subscription".into();
    form.push(("line_items[0][price_data][recurring][interval]", "month".into()));
    form
}

fn with(mut form: Form, extra: &[(&'static str, &str)]) -> Form {
    for (name, value) in extra {
        form.retain(|(existing, _)| existing != name);
        form.push((name, value.to_string()));
    }
    form
}

fn without(mut form: Form, name: &str) -> Form {
    form.retain(|(existing, _)| *existing != name);
    form
}

#[tokio::test]
async fn every_answer_carries_a_stripe_request_id() {
    let app = TestApp::spawn().await;
    let api = Api::of(&app);
    let created = api.create_session(&payment_session()).await;
    let missing = api.get("/v1/checkout/sessions/cs_test_nope").await;
    let unknown_url = api.get("/v1/charges").await;
    let mut ids = Vec::new();
    for answer in [&created, &missing, &unknown_url] {
        let id = answer.headers["request-id"].to_str().unwrap().to_owned();
        assert!(id.starts_with("req_") && id.len() > 10, "{id}");
        ids.push(id);
    }
    ids.dedup();
    assert_eq!(ids.len(), 3, "each request has its own id");
}

#[tokio::test]
async fn unknown_objects_are_404_resource_missing_naming_the_id_parameter() {
    let app = TestApp::spawn().await;
    let api = Api::of(&app);
    for (path, kind, param) in [
        ("/v1/checkout/sessions/cs_test_nope", "checkout.session", "session"),
        ("/v1/subscriptions/sub_nope", "subscription", "id"),
        ("/v1/invoices/in_nope", "invoice", "id"),
        ("/v1/events/evt_nope", "event", "id"),
        ("/v1/prices/price_nope", "price", "price"),
    ] {
        let answer = api.get(path).await;
        assert_eq!(
            answer.refusal(),
            (
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                Some("resource_missing"),
                Some(param)
            ),
            "{path}: {}",
            answer.body
        );
        let message = answer.body["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(&format!("No such {kind}: '")), "{message}");
    }
}

#[tokio::test]
async fn session_creation_refuses_what_stripe_refuses() {
    let app = TestApp::spawn().await;
    app.emulator.add_price(BookPrice {
        id: "price_monthly_book".into(),
        unit_amount: 2000,
        currency: "usd".into(),
        interval: Some("month".into()),
        product_name: "Pro".into(),
    });
    app.emulator.add_price(BookPrice {
        id: "price_once_book".into(),
        unit_amount: 500,
        currency: "usd".into(),
        interval: None,
        product_name: "Credits".into(),
    });
    let api = Api::of(&app);
    let now = unix_now();
    let soon = (now + 60).to_string();
    let too_late = (now + 25 * 3600).to_string();
    let long_key = format!("metadata[{}]", "k".repeat(41));
    let long_value = "v".repeat(501);
    let book_price = |id: &str| {
        let form = without(payment_session(), "line_items[0][price_data][currency]");
        let form = without(form, "line_items[0][price_data][unit_amount]");
        let form = without(form, "line_items[0][price_data][product_data][name]");
        with(form, &[("line_items[0][price]", id)])
    };
    let mut many_keys = payment_session();
    let names: Vec<&'static str> = (0..51)
        .map(|i| &*Box::leak(format!("metadata[k{i}]").into_boxed_str()))
        .collect();
    many_keys.extend(names.iter().map(|name| (*name, "v".to_owned())));

    let bad = StatusCode::BAD_REQUEST;
    let cases: Vec<(&str, Form, Option<&str>, &str)> = vec![
        (
            "no mode",
            without(payment_session(), "mode"),
            Some("parameter_missing"),
            "mode",
        ),
        (
            "an unknown mode",
            with(payment_session(), &[("mode", "pay")]),
            Some("parameter_invalid_string"),
            "mode",
        ),
        (
            "currency xyz",
            with(payment_session(), &[("line_items[0][price_data][currency]", "xyz")]),
            Some("parameter_invalid_string"),
            "line_items[0][price_data][currency]",
        ),
        (
            "expires_at in a minute",
            with(payment_session(), &[("expires_at", &soon)]),
            Some("parameter_invalid_integer"),
            "expires_at",
        ),
        (
            "expires_at in 25 hours",
            with(payment_session(), &[("expires_at", &too_late)]),
            Some("parameter_invalid_integer"),
            "expires_at",
        ),
        (
            "expires_at not a number",
            with(payment_session(), &[("expires_at", "soon")]),
            Some("parameter_invalid_integer"),
            "expires_at",
        ),
        (
            "payment_intent_data in subscription mode",
            with(subscription_session(), &[("payment_intent_data[metadata][a]", "b")]),
            None,
            "payment_intent_data",
        ),
        (
            "subscription_data in payment mode",
            with(payment_session(), &[("subscription_data[metadata][a]", "b")]),
            None,
            "subscription_data",
        ),
        (
            "an inline recurring price in payment mode",
            with(
                payment_session(),
                &[("line_items[0][price_data][recurring][interval]", "month")],
            ),
            None,
            "line_items[0][price_data][recurring]",
        ),
        (
            "a recurring book price in payment mode",
            book_price("price_monthly_book"),
            None,
            "line_items[0][price]",
        ),
        (
            "only a one-time price in subscription mode",
            with(book_price("price_once_book"), &[("mode", "subscription")]),
            None,
            "line_items",
        ),
        (
            "an unknown price",
            book_price("price_nope"),
            Some("resource_missing"),
            "line_items[0][price]",
        ),
        (
            "an unknown top-level parameter",
            with(payment_session(), &[("foo", "1")]),
            Some("parameter_unknown"),
            "foo",
        ),
        (
            "an unknown line item parameter",
            with(payment_session(), &[("line_items[0][bogus]", "1")]),
            Some("parameter_unknown"),
            "line_items[0][bogus]",
        ),
        (
            "an unknown price_data parameter",
            with(payment_session(), &[("line_items[0][price_data][bogus]", "1")]),
            Some("parameter_unknown"),
            "line_items[0][price_data][bogus]",
        ),
        (
            "an unknown product_data parameter",
            with(
                payment_session(),
                &[("line_items[0][price_data][product_data][bogus]", "1")],
            ),
            Some("parameter_unknown"),
            "line_items[0][price_data][product_data][bogus]",
        ),
        (
            "an unknown subscription_data parameter",
            with(
                subscription_session(),
                &[("subscription_data[backdate_start_date]", "1")],
            ),
            Some("parameter_unknown"),
            "subscription_data[backdate_start_date]",
        ),
        (
            "a negative unit_amount",
            with(payment_session(), &[("line_items[0][price_data][unit_amount]", "-1")]),
            Some("parameter_invalid_integer"),
            "line_items[0][price_data][unit_amount]",
        ),
        (
            "a fractional unit_amount",
            with(payment_session(), &[("line_items[0][price_data][unit_amount]", "4.99")]),
            Some("parameter_invalid_integer"),
            "line_items[0][price_data][unit_amount]",
        ),
        (
            "no quantity",
            without(payment_session(), "line_items[0][quantity]"),
            Some("parameter_missing"),
            "line_items[0][quantity]",
        ),
        (
            "a metadata key over 40 characters",
            with(
                payment_session(),
                &[(Box::leak(long_key.clone().into_boxed_str()), "v")],
            ),
            Some("parameter_invalid_string"),
            Box::leak(long_key.into_boxed_str()),
        ),
        (
            "a metadata value over 500 characters",
            with(payment_session(), &[("metadata[note]", &long_value)]),
            Some("parameter_invalid_string"),
            "metadata[note]",
        ),
        (
            "51 metadata keys",
            many_keys,
            Some("parameter_invalid_string"),
            "metadata",
        ),
        (
            "allow_promotion_codes that is no boolean",
            with(payment_session(), &[("allow_promotion_codes", "yes")]),
            None,
            "allow_promotion_codes",
        ),
    ];
    for (case, form, code, param) in cases {
        let answer = api.create_session(&form).await;
        assert_eq!(
            answer.refusal(),
            (bad, "invalid_request_error", code, Some(param)),
            "{case}: {}",
            answer.body
        );
        assert!(answer.body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    assert!(
        app.emulator.events().is_empty() && app.emulator.session("none").is_none(),
        "a refused request makes nothing"
    );

    // What is free-form stays free, and the limits are inclusive.
    let fine = with(
        payment_session(),
        &[
            ("metadata[Any key, even with spaces]", "x"),
            (Box::leak(format!("metadata[{}]", "k".repeat(40)).into_boxed_str()), "v"),
            ("metadata[long]", &"v".repeat(500)),
            ("expires_at", &(now + 1800).to_string()),
            ("allow_promotion_codes", "true"),
        ],
    );
    let answer = api.create_session(&fine).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["allow_promotion_codes"], true);
    let answer = api.create_session(&book_price("price_once_book")).await;
    assert_eq!(
        (answer.status, answer.body["amount_total"].as_i64()),
        (StatusCode::OK, Some(500)),
        "{}",
        answer.body
    );
}

/// The typed client can only produce some of the refusals; those it can are sent through it, as
/// the service would send them.
#[tokio::test]
async fn the_async_stripe_client_gets_stripes_errors_for_what_it_can_send() {
    let app = TestApp::spawn().await;
    let line_item = |currency: Currency, amount: i64| {
        let mut item = CreateCheckoutSessionLineItems::new();
        item.quantity = Some(1);
        let mut price = CreateCheckoutSessionLineItemsPriceData::new(currency);
        price.unit_amount = Some(amount);
        price.product_data = Some(ProductData {
            name: "100 credits".into(),
            description: None,
            images: None,
            metadata: None,
            tax_code: None,
            unit_label: None,
            tax_details: None,
        });
        item.price_data = Some(price);
        item
    };
    let base = || {
        CreateCheckoutSession::new()
            .success_url("https://example.com/ok")
            .line_items(vec![line_item(Currency::USD, 500)])
    };
    let long_key = "k".repeat(41);
    let cases: Vec<(&str, CreateCheckoutSession, Option<&str>, String)> = vec![
        ("no mode", base(), Some("parameter_missing"), "mode".into()),
        (
            "currency xyz",
            CreateCheckoutSession::new()
                .mode(CheckoutSessionMode::Payment)
                .line_items(vec![line_item(Currency::Unknown("xyz".into()), 500)]),
            Some("parameter_invalid_string"),
            "line_items[0][price_data][currency]".into(),
        ),
        (
            "a negative unit_amount",
            CreateCheckoutSession::new()
                .mode(CheckoutSessionMode::Payment)
                .line_items(vec![line_item(Currency::USD, -5)]),
            Some("parameter_invalid_integer"),
            "line_items[0][price_data][unit_amount]".into(),
        ),
        (
            "expires_at in ten minutes",
            base().mode(CheckoutSessionMode::Payment).expires_at(unix_now() + 600),
            Some("parameter_invalid_integer"),
            "expires_at".into(),
        ),
        (
            "payment_intent_data in subscription mode",
            base().mode(CheckoutSessionMode::Subscription).payment_intent_data(
                CreateCheckoutSessionPaymentIntentData {
                    description: Some("one payment".into()),
                    ..CreateCheckoutSessionPaymentIntentData::new()
                },
            ),
            None,
            "payment_intent_data".into(),
        ),
        (
            "a metadata key over 40 characters",
            base()
                .mode(CheckoutSessionMode::Payment)
                .metadata(std::collections::HashMap::from([(long_key.clone(), "v".to_owned())])),
            Some("parameter_invalid_string"),
            format!("metadata[{long_key}]"),
        ),
    ];
    for (case, request, code, param) in cases {
        match request.send(app.stripe.uncounted()).await {
            Err(StripeError::Stripe(error, status)) => {
                assert_eq!(
                    (
                        status,
                        error.type_.as_str(),
                        error.code.as_ref().map(|c| c.as_str()),
                        error.param.as_deref()
                    ),
                    (400, "invalid_request_error", code, Some(param.as_str())),
                    "{case}: {:?}",
                    error.message
                );
            }
            other => panic!("{case}: expected Stripe's refusal, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn an_idempotency_key_replays_its_first_answer_and_refuses_other_parameters() {
    let app = TestApp::spawn().await;
    let api = Api::of(&app);
    let form = payment_session();

    let first = api.post("/v1/checkout/sessions", &form, Some("key-1")).await;
    let again = api.post("/v1/checkout/sessions", &form, Some("key-1")).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(again.body, first.body, "the same answer, the same session");
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert!(first.headers.get("idempotent-replayed").is_none());

    // The same parameters in another order are the same request.
    let mut reordered = form.clone();
    reordered.reverse();
    let reordered = api.post("/v1/checkout/sessions", &reordered, Some("key-1")).await;
    assert_eq!(reordered.body["id"], first.body["id"]);

    let other = with(form.clone(), &[("line_items[0][price_data][unit_amount]", "501")]);
    let refused = api.post("/v1/checkout/sessions", &other, Some("key-1")).await;
    assert_eq!(
        refused.refusal(),
        (StatusCode::BAD_REQUEST, "idempotency_error", None, None),
        "{}",
        refused.body
    );

    // A request refused for its parameters keeps nothing: the key still works once they are right.
    let invalid = api
        .post("/v1/checkout/sessions", &without(form.clone(), "mode"), Some("key-2"))
        .await;
    assert_eq!(invalid.status, StatusCode::BAD_REQUEST);
    let corrected = api.post("/v1/checkout/sessions", &form, Some("key-2")).await;
    assert_eq!(corrected.status, StatusCode::OK, "{}", corrected.body);
    assert_ne!(corrected.body["id"], first.body["id"]);

    // Keys are per endpoint: the same key expiring a session is another request.
    let id = first.body["id"].as_str().unwrap();
    let expired = api
        .post(&format!("/v1/checkout/sessions/{id}/expire"), &[], Some("key-1"))
        .await;
    assert_eq!(
        (expired.status, expired.body["status"].as_str()),
        (StatusCode::OK, Some("expired"))
    );
    let expired_again = api
        .post(&format!("/v1/checkout/sessions/{id}/expire"), &[], Some("key-1"))
        .await;
    assert_eq!(expired_again.body, expired.body);
    assert_eq!(expired_again.headers["idempotent-replayed"], "true");
    assert_eq!(
        app.emulator
            .events()
            .iter()
            .filter(|e| e["type"] == "checkout.session.expired")
            .count(),
        1,
        "a replay changes nothing"
    );
}

/// Six events a second apart, oldest first: three sessions, each completed or expired.
async fn six_events(app: &TestApp, api: &Api) -> Vec<Value> {
    for _ in 0..3 {
        let session = api.create_session(&payment_session()).await.body;
        let id = session["id"].as_str().unwrap();
        app.emulator
            .pay_session(id, entitle::stripe_emulator::PaymentResult::Card);
        let session = api.create_session(&payment_session()).await.body;
        app.emulator.expire_session(session["id"].as_str().unwrap());
    }
    let events = app.emulator.events();
    assert_eq!(events.len(), 6);
    let start = unix_now() - 100;
    for (offset, event) in events.iter().enumerate() {
        app.emulator
            .set_event_created(event["id"].as_str().unwrap(), start + offset as i64);
    }
    app.emulator.events()
}

fn ids(list: &Value) -> Vec<String> {
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_event_list_filters_by_type_and_creation_time_as_stripe_does() {
    let app = TestApp::spawn().await;
    let api = Api::of(&app);
    let events = six_events(&app, &api).await;
    let id = |i: usize| events[i]["id"].as_str().unwrap().to_owned();
    let created = |i: usize| events[i]["created"].as_i64().unwrap();

    let all = api.get("/v1/events").await.body;
    assert_eq!(
        (all["object"].as_str(), all["url"].as_str(), all["has_more"].as_bool()),
        (Some("list"), Some("/v1/events"), Some(false))
    );
    assert_eq!(ids(&all), (0..6).rev().map(id).collect::<Vec<_>>(), "newest first");

    let completed = api.get("/v1/events?type=checkout.session.completed").await.body;
    assert_eq!(ids(&completed), vec![id(4), id(2), id(0)]);
    let wildcard = api.get("/v1/events?type=checkout.session.*").await.body;
    assert_eq!(ids(&wildcard).len(), 6);
    let none = api.get("/v1/events?type=invoice.*").await.body;
    assert!(ids(&none).is_empty());
    let types = api
        .get("/v1/events?types[]=checkout.session.expired&types[]=invoice.paid")
        .await
        .body;
    assert_eq!(ids(&types), vec![id(5), id(3), id(1)]);
    let both = api.get("/v1/events?type=a&types[]=b").await;
    assert_eq!(
        both.refusal(),
        (
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            Some("parameters_exclusive"),
            Some("type")
        )
    );

    let range = |query: String| {
        let api = &api;
        async move { ids(&api.get(&format!("/v1/events?{query}")).await.body) }
    };
    assert_eq!(range(format!("created={}", created(2))).await, vec![id(2)]);
    assert_eq!(range(format!("created[gt]={}", created(3))).await, vec![id(5), id(4)]);
    assert_eq!(
        range(format!("created[gte]={}", created(3))).await,
        vec![id(5), id(4), id(3)]
    );
    assert_eq!(range(format!("created[lt]={}", created(1))).await, vec![id(0)]);
    assert_eq!(
        range(format!("created[gte]={}&created[lte]={}", created(1), created(2))).await,
        vec![id(2), id(1)]
    );

    for (query, code, param) in [
        ("limit=0", "parameter_invalid_integer", "limit"),
        ("limit=101", "parameter_invalid_integer", "limit"),
        ("limit=ten", "parameter_invalid_integer", "limit"),
        ("created[gt]=yesterday", "parameter_invalid_integer", "created[gt]"),
        ("created=now", "parameter_invalid_integer", "created"),
        ("colour=red", "parameter_unknown", "colour"),
        ("starting_after=evt_nope", "resource_missing", "starting_after"),
    ] {
        let answer = api.get(&format!("/v1/events?{query}")).await;
        assert_eq!(
            answer.refusal(),
            (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                Some(code),
                Some(param)
            ),
            "{query}: {}",
            answer.body
        );
    }
    assert_eq!(ids(&api.get("/v1/events?limit=100").await.body).len(), 6);
}

#[tokio::test]
async fn the_event_list_pages_with_starting_after_and_ending_before() {
    let app = TestApp::spawn().await;
    let api = Api::of(&app);
    let events = six_events(&app, &api).await;
    let newest_first: Vec<String> = events
        .iter()
        .rev()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();

    let mut walked = Vec::new();
    let mut query = "limit=4".to_owned();
    loop {
        let page = api.get(&format!("/v1/events?{query}")).await.body;
        walked.extend(ids(&page));
        if page["has_more"] == false {
            break;
        }
        query = format!("limit=4&starting_after={}", walked.last().unwrap());
    }
    assert_eq!(walked, newest_first, "every event once, in order");

    // Back from the oldest: the two just newer than it, and more beyond.
    let back = api
        .get(&format!("/v1/events?limit=2&ending_before={}", newest_first[5]))
        .await
        .body;
    assert_eq!(ids(&back), newest_first[3..5].to_vec());
    assert_eq!(back["has_more"], true);
    let top = api
        .get(&format!("/v1/events?limit=2&ending_before={}", newest_first[2]))
        .await
        .body;
    assert_eq!(ids(&top), newest_first[0..2].to_vec());
    assert_eq!(top["has_more"], false);

    // A cursor is a place in the whole list, even when the filter leaves its event out.
    let expired_after = api
        .get(&format!(
            "/v1/events?type=checkout.session.expired&starting_after={}",
            newest_first[1]
        ))
        .await
        .body;
    assert_eq!(
        ids(&expired_after),
        vec![newest_first[2].clone(), newest_first[4].clone()]
    );
}

#[tokio::test]
async fn a_subscription_session_leaves_an_invoice_and_the_subscription_data_it_was_given() {
    let app = TestApp::spawn().await;
    let api = Api::of(&app);
    let form = with(
        subscription_session(),
        &[
            ("subscription_data[metadata][plan_id]", "pro_monthly"),
            ("metadata[session_only]", "yes"),
        ],
    );
    let session = api.create_session(&form).await.body;
    let id = session["id"].as_str().unwrap();
    app.emulator
        .pay_session(id, entitle::stripe_emulator::PaymentResult::Card);

    let session = api.get(&format!("/v1/checkout/sessions/{id}")).await.body;
    assert_eq!(session["payment_status"], "paid");
    let invoice_id = session["invoice"]
        .as_str()
        .expect("a completed subscription session names its invoice");
    assert!(invoice_id.starts_with("in_"), "{invoice_id}");
    let invoice = api.get(&format!("/v1/invoices/{invoice_id}")).await;
    assert_eq!(
        (
            invoice.status,
            invoice.body["status"].as_str(),
            invoice.body["amount_paid"].as_i64()
        ),
        (StatusCode::OK, Some("paid"), Some(500))
    );
    let subscription = api
        .get(&format!(
            "/v1/subscriptions/{}",
            session["subscription"].as_str().unwrap()
        ))
        .await
        .body;
    assert_eq!(subscription["status"], "active");
    assert_eq!(subscription["metadata"], json!({ "plan_id": "pro_monthly" }));
    assert_eq!(subscription["latest_invoice"], invoice_id);
}

#[tokio::test]
async fn a_trial_completes_without_payment_and_the_subscription_is_trialing() {
    let app = TestApp::spawn().await;
    let api = Api::of(&app);
    let form = with(
        subscription_session(),
        &[
            ("subscription_data[trial_period_days]", "14"),
            ("allow_promotion_codes", "true"),
        ],
    );
    let created = api.create_session(&form).await.body;
    assert_eq!(created["allow_promotion_codes"], true);
    let id = created["id"].as_str().unwrap();
    app.emulator
        .pay_session(id, entitle::stripe_emulator::PaymentResult::Card);

    let session = api.get(&format!("/v1/checkout/sessions/{id}")).await.body;
    assert_eq!(
        (
            session["status"].as_str(),
            session["payment_status"].as_str(),
            session["amount_total"].as_i64()
        ),
        (Some("complete"), Some("no_payment_required"), Some(0))
    );
    let subscription = api
        .get(&format!(
            "/v1/subscriptions/{}",
            session["subscription"].as_str().unwrap()
        ))
        .await
        .body;
    assert_eq!(subscription["status"], "trialing");
    let trial_end = subscription["trial_end"].as_i64().unwrap();
    assert!((trial_end - (unix_now() + 14 * 86_400)).abs() < 60, "{trial_end}");
    let invoice = api
        .get(&format!("/v1/invoices/{}", session["invoice"].as_str().unwrap()))
        .await
        .body;
    assert_eq!(
        (invoice["status"].as_str(), invoice["amount_paid"].as_i64()),
        (Some("paid"), Some(0))
    );
    assert_eq!(
        app.emulator
            .events()
            .iter()
            .map(|e| e["type"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>(),
        [
            "checkout.session.completed",
            "customer.subscription.created",
            "invoice.paid"
        ]
    );
}

/// A catalog whose plans name Stripe Prices by id, as a merchant with products in Stripe has.
const CATALOG_WITH_BOOK_PRICES: &str = r#"
[plans.credits_book]
name = "100 credits, from the price book"
kind = "one_time"
amount = 500
currency = "usd"
credits = 100
stripe_price = "price_credits_book"

[plans.pro_book]
name = "Pro, from the price book"
kind = "subscription"
amount = 2000
currency = "usd"
interval = "month"
entitlement = "pro"
stripe_price = "price_pro_book"
"#;

async fn spawn_with_book_prices() -> TestApp {
    let plans = std::env::temp_dir().join(format!("entitle-plans-{}.toml", uuid::Uuid::new_v4().simple()));
    std::fs::write(&plans, CATALOG_WITH_BOOK_PRICES).unwrap();
    TestApp::spawn_in_emulator_mode_with(&[("PLANS_FILE", plans.to_str().unwrap())]).await
}

/// Buys `plan` through the service as a user would, paying on the hosted page; the order once settled.
async fn buy(app: &TestApp, token: &str, plan: &str) -> Value {
    let (status, body) = app
        .post_json("/checkout-session", Some(token), &json!({ "planId": plan }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let browser = reqwest::Client::builder().redirect(Policy::none()).build().unwrap();
    let paid = browser
        .post(body["checkoutUrl"].as_str().unwrap())
        .form(&[("method", "card"), ("card_number", "4242424242424242")])
        .send()
        .await
        .unwrap();
    assert_eq!(paid.status(), StatusCode::SEE_OTHER);
    for _ in 0..200 {
        let (_, order) = app
            .post_json("/order-status", Some(token), &json!({ "orderId": body["orderId"] }))
            .await;
        if order["status"] != "pending" {
            return order;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the {plan} order stayed pending");
}

#[tokio::test]
async fn the_price_book_holds_the_catalogs_stripe_prices_and_checkout_charges_them_by_id() {
    let app = spawn_with_book_prices().await;
    let api = Api::of(&app);
    let credits = api.get("/v1/prices/price_credits_book").await;
    assert_eq!(credits.status, StatusCode::OK, "{}", credits.body);
    assert_eq!(
        (
            credits.body["object"].as_str(),
            credits.body["type"].as_str(),
            credits.body["unit_amount"].as_i64(),
            credits.body["currency"].as_str()
        ),
        (Some("price"), Some("one_time"), Some(500), Some("usd"))
    );
    let pro = api.get("/v1/prices/price_pro_book").await.body;
    assert_eq!(
        (
            pro["type"].as_str(),
            pro["recurring"]["interval"].as_str(),
            pro["unit_amount"].as_i64()
        ),
        (Some("recurring"), Some("month"), Some(2000))
    );

    let token = app.dev_token("alice").await;
    assert_eq!(buy(&app, &token, "credits_book").await["status"], "paid");
    assert_eq!(buy(&app, &token, "pro_book").await["status"], "paid");
    let sent: Vec<_> = app
        .emulator
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == "/v1/checkout/sessions")
        .map(|r| r.params["line_items[0][price]"].clone())
        .collect();
    assert_eq!(sent, ["price_credits_book", "price_pro_book"]);

    let (_, account) = app.get("/entitlements", Some(&token)).await;
    assert_eq!(account["credits"], 100);
    assert_eq!(
        (
            account["entitlements"][0]["key"].as_str(),
            account["entitlements"][0]["active"].as_bool()
        ),
        (Some("pro"), Some(true))
    );
    // The subscription bills the book's Price itself.
    let subscription_id = app
        .emulator
        .events()
        .iter()
        .find(|e| e["type"] == "customer.subscription.created")
        .map(|e| e["data"]["object"]["id"].as_str().unwrap().to_owned())
        .unwrap();
    let subscription = app.emulator.subscription(&subscription_id).unwrap();
    assert_eq!(subscription["items"]["data"][0]["price"]["id"], "price_pro_book");
}

#[tokio::test]
async fn retrieving_and_expiring_take_only_expand_and_a_body_that_is_no_form_is_refused_in_stripes_shape() {
    let app = TestApp::spawn().await;
    let api = Api::of(&app);
    let id = api.create_session(&payment_session()).await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let answer = api
        .post(
            &format!("/v1/checkout/sessions/{id}/expire"),
            &[("reason", "x".into())],
            None,
        )
        .await;
    assert_eq!(
        answer.refusal(),
        (
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            Some("parameter_unknown"),
            Some("reason")
        )
    );
    assert_eq!(app.emulator.session(&id).unwrap()["status"], "open");
    let retrieved = api.get(&format!("/v1/checkout/sessions/{id}?foo=1")).await;
    assert_eq!(
        retrieved.refusal(),
        (
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            Some("parameter_unknown"),
            Some("foo")
        )
    );
    let expanded = api
        .get(&format!("/v1/checkout/sessions/{id}?expand[]=line_items"))
        .await;
    assert_eq!(expanded.status, StatusCode::OK);

    let json_body = api
        .send(
            api.http
                .post(format!("{}/v1/checkout/sessions", api.base))
                .json(&json!({ "mode": "payment" })),
        )
        .await;
    assert_eq!(json_body.status, StatusCode::BAD_REQUEST, "{}", json_body.body);
    assert_eq!(json_body.body["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn delivery_success_lists_the_events_the_webhook_endpoint_accepted() {
    let app = TestApp::spawn_in_emulator_mode().await;
    let api = Api::of(&app);
    let token = app.dev_token("alice").await;
    assert_eq!(buy(&app, &token, "credits_100").await["status"], "paid");
    let event_id = app.emulator.events()[0]["id"].as_str().unwrap().to_owned();

    // The order is paid once the service has answered the delivery; the emulator notes it then.
    let mut delivered = Vec::new();
    for _ in 0..50 {
        delivered = ids(&api.get("/v1/events?delivery_success=true").await.body);
        if !delivered.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(delivered, [event_id]);
    assert!(ids(&api.get("/v1/events?delivery_success=false").await.body).is_empty());
    let answer = api.get("/v1/events?delivery_success=maybe").await;
    assert_eq!(answer.refusal().3, Some("delivery_success"));
}

#[tokio::test]
async fn the_secret_key_is_taken_as_a_bearer_token_or_as_basic_auths_user_as_stripe_does() {
    let app = TestApp::spawn().await;
    let api = Api::of(&app);
    let url = format!("{}/v1/events?limit=1", api.base);
    let status = |request: reqwest::RequestBuilder| async move { request.send().await.unwrap().status() };
    // `curl -u sk_test_…:`, as in Stripe's own examples.
    assert_eq!(
        status(api.http.get(&url).basic_auth("sk_test_emulated", Some(""))).await,
        StatusCode::OK
    );
    assert_eq!(
        status(api.http.get(&url).basic_auth("sk_test_emulated", None::<&str>)).await,
        StatusCode::OK
    );
    assert_eq!(
        status(api.http.get(&url).bearer_auth("sk_test_emulated")).await,
        StatusCode::OK
    );
    for refused in [
        api.http.get(&url),
        api.http.get(&url).basic_auth("pk_test_publishable", Some("")),
        api.http.get(&url).header("authorization", "Basic not-base64!"),
        api.http.get(&url).bearer_auth("pk_test_publishable"),
    ] {
        assert_eq!(status(refused).await, StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn a_payments_charges_refunds_and_disputes_are_listed_by_payment_intent_as_stripe_does() {
    let app = TestApp::spawn().await;
    let api = Api::of(&app);
    let purchase = app.paid_purchase("alice", "credits_100").await;
    let other = app.paid_purchase("bob", "credits_100").await;
    let payment = purchase.payment_intent_id();
    let charge = app.charge_of(&purchase);
    let (refund, _) = app.emulator.refund(&charge, Some(100)).unwrap();
    let (dispute, _) = app.emulator.open_dispute(&charge).unwrap();
    app.emulator.open_dispute(&app.charge_of(&other)).unwrap();

    let charges = api.get(&format!("/v1/charges?payment_intent={payment}")).await.body;
    assert_eq!(ids(&charges), vec![charge.clone()]);
    assert_eq!(charges["data"][0]["amount_refunded"], 100);
    assert_eq!(charges["url"], "/v1/charges");
    // The refund does not name its payment intent; Stripe finds it by its charge's.
    let refunds = api.get(&format!("/v1/refunds?payment_intent={payment}")).await.body;
    assert_eq!(ids(&refunds), vec![refund]);
    let disputes = api.get(&format!("/v1/disputes?payment_intent={payment}")).await.body;
    assert_eq!(ids(&disputes), vec![dispute.clone()]);
    assert_eq!(
        ids(&api.get(&format!("/v1/disputes?charge={charge}")).await.body),
        vec![dispute]
    );
    assert_eq!(ids(&api.get("/v1/disputes").await.body).len(), 2);

    assert_eq!(
        api.get("/v1/charges?charge=ch_1").await.refusal(),
        (
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            Some("parameter_unknown"),
            Some("charge")
        )
    );
    assert_eq!(
        api.get("/v1/refunds?limit=101").await.refusal().0,
        StatusCode::BAD_REQUEST
    );
}
