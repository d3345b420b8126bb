//! Trials, promotion codes and Stripe Tax, through the real service and async-stripe against the
//! emulator: what Stripe priced before discounts and tax is held against the catalog, what was
//! actually charged is stored and reported, and a trial grants while Stripe says `trialing`.

use entitle::stripe_emulator::{EMULATED_TAX_PERCENT, PaymentResult};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    app_webhook_helpers::{Receiver, sending_to},
    helpers::{Options, TestApp},
};

/// A catalog of this file's own: a trial plan with period credits, a plan taking promotion codes,
/// and plans without either.
const CATALOG: &str = r#"
[plans.pro_trial]
name = "Pro, monthly, 14 days free"
kind = "subscription"
amount = 2000
currency = "usd"
interval = "month"
entitlement = "pro"
credits_per_period = 500
trial_days = 14

[plans.pro_monthly]
name = "Pro, monthly"
kind = "subscription"
amount = 2000
currency = "usd"
interval = "month"
entitlement = "pro_plain"

[plans.credits_promo]
name = "100 credits, promotion codes welcome"
kind = "one_time"
amount = 500
currency = "usd"
credits = 100
allow_promotion_codes = true

[plans.credits_100]
name = "100 credits"
kind = "one_time"
amount = 500
currency = "usd"
credits = 100
"#;

async fn spawn(automatic_tax: bool) -> TestApp {
    spawn_with(automatic_tax, Options::default()).await
}

async fn spawn_with(automatic_tax: bool, options: Options) -> TestApp {
    let path = std::env::temp_dir().join(format!("entitle-trials-{}.toml", Uuid::new_v4().simple()));
    std::fs::write(&path, CATALOG).unwrap();
    TestApp::spawn_with(Options {
        plans_file: Some(path),
        automatic_tax,
        ..options
    })
    .await
}

/// The parameters the emulator received when the session was created.
fn creation_params(app: &TestApp, session_id: &str) -> std::collections::BTreeMap<String, String> {
    let session = app.emulator.session(session_id).unwrap();
    let order_id = session["client_reference_id"].as_str().unwrap().to_owned();
    app.emulator
        .requests()
        .into_iter()
        .find(|r| {
            r.method == "POST"
                && r.path == "/v1/checkout/sessions"
                && r.params.get("client_reference_id") == Some(&order_id)
        })
        .expect("the session's creation was recorded")
        .params
}

fn amounts(order: &Value) -> (Value, Value, Value, Value) {
    (
        order["status"].clone(),
        order["amountPaid"].clone(),
        order["amountDiscount"].clone(),
        order["amountTax"].clone(),
    )
}

/// Checkout of the trial plan, completed on the page and every event delivered.
async fn trial_started(app: &TestApp, user: &str) -> (Uuid, String, Vec<Value>) {
    let (order_id, session_id) = app.checkout(user, "pro_trial").await;
    let events = app.pay(&session_id, PaymentResult::Card);
    assert_eq!(events[0]["data"]["object"]["payment_status"], "no_payment_required");
    assert_eq!(events[0]["data"]["object"]["amount_total"], 0);
    app.deliver_all(&events).await;
    let subscription_id = events[0]["data"]["object"]["subscription"].as_str().unwrap().to_owned();
    (order_id, subscription_id, events)
}

#[tokio::test]
async fn given_a_trial_plan_when_checkout_completes_without_payment_then_the_order_is_paid_for_0_and_access_is_active_while_trialing()
 {
    let app = spawn(false).await;
    let (order_id, session_id) = app.checkout("alice", "pro_trial").await;
    let sent = creation_params(&app, &session_id);
    assert_eq!(
        sent.get("subscription_data[trial_period_days]").map(String::as_str),
        Some("14")
    );

    let events = app.pay(&session_id, PaymentResult::Card);
    let outcomes = app.deliver_all(&events).await;
    assert_eq!(outcomes[0], "fulfilled", "{outcomes:?}");

    let order = app.order_status("alice", order_id).await;
    assert_eq!(amounts(&order), (json!("paid"), json!(0), json!(0), json!(0)));
    assert_eq!(order["amount"], 2000, "the catalog price stays the order's amount");
    let subscription = app
        .emulator
        .subscription(events[0]["data"]["object"]["subscription"].as_str().unwrap())
        .unwrap();
    assert_eq!(subscription["status"], "trialing");
    let entitlement = app.entitlement("alice").await;
    assert_eq!(
        (entitlement["status"].clone(), entitlement["active"].clone()),
        (json!("active"), json!(true))
    );
    // The trial's $0 first invoice is no paid period: credits start with the first paid one.
    assert_eq!(app.credits("alice").await, 0);
}

#[tokio::test]
async fn given_a_trial_when_it_ends_unpaid_then_access_ends_as_stripes_status_says() {
    let app = spawn(false).await;
    let (_, subscription_id, _) = trial_started(&app, "alice").await;

    // The first real invoice fails: past_due keeps access through the grace, as for any renewal.
    app.deliver_all(&app.emulator.fail_invoice(&subscription_id).unwrap())
        .await;
    let past_due = app.entitlement("alice").await;
    assert_eq!(
        (past_due["status"].clone(), past_due["active"].clone()),
        (json!("past_due"), json!(true))
    );

    // Stripe gives up and cancels the subscription.
    let deleted = app
        .emulator
        .update_subscription(&subscription_id, "canceled", false)
        .unwrap();
    assert_eq!(deleted["type"], "customer.subscription.deleted");
    app.deliver_all(&[deleted]).await;
    let ended = app.entitlement("alice").await;
    assert_eq!(
        (ended["status"].clone(), ended["active"].clone()),
        (json!("revoked"), json!(false))
    );
    assert_eq!(app.credits("alice").await, 0);

    // A trial Stripe marks `unpaid` (the account's "mark unpaid" setting) ends access at once.
    let (_, subscription_id, _) = trial_started(&app, "bob").await;
    let unpaid = app
        .emulator
        .update_subscription(&subscription_id, "unpaid", false)
        .unwrap();
    app.deliver_all(&[unpaid]).await;
    let ended = app.entitlement("bob").await;
    assert_eq!(
        (ended["status"].clone(), ended["active"].clone()),
        (json!("revoked"), json!(false))
    );
}

#[tokio::test]
async fn given_a_trial_when_the_first_real_period_is_paid_then_access_stays_and_its_period_credits_are_granted() {
    let app = spawn(false).await;
    let (order_id, subscription_id, _) = trial_started(&app, "alice").await;
    assert_eq!(app.credits("alice").await, 0);

    let paid = app.emulator.renew_subscription(&subscription_id).unwrap();
    assert_eq!(paid[0]["type"], "invoice.paid");
    assert_eq!(paid[0]["data"]["object"]["amount_paid"], 2000);
    app.deliver_all(&paid).await;

    let entitlement = app.entitlement("alice").await;
    assert_eq!(
        (entitlement["status"].clone(), entitlement["active"].clone()),
        (json!("active"), json!(true))
    );
    assert_eq!(app.credits("alice").await, 500);
    // The order still says what its checkout charged.
    assert_eq!(app.order_status("alice", order_id).await["amountPaid"], 0);
}

#[tokio::test]
async fn given_a_promotion_code_when_the_discounted_payment_completes_then_it_is_granted_and_the_charge_recorded() {
    let app = spawn(false).await;
    let (order_id, session_id) = app.checkout("alice", "credits_promo").await;
    assert_eq!(
        creation_params(&app, &session_id)
            .get("allow_promotion_codes")
            .map(String::as_str),
        Some("true")
    );
    assert!(app.emulator.enter_promotion_code(&session_id, "SAVE20", 20));

    let events = app.pay(&session_id, PaymentResult::Card);
    let session = &events[0]["data"]["object"];
    assert_eq!(
        (session["amount_subtotal"].clone(), session["amount_total"].clone()),
        (json!(500), json!(400))
    );
    assert_eq!(app.deliver_all(&events).await, ["fulfilled"]);

    let order = app.order_status("alice", order_id).await;
    assert_eq!(amounts(&order), (json!("paid"), json!(400), json!(100), json!(0)));
    assert_eq!(app.credits("alice").await, 100);
}

#[tokio::test]
async fn given_a_discounted_taxed_payment_then_the_apps_order_paid_webhook_says_what_was_charged() {
    let receiver = Receiver::start().await;
    let app = spawn_with(true, sending_to(&[receiver.url()])).await;
    let (order_id, session_id) = app.checkout("alice", "credits_promo").await;
    assert!(app.emulator.enter_promotion_code(&session_id, "SAVE20", 20));
    app.deliver_all(&app.pay(&session_id, PaymentResult::Card)).await;

    let received = receiver
        .wait_for("order.paid", |received| {
            received.iter().any(|r| r.event_type() == "order.paid")
        })
        .await;
    let paid = received.iter().find(|r| r.event_type() == "order.paid").unwrap();
    let tax = 400 * EMULATED_TAX_PERCENT / 100;
    assert_eq!(
        paid.data(),
        &json!({
            "orderId": order_id, "userId": "alice", "planId": "credits_promo", "status": "paid",
            "amount": 500, "currency": "usd", "amountPaid": 400 + tax,
        })
    );
}

#[tokio::test]
async fn given_a_plan_without_promotion_codes_then_its_session_takes_none() {
    let app = spawn(false).await;
    let (_, session_id) = app.checkout("alice", "credits_100").await;
    assert_eq!(creation_params(&app, &session_id).get("allow_promotion_codes"), None);
    assert!(!app.emulator.enter_promotion_code(&session_id, "SAVE20", 20));
}

#[tokio::test]
async fn given_automatic_tax_when_the_payment_completes_then_it_is_granted_and_the_tax_is_in_the_amount_paid() {
    let app = spawn(true).await;
    let (order_id, session_id) = app.checkout("alice", "credits_100").await;
    assert_eq!(
        creation_params(&app, &session_id)
            .get("automatic_tax[enabled]")
            .map(String::as_str),
        Some("true")
    );

    let events = app.pay(&session_id, PaymentResult::Card);
    assert_eq!(app.deliver_all(&events).await, ["fulfilled"]);

    let tax = 500 * EMULATED_TAX_PERCENT / 100;
    let order = app.order_status("alice", order_id).await;
    assert_eq!(amounts(&order), (json!("paid"), json!(500 + tax), json!(0), json!(tax)));
    assert_eq!(app.credits("alice").await, 100);

    // With a promotion code too, tax is on what is left after the discount.
    let (order_id, session_id) = app.checkout("bob", "credits_promo").await;
    assert!(app.emulator.enter_promotion_code(&session_id, "HALF", 50));
    app.deliver_all(&app.pay(&session_id, PaymentResult::Card)).await;
    let tax = 250 * EMULATED_TAX_PERCENT / 100;
    let order = app.order_status("bob", order_id).await;
    assert_eq!(
        amounts(&order),
        (json!("paid"), json!(250 + tax), json!(250), json!(tax))
    );
}

/// How a test changes the session Stripe reports.
type Tamper = fn(&mut Value);

#[tokio::test]
async fn given_a_subtotal_other_than_the_catalog_price_then_nothing_is_granted_and_the_order_is_under_review() {
    let app = spawn(false).await;
    let cases: [(&str, Tamper); 3] = [
        // Priced lower before any discount: someone else's price reached Stripe.
        ("a lower subtotal", |session| {
            session["amount_subtotal"] = json!(100);
            session["amount_total"] = json!(100);
        }),
        // The catalog's subtotal, but a total that its discount and tax do not explain.
        ("a total that does not add up", |session| {
            session["amount_total"] = json!(1);
        }),
        // A discount claimed on a subtotal that is still wrong.
        ("a discounted lower subtotal", |session| {
            session["amount_subtotal"] = json!(400);
            session["total_details"]["amount_discount"] = json!(100);
            session["amount_total"] = json!(300);
        }),
    ];
    for (user, (case, change)) in ["u1", "u2", "u3"].into_iter().zip(cases) {
        let (order_id, session_id) = app.checkout(user, "credits_100").await;
        let mut events = app.pay(&session_id, PaymentResult::Card);
        change(&mut events[0]["data"]["object"]);
        assert_eq!(app.deliver_all(&events).await, ["amount_mismatch"], "{case}");
        let order = app.order_status(user, order_id).await;
        assert_eq!(
            amounts(&order),
            (json!("under_review"), Value::Null, Value::Null, Value::Null),
            "{case}"
        );
        assert_eq!(app.credits(user).await, 0, "{case}");
    }
}

#[tokio::test]
async fn given_a_session_completed_without_payment_for_a_plan_without_a_trial_then_nothing_is_granted() {
    let app = spawn(false).await;
    let (order_id, session_id) = app.checkout("alice", "pro_monthly").await;
    let mut events = app.pay(&session_id, PaymentResult::Card);
    let session = &mut events[0]["data"]["object"];
    session["payment_status"] = json!("no_payment_required");
    session["amount_subtotal"] = json!(0);
    session["amount_total"] = json!(0);

    assert_eq!(app.deliver_all(&events[..1]).await, ["amount_mismatch"]);
    assert_eq!(app.order_status("alice", order_id).await["status"], "under_review");
    assert_eq!(app.holdings("alice").await["entitlements"], json!([]));
}
