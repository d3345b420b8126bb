//! One Stripe customer per user, made on the first checkout and sent with every later one, and the
//! billing portal it opens: through the real service, async-stripe and the emulator's portal page.

use std::time::Duration;

use entitle::{
    config::StripeBackend,
    stripe_emulator::{InjectedFailure, PaymentResult},
};
use futures::future::join_all;
use reqwest::{StatusCode, redirect::Policy};
use serde_json::{Value, json};

use crate::helpers::{TestApp, error_code, token_for};

/// The user's stored customer, with its livemode.
async fn stored_customer(app: &TestApp, user: &str) -> Option<(String, bool)> {
    sqlx::query_as("select stripe_customer_id, livemode from stripe_customers where user_id = $1")
        .bind(user)
        .fetch_optional(&app.db)
        .await
        .unwrap()
}

fn customer_creations(app: &TestApp) -> Vec<entitle::stripe_emulator::RecordedRequest> {
    app.emulator
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == "/v1/customers")
        .collect()
}

/// The emulator's customers made for `user` (by the `metadata[user_id]` the service sends).
fn customers_of(app: &TestApp, user: &str) -> Vec<Value> {
    app.emulator
        .customers()
        .into_iter()
        .filter(|c| c["metadata"]["user_id"] == user)
        .collect()
}

async fn open_portal(app: &TestApp, user: &str) -> (StatusCode, Value) {
    app.post_json("/billing-portal", Some(&token_for(user)), &json!({}))
        .await
}

/// The portal session id at the end of a portal URL.
fn portal_session_id(url: &str) -> String {
    url.rsplit('/').next().unwrap().to_owned()
}

fn browser() -> reqwest::Client {
    reqwest::Client::builder().redirect(Policy::none()).build().unwrap()
}

/// Presses a button of the portal page, as the browser posts its form; the answer, unfollowed.
async fn press(portal_url: &str, subscription_id: &str, action: &str) -> reqwest::Response {
    browser()
        .post(format!("{portal_url}/subscriptions/{subscription_id}"))
        .form(&[("action", action)])
        .send()
        .await
        .unwrap()
}

/// The emulator's events recorded since `seen` of them were.
fn events_since(app: &TestApp, seen: usize) -> Vec<Value> {
    app.emulator.events().split_off(seen)
}

#[tokio::test]
async fn given_a_users_first_checkout_then_a_customer_is_made_stored_and_named_on_the_session() {
    let app = TestApp::spawn().await;
    let (_, session_id) = app.checkout("alice", "credits_100").await;

    let created = customer_creations(&app);
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].params["metadata[user_id]"], "alice");
    let key = created[0].idempotency_key.as_deref().unwrap();
    assert!(key.starts_with("entitle-customer-") && !key.contains("alice"), "{key}");

    let (customer, livemode) = stored_customer(&app, "alice").await.expect("the customer is stored");
    assert!(customer.starts_with("cus_"), "{customer}");
    assert!(!livemode);
    let sent = &app.session_creations()[0].params;
    assert_eq!(sent["customer"], customer);
    assert!(!sent.contains_key("customer_email") && !sent.contains_key("customer_creation"));
    assert_eq!(
        app.emulator.session(&session_id).unwrap()["customer"],
        customer.as_str()
    );
}

#[tokio::test]
async fn given_a_customer_then_every_later_checkout_reuses_it_and_its_subscription_belongs_to_it() {
    let app = TestApp::spawn().await;
    let first = app.fulfilled_purchase("alice", "credits_100").await;
    let (customer, _) = stored_customer(&app, "alice").await.unwrap();
    assert_eq!(first.events[0]["data"]["object"]["customer"], customer.as_str());

    let second = app.fulfilled_purchase("alice", "pro_monthly").await;
    assert_eq!(customer_creations(&app).len(), 1, "no second customer");
    let sessions = app.session_creations();
    assert_eq!(sessions.len(), 2);
    assert_eq!(sessions[1].params["customer"], customer);
    let subscription = app.emulator.subscription(&second.subscription_id()).unwrap();
    assert_eq!(subscription["customer"], customer.as_str());
    let order_customer: Option<String> = sqlx::query_scalar("select stripe_customer_id from orders where id = $1")
        .bind(second.order_id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(order_customer.as_deref(), Some(customer.as_str()));
}

#[tokio::test]
async fn given_concurrent_first_checkouts_of_one_user_then_one_customer_and_one_row_exist() {
    let app = TestApp::spawn().await;
    let checkouts = (0..8).map(|_| app.try_checkout("carol", "credits_100"));
    for (status, body) in join_all(checkouts).await {
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    assert_eq!(customers_of(&app, "carol").len(), 1, "Stripe made one customer");
    let rows: i64 = sqlx::query_scalar("select count(*) from stripe_customers where user_id = 'carol'")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(rows, 1);
    let (customer, _) = stored_customer(&app, "carol").await.unwrap();
    let sessions = app.session_creations();
    assert_eq!(sessions.len(), 8);
    assert!(
        sessions.iter().all(|s| s.params["customer"] == customer),
        "{sessions:?}"
    );
}

#[tokio::test]
async fn given_an_earlier_session_named_a_customer_then_the_user_adopts_it_instead_of_a_new_one() {
    let app = TestApp::spawn().await;
    let earlier = app.fulfilled_purchase("dave", "credits_100").await;
    let (customer, _) = stored_customer(&app, "dave").await.unwrap();
    // As a purchase made before customers were stored left it: on the order only.
    sqlx::query("delete from stripe_customers")
        .execute(&app.db)
        .await
        .unwrap();
    let creations_before = customer_creations(&app).len();

    app.checkout("dave", "credits_100").await;
    assert_eq!(customer_creations(&app).len(), creations_before, "no new customer");
    assert_eq!(app.session_creations()[1].params["customer"], customer);
    assert_eq!(stored_customer(&app, "dave").await.unwrap().0, customer);
    assert_eq!(earlier.events[0]["data"]["object"]["customer"], customer.as_str());
}

#[tokio::test]
async fn when_stripe_fails_creating_the_customer_then_checkout_is_a_502_and_the_order_failed() {
    let app = TestApp::spawn().await;
    app.emulator
        .fail_requests("/v1/customers", Some(InjectedFailure::Stripe(500)));

    let (status, body) = app.try_checkout("erin", "credits_100").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(error_code(&body), "payment_provider_unavailable");
    assert!(!body.to_string().contains("injected"), "{body}");
    let statuses: Vec<String> = sqlx::query_scalar("select status from orders")
        .fetch_all(&app.db)
        .await
        .unwrap();
    assert_eq!(statuses, ["failed"]);
    assert!(app.session_creations().is_empty(), "no session without a customer");
    assert!(stored_customer(&app, "erin").await.is_none());

    app.emulator.fail_requests("/v1/customers", None);
    let (status, body) = app.try_checkout("erin", "credits_100").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(stored_customer(&app, "erin").await.is_some());
}

#[tokio::test]
async fn given_a_buyer_then_the_portal_url_opens_their_customers_portal_returning_to_the_app() {
    let app = TestApp::spawn().await;
    let purchase = app.fulfilled_purchase("alice", "pro_monthly").await;
    let (customer, _) = stored_customer(&app, "alice").await.unwrap();

    // With `{}` and with no body at all.
    let (status, body) = open_portal(&app, "alice").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let bare = app
        .http
        .post(app.url("/billing-portal"))
        .bearer_auth(token_for("alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status(), StatusCode::OK);

    let url = body["url"].as_str().unwrap();
    let session = app.emulator.portal_session(&portal_session_id(url)).unwrap();
    assert_eq!(session["object"], "billing_portal.session");
    assert_eq!(session["customer"], customer.as_str());
    assert_eq!(session["return_url"], "http://localhost:5173/account");

    let page = browser().get(url).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(
        html.contains(&format!("subscription-{}", purchase.subscription_id())),
        "{html}"
    );
    assert!(html.contains("Pro, monthly") && html.contains("$20.00"), "{html}");
    assert!(html.contains(r#"href="http://localhost:5173/account""#), "{html}");
}

#[tokio::test]
async fn given_a_user_without_a_customer_then_the_portal_is_404_no_billing_account_and_stripe_is_not_asked() {
    let app = TestApp::spawn().await;
    let (status, body) = open_portal(&app, "nobody").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(error_code(&body), "no_billing_account");
    assert!(app.emulator.requests().is_empty());

    let (status, _) = app.post_json("/billing-portal", None, &json!({})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = app
        .post_json("/billing-portal", Some(&token_for("nobody")), &json!("manage"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(error_code(&body), "invalid_body");
}

#[tokio::test]
async fn when_stripe_fails_opening_the_portal_then_the_answer_is_a_502_without_internals() {
    let app = TestApp::spawn().await;
    app.fulfilled_purchase("alice", "credits_100").await;
    app.emulator
        .fail_requests("/v1/billing_portal", Some(InjectedFailure::NotJson(502)));
    let (status, body) = open_portal(&app, "alice").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(error_code(&body), "payment_provider_unavailable");
    assert!(!body.to_string().contains("html"), "{body}");
}

#[tokio::test]
async fn given_a_cancellation_at_period_end_in_the_portal_then_the_entitlement_lasts_the_period_and_resuming_undoes_it()
{
    let app = TestApp::spawn().await;
    let purchase = app.fulfilled_purchase("alice", "pro_monthly").await;
    let subscription_id = purchase.subscription_id();
    let (_, body) = open_portal(&app, "alice").await;
    let url = body["url"].as_str().unwrap();

    let seen = app.emulator.events().len();
    let pressed = press(url, &subscription_id, "cancel_at_period_end").await;
    assert_eq!(pressed.status(), StatusCode::SEE_OTHER);
    let events = events_since(&app, seen);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["type"], "customer.subscription.updated");
    assert_eq!(events[0]["data"]["object"]["cancel_at_period_end"], true);
    assert_eq!(events[0]["data"]["previous_attributes"]["cancel_at_period_end"], false);
    assert_eq!(app.deliver_all(&events).await, ["subscription_synced"]);
    let entitlement = app.entitlement("alice").await;
    assert_eq!(entitlement["cancelAtPeriodEnd"], true);
    assert_eq!(entitlement["active"], true, "paid until the period ends: {entitlement}");
    let html = browser().get(url).send().await.unwrap().text().await.unwrap();
    assert!(html.contains("Cancels on"), "{html}");

    let seen = app.emulator.events().len();
    assert_eq!(
        press(url, &subscription_id, "resume").await.status(),
        StatusCode::SEE_OTHER
    );
    let events = events_since(&app, seen);
    assert_eq!(events[0]["type"], "customer.subscription.updated");
    assert_eq!(events[0]["data"]["previous_attributes"]["cancel_at_period_end"], true);
    app.deliver_all(&events).await;
    let entitlement = app.entitlement("alice").await;
    assert_eq!(
        (entitlement["cancelAtPeriodEnd"].clone(), entitlement["active"].clone()),
        (json!(false), json!(true))
    );

    // Resuming what is not set to end is refused and sends nothing.
    let seen = app.emulator.events().len();
    let refused = press(url, &subscription_id, "resume").await;
    assert_eq!(refused.status(), StatusCode::OK);
    assert!(refused.text().await.unwrap().contains(r#"id="error""#));
    assert_eq!(app.emulator.events().len(), seen);
}

#[tokio::test]
async fn given_a_cancellation_now_in_the_portal_then_the_entitlement_ends() {
    let app = TestApp::spawn().await;
    let purchase = app.fulfilled_purchase("alice", "pro_monthly").await;
    let (_, body) = open_portal(&app, "alice").await;
    let url = body["url"].as_str().unwrap();

    let seen = app.emulator.events().len();
    assert_eq!(
        press(url, &purchase.subscription_id(), "cancel_now").await.status(),
        StatusCode::SEE_OTHER
    );
    let events = events_since(&app, seen);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["type"], "customer.subscription.deleted");
    assert_eq!(events[0]["data"]["object"]["status"], "canceled");
    app.deliver_all(&events).await;
    let entitlement = app.entitlement("alice").await;
    assert_eq!(entitlement["active"], false, "{entitlement}");
    assert_eq!(entitlement["status"], "revoked");
    let html = browser().get(url).send().await.unwrap().text().await.unwrap();
    assert!(html.contains("Canceled") && !html.contains("cancel_now-"), "{html}");
}

#[tokio::test]
async fn given_another_users_subscription_then_the_portal_cannot_touch_it() {
    let app = TestApp::spawn().await;
    let alices = app.fulfilled_purchase("alice", "pro_monthly").await;
    app.fulfilled_purchase("bob", "credits_100").await;
    let (_, body) = open_portal(&app, "bob").await;
    let bobs_portal = body["url"].as_str().unwrap();

    let seen = app.emulator.events().len();
    let refused = press(bobs_portal, &alices.subscription_id(), "cancel_now").await;
    assert_eq!(refused.status(), StatusCode::OK);
    assert_eq!(app.emulator.events().len(), seen);
    assert_eq!(
        app.emulator.subscription(&alices.subscription_id()).unwrap()["status"],
        "active"
    );
}

#[tokio::test]
async fn given_a_past_due_subscription_when_the_card_is_updated_in_the_portal_then_the_invoice_is_paid_and_access_is_active()
 {
    let app = TestApp::spawn().await;
    let purchase = app.fulfilled_purchase("alice", "pro_monthly").await;
    let subscription_id = purchase.subscription_id();
    app.deliver_all(&app.emulator.fail_invoice(&subscription_id).unwrap())
        .await;
    assert_eq!(app.entitlement("alice").await["status"], "past_due");
    let open_invoice = app.emulator.subscription(&subscription_id).unwrap()["latest_invoice"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, body) = open_portal(&app, "alice").await;
    let url = body["url"].as_str().unwrap();

    let declined = browser()
        .post(format!("{url}/payment_method"))
        .form(&[("card_number", "4000 0000 0000 0002")])
        .send()
        .await
        .unwrap();
    assert!(declined.text().await.unwrap().contains("declined"));
    let seen = app.emulator.events().len();
    let updated = browser()
        .post(format!("{url}/payment_method"))
        .form(&[("card_number", "4242 4242 4242 4242")])
        .send()
        .await
        .unwrap();
    assert_eq!(updated.status(), StatusCode::SEE_OTHER);
    let events = events_since(&app, seen);
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "payment_method.attached",
            "customer.updated",
            "invoice.paid",
            "customer.subscription.updated"
        ]
    );
    assert_eq!(events[2]["data"]["object"]["id"], open_invoice.as_str());
    assert_eq!(events[3]["data"]["previous_attributes"]["status"], "past_due");
    app.deliver_all(&events).await;

    let entitlement = app.entitlement("alice").await;
    assert_eq!(
        (entitlement["status"].clone(), entitlement["active"].clone()),
        (json!("active"), json!(true))
    );
    assert_eq!(app.emulator.invoice(&open_invoice).unwrap()["status"], "paid");
    let html = browser().get(url).send().await.unwrap().text().await.unwrap();
    assert!(html.contains("visa ending in 4242"), "{html}");
}

#[tokio::test]
async fn in_emulator_mode_a_cancellation_in_the_portal_reaches_the_service_as_a_signed_webhook() {
    let app = TestApp::spawn_in_emulator_mode().await;
    let token = app.dev_token("alice").await;
    let (status, body) = app
        .post_json("/checkout-session", Some(&token), &json!({ "planId": "pro_monthly" }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let session_id = portal_session_id(body["checkoutUrl"].as_str().unwrap());
    app.emulator.pay_session(&session_id, PaymentResult::Card).unwrap();
    let active = |holdings: &Value| holdings["entitlements"][0]["active"] == true;
    wait_for_holdings(&app, &token, active).await;

    let (status, body) = app.post_json("/billing-portal", Some(&token), &json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let url = body["url"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("{}/stripe-emulator/p/session/bps_", app.address)),
        "{url}"
    );
    let subscription_id = app.emulator.session(&session_id).unwrap()["subscription"]
        .as_str()
        .unwrap()
        .to_owned();
    let pressed = press(url, &subscription_id, "cancel_now").await;
    assert_eq!(pressed.status(), StatusCode::SEE_OTHER);
    wait_for_holdings(&app, &token, |holdings| holdings["entitlements"][0]["active"] == false).await;
}

/// Polls `/entitlements` until `done` holds (webhooks are delivered in the background).
async fn wait_for_holdings(app: &TestApp, token: &str, done: impl Fn(&Value) -> bool) {
    for _ in 0..300 {
        let (_, holdings) = app.get("/entitlements", Some(token)).await;
        if done(&holdings) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the entitlements never changed as expected");
}

fn emulator_url(app: &TestApp, path: &str) -> String {
    let StripeBackend::Api { api_base, .. } = &app.config.stripe else {
        panic!("the default test setup calls the emulator on its own port");
    };
    format!("{api_base}{path}")
}

/// The emulator's API as a Stripe client calls it, with form bodies: (status, body, replayed).
async fn emulator_post(
    app: &TestApp,
    path: &str,
    form: &[(&str, &str)],
    key: Option<&str>,
) -> (StatusCode, Value, bool) {
    let mut request = app.http.post(emulator_url(app, path)).form(form);
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    emulator_answer(request).await
}

async fn emulator_get(app: &TestApp, path: &str) -> (StatusCode, Value, bool) {
    emulator_answer(app.http.get(emulator_url(app, path))).await
}

async fn emulator_answer(request: reqwest::RequestBuilder) -> (StatusCode, Value, bool) {
    let response = request.bearer_auth("sk_test_emulated").send().await.unwrap();
    let status = response.status();
    let replayed = response
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true");
    (status, response.json().await.unwrap_or(Value::Null), replayed)
}

/// (status, type, code, param) of a Stripe error answer.
fn refusal(answer: &(StatusCode, Value, bool)) -> (StatusCode, &str, Option<&str>, Option<&str>) {
    let error = &answer.1["error"];
    (
        answer.0,
        error["type"].as_str().unwrap_or("(none)"),
        error["code"].as_str(),
        error["param"].as_str(),
    )
}

const BAD_REQUEST: StatusCode = StatusCode::BAD_REQUEST;
const INVALID: &str = "invalid_request_error";

#[tokio::test]
async fn the_emulator_creates_and_retrieves_customers_as_strictly_as_stripe() {
    let app = TestApp::spawn().await;
    let created = emulator_post(
        &app,
        "/v1/customers",
        &[("email", "a@example.com"), ("metadata[user_id]", "alice")],
        Some("customer-key"),
    )
    .await;
    assert_eq!(created.0, StatusCode::OK, "{}", created.1);
    assert_eq!(created.1["object"], "customer");
    assert_eq!(created.1["email"], "a@example.com");
    assert_eq!(created.1["metadata"], json!({ "user_id": "alice" }));
    let id = created.1["id"].as_str().unwrap();

    let again = emulator_post(
        &app,
        "/v1/customers",
        &[("email", "a@example.com"), ("metadata[user_id]", "alice")],
        Some("customer-key"),
    )
    .await;
    assert_eq!(
        (again.1["id"].as_str(), again.2),
        (Some(id), true),
        "the key's answer, replayed"
    );
    assert_eq!(app.emulator.customers().len(), 1);

    let retrieved = app.emulator.customer(id).unwrap();
    assert_eq!(retrieved["id"], id);
    let fetched = emulator_get(&app, &format!("/v1/customers/{id}")).await;
    assert_eq!((fetched.0, fetched.1["id"].as_str()), (StatusCode::OK, Some(id)));
    let missing = emulator_get(&app, "/v1/customers/cus_test_nope").await;
    assert_eq!(
        refusal(&missing),
        (StatusCode::NOT_FOUND, INVALID, Some("resource_missing"), Some("id"))
    );

    let unknown = emulator_post(&app, "/v1/customers", &[("shoe_size", "9")], None).await;
    assert_eq!(
        refusal(&unknown),
        (BAD_REQUEST, INVALID, Some("parameter_unknown"), Some("shoe_size"))
    );
    let long_key = format!("metadata[{}]", "k".repeat(41));
    let too_long = emulator_post(&app, "/v1/customers", &[(&long_key, "v")], None).await;
    assert_eq!(refusal(&too_long).2, Some("parameter_invalid_string"));
}

#[tokio::test]
async fn the_emulator_refuses_portal_sessions_and_checkout_customers_as_stripe_does() {
    let app = TestApp::spawn().await;
    let customer = emulator_post(&app, "/v1/customers", &[], None).await.1["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let portal = "/v1/billing_portal/sessions";

    let opened = emulator_post(
        &app,
        portal,
        &[("customer", &customer), ("return_url", "https://example.com")],
        None,
    )
    .await;
    assert_eq!(opened.0, StatusCode::OK, "{}", opened.1);
    assert_eq!(opened.1["object"], "billing_portal.session");
    assert!(opened.1["url"].as_str().unwrap().contains("/p/session/bps_"));
    let missing = emulator_post(&app, portal, &[("return_url", "https://example.com")], None).await;
    assert_eq!(
        refusal(&missing),
        (BAD_REQUEST, INVALID, Some("parameter_missing"), Some("customer"))
    );
    let unknown_customer = emulator_post(&app, portal, &[("customer", "cus_test_nope")], None).await;
    assert_eq!(
        refusal(&unknown_customer),
        (BAD_REQUEST, INVALID, Some("resource_missing"), Some("customer"))
    );
    let unknown_param = emulator_post(&app, portal, &[("customer", &customer), ("colour", "red")], None).await;
    assert_eq!(
        refusal(&unknown_param),
        (BAD_REQUEST, INVALID, Some("parameter_unknown"), Some("colour"))
    );

    let session = |extra: &[(&'static str, &str)]| {
        let mut form: Vec<(&str, String)> = vec![
            ("mode", "payment".into()),
            ("success_url", "https://example.com/ok".into()),
            ("line_items[0][quantity]", "1".into()),
            ("line_items[0][price_data][currency]", "usd".into()),
            ("line_items[0][price_data][unit_amount]", "500".into()),
            ("line_items[0][price_data][product_data][name]", "100 credits".into()),
        ];
        form.retain(|(name, _)| !extra.iter().any(|(e, _)| e == name));
        form.extend(extra.iter().map(|(name, value)| (*name, value.to_string())));
        form
    };
    let post_session = |form: Vec<(&'static str, String)>| {
        let app = &app;
        async move {
            let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            emulator_post(app, "/v1/checkout/sessions", &form, None).await
        }
    };
    let for_customer = post_session(session(&[("customer", &customer)])).await;
    assert_eq!(for_customer.0, StatusCode::OK, "{}", for_customer.1);
    assert_eq!(for_customer.1["customer"], customer.as_str());
    let nobody = post_session(session(&[("customer", "cus_test_nope")])).await;
    assert_eq!(
        refusal(&nobody),
        (BAD_REQUEST, INVALID, Some("resource_missing"), Some("customer"))
    );
    let with_email = post_session(session(&[("customer", &customer), ("customer_email", "a@example.com")])).await;
    assert_eq!(
        refusal(&with_email),
        (BAD_REQUEST, INVALID, Some("parameters_exclusive"), Some("customer"))
    );
    let with_creation = post_session(session(&[("customer", &customer), ("customer_creation", "always")])).await;
    assert_eq!(refusal(&with_creation).2, Some("parameters_exclusive"));
    let creation_in_subscription_mode = post_session(session(&[
        ("mode", "subscription"),
        ("line_items[0][price_data][recurring][interval]", "month"),
        ("customer_creation", "always"),
    ]))
    .await;
    assert_eq!(
        refusal(&creation_in_subscription_mode),
        (BAD_REQUEST, INVALID, None, Some("customer_creation"))
    );
    let update_without_customer = post_session(session(&[("customer_update[address]", "auto")])).await;
    assert_eq!(
        refusal(&update_without_customer),
        (BAD_REQUEST, INVALID, None, Some("customer_update"))
    );
}

#[tokio::test]
async fn given_the_stored_customer_deleted_at_stripe_then_the_next_checkouts_make_one_new_customer_and_succeed() {
    let app = TestApp::spawn().await;
    app.fulfilled_purchase("alice", "credits_100").await;
    let (gone, _) = stored_customer(&app, "alice").await.unwrap();
    assert!(app.emulator.delete_customer(&gone));

    // Two checkouts at once meet the deleted customer; both succeed with one new customer.
    let checkouts = (0..2).map(|_| app.try_checkout("alice", "credits_100"));
    let mut sessions = Vec::new();
    for (status, body) in join_all(checkouts).await {
        assert_eq!(status, StatusCode::OK, "{body}");
        let url = body["checkoutUrl"].as_str().unwrap();
        sessions.push(url.rsplit('/').next().unwrap().to_owned());
    }
    let (replaced, _) = stored_customer(&app, "alice").await.unwrap();
    assert_ne!(replaced, gone);
    assert!(app.emulator.customer(&replaced).is_some());
    assert_eq!(customers_of(&app, "alice").len(), 1, "one live customer for alice");
    for session in &sessions {
        assert_eq!(
            app.emulator.session(session).unwrap()["customer"],
            replaced.as_str(),
            "the session Stripe made names the new customer"
        );
    }

    // And the user is not sent back to the deleted one from their old order.
    let (status, body) = app.try_checkout("alice", "credits_100").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(stored_customer(&app, "alice").await.unwrap().0, replaced);
}
