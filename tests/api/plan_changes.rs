//! Plan changes: a subscription's item moving to another price (through `POST /subscription/change`,
//! the emulator's portal function, or a downgrade scheduled for the period end) moves what the user
//! holds to the new plan once Stripe's event says so, with the credits rule of
//! `lifecycle::plan_changes`; and the emulator's `POST /v1/subscriptions/{id}` is as strict as Stripe.

use entitle::{
    config::StripeBackend,
    stripe_emulator::{BookPrice, Proration},
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{Options, TestApp, error_code, token_for};

const DAY: i64 = 24 * 60 * 60;

/// Two subscription plans with real Prices (as the billing portal switches between), beside the
/// inline-priced ones of plans.toml.
const BOOK_CATALOG: &str = r#"
[plans.basic_monthly]
name = "Basic, monthly"
kind = "subscription"
amount = 1000
currency = "usd"
interval = "month"
entitlement = "basic"
credits_per_period = 100
stripe_price = "price_basic_monthly"

[plans.team_monthly]
name = "Team, monthly"
kind = "subscription"
amount = 4900
currency = "usd"
interval = "month"
entitlement = "team"
credits_per_period = 1000
stripe_price = "price_team_monthly"
"#;

impl TestApp {
    async fn change_plan(&self, user: &str, plan_id: &str) -> (StatusCode, Value) {
        self.post_json(
            "/subscription/change",
            Some(&token_for(user)),
            &json!({ "planId": plan_id }),
        )
        .await
    }

    /// Every event the emulator recorded since `from` events were on file, delivered in order.
    async fn deliver_since(&self, from: usize) -> Vec<Value> {
        let events = self.emulator.events()[from..].to_vec();
        self.deliver_all(&events).await;
        events
    }

    /// The user's entitlements as (key, status, active).
    async fn keys(&self, user: &str) -> Vec<(String, String, bool)> {
        let holdings = self.holdings(user).await;
        holdings["entitlements"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["key"].as_str().unwrap().to_owned(),
                    e["status"].as_str().unwrap().to_owned(),
                    e["active"].as_bool().unwrap(),
                )
            })
            .collect()
    }

    fn advance_clock_by(&self, seconds: i64) -> Vec<Value> {
        self.emulator.advance_clock(seconds).expect("a valid advance").1
    }
}

async fn spawn_with_book_prices() -> TestApp {
    let path = std::env::temp_dir().join(format!("entitle-plan-changes-{}.toml", Uuid::new_v4().simple()));
    std::fs::write(&path, BOOK_CATALOG).unwrap();
    let app = TestApp::spawn_with(Options {
        plans_file: Some(path),
        ..Options::default()
    })
    .await;
    for (id, amount, name) in [
        ("price_basic_monthly", 1000, "Basic, monthly"),
        ("price_team_monthly", 4900, "Team, monthly"),
    ] {
        app.emulator.add_price(BookPrice {
            id: id.into(),
            unit_amount: amount,
            currency: "usd".into(),
            interval: Some("month".into()),
            product_name: name.into(),
        });
    }
    app
}

fn key(name: &str, status: &str, active: bool) -> (String, String, bool) {
    (name.to_owned(), status.to_owned(), active)
}

#[tokio::test]
async fn given_a_pro_subscriber_when_they_upgrade_through_the_route_then_team_replaces_pro_once_stripe_says_so() {
    let app = TestApp::spawn().await;
    let purchase = app.fulfilled_purchase("alice", "pro_monthly").await;
    let before = app.emulator.events().len();

    let (status, body) = app.change_plan("alice", "team_monthly").await;

    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["planId"], "team_monthly");
    assert_eq!(body["subscriptionId"], purchase.subscription_id());
    assert_eq!(body["status"], "active");
    assert!(body["currentPeriodEnd"].is_string(), "{body}");
    // Nothing changes here until Stripe's event arrives.
    assert_eq!(app.keys("alice").await, [key("pro", "active", true)]);

    let events = app.deliver_since(before).await;
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["customer.subscription.updated", "invoice.paid"]);
    assert!(
        events[0]["data"]["previous_attributes"]["items"].is_object(),
        "{}",
        events[0]
    );
    assert_eq!(events[1]["data"]["object"]["billing_reason"], "subscription_update");
    assert_eq!(
        app.keys("alice").await,
        [key("pro", "revoked", false), key("team", "active", true)]
    );
    // The new price was made inline under the plan's own Product, which names the plan.
    let subscription = app.emulator.subscription(&purchase.subscription_id()).unwrap();
    assert_eq!(subscription["items"]["data"][0]["price"]["unit_amount"], 4900);
    assert_eq!(
        subscription["items"]["data"][0]["price"]["product"],
        "entitle_plan_team_monthly"
    );
    let history = app.entitlement_history(purchase.order_id).await;
    assert!(history.iter().any(|(change, _)| change == "revoked"), "{history:?}");
}

#[tokio::test]
async fn given_an_upgrade_mid_period_then_the_proration_tops_credits_up_pro_rata_and_the_renewal_grants_the_new_plan() {
    let app = spawn_with_book_prices().await;
    let purchase = app.fulfilled_purchase("alice", "basic_monthly").await;
    assert_eq!(app.period_grants(purchase.order_id).await, [100]);
    let advanced = app.advance_clock_by(10 * DAY);
    assert!(advanced.is_empty(), "nothing falls due a third into the period");
    let before = app.emulator.events().len();

    let (status, body) = app.change_plan("alice", "team_monthly").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let events = app.deliver_since(before).await;

    let invoice = &events[1]["data"]["object"];
    assert_eq!(invoice["billing_reason"], "subscription_update");
    let subscription = app.emulator.subscription(&purchase.subscription_id()).unwrap();
    let item = &subscription["items"]["data"][0];
    let whole = item["current_period_end"].as_i64().unwrap() - item["current_period_start"].as_i64().unwrap();
    let line = &invoice["lines"]["data"][1]["period"];
    let left = line["end"].as_i64().unwrap() - line["start"].as_i64().unwrap();
    // The rest of the period at the new rate, less what the period's own invoice granted.
    let top_up = (1000 - 100) * left / whole;
    assert!((590..=600).contains(&top_up), "two thirds of 900: {top_up}");
    assert_eq!(app.period_grants(purchase.order_id).await, [100, top_up]);
    // Delivered again, the proration grants nothing more.
    app.deliver_all(&events).await;
    assert_eq!(app.period_grants(purchase.order_id).await, [100, top_up]);

    let renewal = app.advance_clock_by(21 * DAY);
    app.deliver_all(&renewal).await;
    assert_eq!(renewal[0]["data"]["object"]["amount_paid"], 4900);
    assert_eq!(app.period_grants(purchase.order_id).await, [100, top_up, 1000]);
    assert_eq!(app.credits("alice").await, 100 + top_up + 1000);
}

#[tokio::test]
async fn given_a_downgrade_through_the_portal_then_no_credits_are_taken_and_the_renewal_grants_the_lower_plan() {
    let app = spawn_with_book_prices().await;
    let purchase = app.fulfilled_purchase("alice", "team_monthly").await;
    let before = app.emulator.events().len();

    let changed = app
        .emulator
        .change_price(
            &purchase.subscription_id(),
            "price_basic_monthly",
            Proration::CreateProrations,
        )
        .unwrap();
    assert_eq!(changed["items"]["data"][0]["price"]["id"], "price_basic_monthly");
    let events = app.deliver_since(before).await;
    assert_eq!(events.len(), 1, "create_prorations invoices nothing now");

    assert_eq!(
        app.keys("alice").await,
        [key("basic", "active", true), key("team", "revoked", false)]
    );
    assert_eq!(app.period_grants(purchase.order_id).await, [1000]);

    let renewal = app.advance_clock_by(31 * DAY);
    app.deliver_all(&renewal).await;
    let paid = renewal[0]["data"]["object"]["amount_paid"].as_i64().unwrap();
    assert!(paid < 1000, "the unused Team time is credited on the renewal: {paid}");
    assert_eq!(app.period_grants(purchase.order_id).await, [1000, 100]);
}

#[tokio::test]
async fn given_a_downgrade_scheduled_for_the_period_end_then_the_plan_changes_only_when_the_period_ends() {
    let app = spawn_with_book_prices().await;
    let purchase = app.fulfilled_purchase("alice", "team_monthly").await;
    let before = app.emulator.events().len();

    let scheduled = app
        .emulator
        .schedule_price_change(&purchase.subscription_id(), "price_basic_monthly")
        .unwrap();
    assert!(scheduled["schedule"].is_string(), "{scheduled}");
    app.deliver_since(before).await;
    assert_eq!(app.keys("alice").await, [key("team", "active", true)], "not yet");

    let renewal = app.advance_clock_by(31 * DAY);
    let types: Vec<&str> = renewal.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "customer.subscription.updated",
            "invoice.paid",
            "customer.subscription.updated"
        ]
    );
    app.deliver_all(&renewal).await;

    assert_eq!(
        renewal[1]["data"]["object"]["amount_paid"], 1000,
        "billed at the new price"
    );
    assert!(renewal[2]["data"]["object"]["schedule"].is_null());
    assert_eq!(
        app.keys("alice").await,
        [key("basic", "active", true), key("team", "revoked", false)]
    );
    assert_eq!(app.period_grants(purchase.order_id).await, [1000, 100]);
}

#[tokio::test]
async fn given_the_old_prices_update_delivered_after_the_new_one_then_the_plan_stays_the_new_one() {
    let app = TestApp::spawn().await;
    let purchase = app.fulfilled_purchase("alice", "pro_monthly").await;
    // An update showing the old price, sent before the change…
    let old = app
        .emulator
        .update_subscription(&purchase.subscription_id(), "active", false)
        .unwrap();
    assert_eq!(old["data"]["object"]["items"]["data"][0]["price"]["unit_amount"], 2000);
    let before = app.emulator.events().len();
    let (status, body) = app.change_plan("alice", "team_monthly").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    app.deliver_since(before).await;

    // …arrives last.
    app.deliver_all(&[old]).await;

    assert_eq!(
        app.keys("alice").await,
        [key("pro", "revoked", false), key("team", "active", true)]
    );
    let (status, body) = app.change_plan("alice", "team_monthly").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
}

#[tokio::test]
async fn given_bad_plan_changes_then_each_is_refused_and_stripe_is_not_asked() {
    let app = TestApp::spawn().await;
    let (status, body) = app.change_plan("alice", "team_monthly").await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, "no_subscription"));

    app.fulfilled_purchase("alice", "pro_monthly").await;
    for (plan_id, expected, code) in [
        ("no_such_plan", StatusCode::BAD_REQUEST, "unknown_plan"),
        ("credits_100", StatusCode::BAD_REQUEST, "not_a_subscription_plan"),
        ("pro_monthly", StatusCode::CONFLICT, "same_plan"),
    ] {
        let (status, body) = app.change_plan("alice", plan_id).await;
        assert_eq!((status, error_code(&body)), (expected, code), "{plan_id}: {body}");
    }
    let (status, body) = app
        .post_json(
            "/subscription/change",
            Some(&token_for("alice")),
            &json!({ "plan": "x" }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _) = app
        .post_json("/subscription/change", None, &json!({ "planId": "team_monthly" }))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let updates = app
        .emulator
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.starts_with("/v1/subscriptions/"))
        .count();
    assert_eq!(updates, 0, "no refused change reached Stripe");
    assert_eq!(app.keys("alice").await, [key("pro", "active", true)]);
}

#[tokio::test]
async fn given_stripe_failing_then_a_plan_change_answers_502_and_nothing_changes() {
    let app = TestApp::spawn().await;
    app.fulfilled_purchase("alice", "pro_monthly").await;
    app.emulator.fail_requests(
        "/v1/subscriptions/",
        Some(entitle::stripe_emulator::InjectedFailure::Stripe(500)),
    );

    let (status, body) = app.change_plan("alice", "team_monthly").await;

    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(!body.to_string().contains("emulator"), "no internals: {body}");
    assert_eq!(app.keys("alice").await, [key("pro", "active", true)]);
}

#[tokio::test]
async fn the_emulators_subscription_update_refuses_what_stripe_refuses() {
    let app = TestApp::spawn().await;
    let purchase = app.fulfilled_purchase("alice", "pro_monthly").await;
    let subscription_id = purchase.subscription_id();
    let item_id = app.emulator.subscription(&subscription_id).unwrap()["items"]["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let StripeBackend::Api { api_base, .. } = &app.config.stripe else {
        panic!("a separate emulator");
    };
    let post = |path: String, form: Vec<(&'static str, String)>| {
        let request = app
            .http
            .post(format!("{api_base}{path}"))
            .bearer_auth("sk_test_emulated")
            .form(&form);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let path = format!("/v1/subscriptions/{subscription_id}");
    for (form, param, code) in [
        (vec![("bogus", "1".to_owned())], "bogus", Some("parameter_unknown")),
        (
            vec![("items[0][id]", item_id.clone()), ("items[0][colour]", "red".into())],
            "items[0][colour]",
            Some("parameter_unknown"),
        ),
        (
            vec![("proration_behavior", "sometimes".into())],
            "proration_behavior",
            Some("parameter_invalid_string"),
        ),
        (
            vec![
                ("items[0][id]", item_id.clone()),
                ("items[0][price]", "price_nope".into()),
            ],
            "items[0][price]",
            Some("resource_missing"),
        ),
        (
            vec![
                ("items[0][id]", "si_nope".into()),
                ("items[0][price]", "price_nope".into()),
            ],
            "items[0][id]",
            Some("resource_missing"),
        ),
        (
            vec![("cancel_at_period_end", "maybe".into())],
            "cancel_at_period_end",
            None,
        ),
    ] {
        let (status, body) = post(path.clone(), form.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{form:?}: {body}");
        assert_eq!(body["error"]["param"], param, "{form:?}: {body}");
        assert_eq!(body["error"]["code"].as_str(), code, "{form:?}: {body}");
    }
    let (status, body) = post("/v1/subscriptions/sub_nope".into(), vec![("metadata[a]", "b".into())]).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("resource_missing"))
    );
    let unchanged = app.emulator.subscription(&subscription_id).unwrap();
    assert_eq!(unchanged["items"]["data"][0]["price"]["unit_amount"], 2000);

    // What Stripe takes: metadata and cancel_at_period_end, answered with the subscription.
    let (status, body) = post(
        path.clone(),
        vec![
            ("metadata[note]", "vip".into()),
            ("cancel_at_period_end", "true".into()),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["metadata"]["note"], "vip");
    assert_eq!(body["metadata"]["plan_id"], "pro_monthly", "other keys stay");
    assert_eq!(body["cancel_at_period_end"], true);
    let last = app.emulator.events().pop().unwrap();
    assert_eq!(last["type"], "customer.subscription.updated");
    assert_eq!(last["data"]["previous_attributes"]["cancel_at_period_end"], false);
}

#[tokio::test]
async fn given_a_price_no_plan_names_then_the_subscription_keeps_the_plan_it_was_on() {
    let app = TestApp::spawn().await;
    let purchase = app.fulfilled_purchase("alice", "pro_monthly").await;
    app.emulator.add_price(BookPrice {
        id: "price_made_in_the_dashboard".into(),
        unit_amount: 2500,
        currency: "usd".into(),
        interval: Some("month".into()),
        product_name: "Something else".into(),
    });
    let before = app.emulator.events().len();

    app.emulator
        .change_price(
            &purchase.subscription_id(),
            "price_made_in_the_dashboard",
            Proration::None,
        )
        .unwrap();
    app.deliver_since(before).await;

    // Checkout's metadata still says pro_monthly, but it is no longer what decides: the plan stays.
    assert_eq!(app.keys("alice").await, [key("pro", "active", true)]);
    let (status, body) = app.change_plan("alice", "pro_monthly").await;
    assert_eq!((status, error_code(&body)), (StatusCode::CONFLICT, "same_plan"));
}

/// Presses a "Switch to …" button of the portal page at `url`, as a browser does (following the
/// redirect back to the page); the page it lands on.
async fn choose_plan(app: &TestApp, url: &str, subscription: &str, price: &str) -> String {
    let pressed = app
        .http
        .post(format!("{url}/subscriptions/{subscription}/plan"))
        .form(&[("price", price)])
        .send()
        .await
        .unwrap();
    pressed.text().await.unwrap()
}

#[tokio::test]
async fn given_the_billing_portal_then_an_upgrade_applies_at_once_and_a_downgrade_at_the_period_end() {
    let app = spawn_with_book_prices().await;
    let purchase = app.fulfilled_purchase("alice", "basic_monthly").await;
    let subscription = purchase.subscription_id();
    let (status, portal) = app
        .post_json("/billing-portal", Some(&token_for("alice")), &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{portal}");
    let url = portal["url"].as_str().unwrap().to_owned();
    let page = app.http.get(&url).send().await.unwrap().text().await.unwrap();
    assert!(page.contains(r#"id="switch-price_team_monthly""#), "{page}");
    assert!(
        !page.contains(r#"id="switch-price_basic_monthly""#),
        "its own price is not offered"
    );

    // A price the portal does not offer changes nothing.
    let before = app.emulator.events().len();
    let refused = choose_plan(&app, &url, &subscription, "price_nobody_sells").await;
    assert!(refused.contains("That plan cannot be chosen"), "{refused}");
    assert_eq!(app.emulator.events().len(), before);

    // Upgrade: at once, the difference invoiced now.
    let upgraded = choose_plan(&app, &url, &subscription, "price_team_monthly").await;
    assert!(upgraded.contains("Your plan has been changed"), "{upgraded}");
    let events = app.deliver_since(before).await;
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["customer.subscription.updated", "invoice.paid"]);
    assert_eq!(events[1]["data"]["object"]["billing_reason"], "subscription_update");
    assert_eq!(
        app.keys("alice").await,
        [key("basic", "revoked", false), key("team", "active", true)]
    );

    // Downgrade: scheduled; Team holds until the period ends, then Basic.
    let before = app.emulator.events().len();
    let scheduled = choose_plan(&app, &url, &subscription, "price_basic_monthly").await;
    assert!(
        scheduled.contains("will change at the end of the current period"),
        "{scheduled}"
    );
    assert!(scheduled.contains(r#"id="plan-scheduled""#), "{scheduled}");
    app.deliver_since(before).await;
    assert_eq!(
        app.keys("alice").await,
        [key("basic", "revoked", false), key("team", "active", true)]
    );
    let renewal = app.advance_clock_by(31 * DAY);
    app.deliver_all(&renewal).await;
    assert_eq!(
        app.keys("alice").await,
        [key("basic", "active", true), key("team", "revoked", false)]
    );
    let now = app.emulator.subscription(&subscription).unwrap();
    assert_eq!(now["items"]["data"][0]["price"]["id"], "price_basic_monthly");
}
