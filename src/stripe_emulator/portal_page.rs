//! The customer portal page at a portal session's `url`, standing in for billing.stripe.com. It
//! lists the customer's subscriptions, each with what can be done to it now, and the card on file;
//! every action goes through `portal` (which changes the objects and sends the events) and comes
//! back here. Each subscription is a list of sections: its summary, the plans it can switch to,
//! and cancelling or resuming.

use axum::{
    Form, Router,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::Value;

use super::{
    StripeEmulator,
    checkout_page::{escape, format_amount, page_layout},
    portal::{CardRefused, PlanSwitch, PortalAction, is_live},
};

pub fn router(emulator: StripeEmulator) -> Router {
    Router::new()
        .route("/p/session/{id}", get(show_page))
        .route(
            "/p/session/{id}/subscriptions/{subscription}",
            post(change_subscription),
        )
        .route("/p/session/{id}/subscriptions/{subscription}/plan", post(switch_plan))
        .route("/p/session/{id}/payment_method", post(update_card))
        .with_state(emulator)
}

#[derive(Deserialize)]
pub struct Notice {
    #[serde(default)]
    done: String,
}

#[derive(Deserialize)]
pub struct ActionForm {
    action: String,
}

#[derive(Deserialize)]
pub struct PlanForm {
    #[serde(default)]
    price: String,
}

#[derive(Deserialize)]
pub struct CardForm {
    #[serde(default)]
    card_number: String,
}

async fn show_page(
    State(emulator): State<StripeEmulator>,
    Path(id): Path<String>,
    Query(notice): Query<Notice>,
) -> Response {
    // Only fixed texts are shown, never what the query said.
    let notice = match notice.done.as_str() {
        "cancel_now" => Some("Your subscription has been canceled."),
        "cancel_at_period_end" => Some("Your subscription will end at the end of the current period."),
        "resume" => Some("Your subscription will continue."),
        "card" => Some("Your card has been updated."),
        "upgraded" => Some("Your plan has been changed; the difference for this period was charged."),
        "downgrade_scheduled" => Some("Your plan will change at the end of the current period."),
        _ => None,
    };
    page(&emulator, &id, notice.map(Message::Notice))
}

async fn change_subscription(
    State(emulator): State<StripeEmulator>,
    Path((id, subscription)): Path<(String, String)>,
    Form(form): Form<ActionForm>,
) -> Response {
    let Some(action) = PortalAction::parse(&form.action) else {
        return page(
            &emulator,
            &id,
            Some(Message::Error("Choose what to do with the subscription.")),
        );
    };
    match emulator.portal_change_subscription(&id, &subscription, action) {
        Some(_) => back_to_page(&emulator, &id, &form.action),
        None => page(
            &emulator,
            &id,
            Some(Message::Error("That subscription cannot be changed that way now.")),
        ),
    }
}

async fn switch_plan(
    State(emulator): State<StripeEmulator>,
    Path((id, subscription)): Path<(String, String)>,
    Form(form): Form<PlanForm>,
) -> Response {
    match emulator.portal_switch_plan(&id, &subscription, &form.price) {
        Some(PlanSwitch::Upgraded) => back_to_page(&emulator, &id, "upgraded"),
        Some(PlanSwitch::DowngradeScheduled) => back_to_page(&emulator, &id, "downgrade_scheduled"),
        None => page(
            &emulator,
            &id,
            Some(Message::Error("That plan cannot be chosen for this subscription now.")),
        ),
    }
}

async fn update_card(
    State(emulator): State<StripeEmulator>,
    Path(id): Path<String>,
    Form(form): Form<CardForm>,
) -> Response {
    match emulator.portal_update_card(&id, &form.card_number) {
        Ok(_) => back_to_page(&emulator, &id, "card"),
        Err(CardRefused::Declined) => page(&emulator, &id, Some(Message::Error("Your card was declined."))),
        Err(CardRefused::IncorrectNumber) => page(
            &emulator,
            &id,
            Some(Message::Error(
                "Your card number is incorrect. Use a test card such as 4242 4242 4242 4242.",
            )),
        ),
    }
}

/// After a change, the page is loaded afresh (a reload does not repeat the change).
fn back_to_page(emulator: &StripeEmulator, id: &str, done: &str) -> Response {
    Redirect::to(&format!("{}/p/session/{id}?done={done}", emulator.public_base)).into_response()
}

enum Message {
    Notice(&'static str),
    Error(&'static str),
}

fn page(emulator: &StripeEmulator, id: &str, message: Option<Message>) -> Response {
    let Some(session) = emulator.portal_session(id) else {
        let body = r#"<p class="message" id="message">This billing portal link is not valid.</p>"#;
        return (StatusCode::NOT_FOUND, Html(page_layout("Billing", body))).into_response();
    };
    let customer = session["customer"].as_str().unwrap_or_default();
    let message = match message {
        Some(Message::Notice(text)) => format!(r#"<p class="notice" role="status" id="notice">{}</p>"#, escape(text)),
        Some(Message::Error(text)) => format!(r#"<p class="error" role="alert" id="error">{}</p>"#, escape(text)),
        None => String::new(),
    };
    // Forms post to absolute URLs: an error is shown at the URL the form posted to.
    let page_url = format!("{}/p/session/{id}", emulator.public_base);
    let subscriptions = emulator.subscriptions_of(customer);
    let cards: String = match subscriptions.is_empty() {
        true => r#"<p class="hint" id="no-subscriptions">You have no subscriptions.</p>"#.to_owned(),
        false => subscriptions
            .iter()
            .map(|subscription| subscription_card(emulator, &page_url, subscription))
            .collect(),
    };
    let return_link = match session["return_url"].as_str() {
        Some(url) => format!(
            r#"<a class="back" href="{}" id="return-link">&larr; Return to the app</a>"#,
            escape(url)
        ),
        None => String::new(),
    };
    let body = format!(
        r#"{PORTAL_STYLE}<h1>Manage billing</h1>
{message}
<section id="subscriptions"><h2>Subscriptions</h2>{cards}</section>
{payment_method}
{return_link}"#,
        payment_method = payment_method_section(emulator, &page_url, customer),
    );
    Html(page_layout("Billing", &body)).into_response()
}

const PORTAL_STYLE: &str = "<style>h1{font-size:22px}h2{font-size:16px;color:#697386}\
.subscription{border:1px solid #e3e8ee;border-radius:6px;padding:12px;margin-bottom:12px}\
.status{font-size:12px;background:#e3e8ee;border-radius:4px;padding:2px 6px}\
.subscription form{margin-top:8px}.secondary{background:#fff;color:#635bff;border:1px solid #635bff}\
.notice{color:#0e6245}</style>";

/// One subscription, as the sections that apply to it.
fn subscription_card(emulator: &StripeEmulator, page_url: &str, subscription: &Value) -> String {
    let sections = [
        summary_section(emulator, subscription),
        plan_section(emulator, page_url, subscription),
        cancellation_section(page_url, subscription),
    ];
    let id = subscription["id"].as_str().unwrap_or_default();
    format!(
        r#"<div class="subscription" id="subscription-{}">{}</div>"#,
        escape(id),
        sections.concat()
    )
}

fn summary_section(emulator: &StripeEmulator, subscription: &Value) -> String {
    let item = &subscription["items"]["data"][0];
    let price = &item["price"];
    let amount = format_amount(
        price["unit_amount"].as_i64().unwrap_or_default() * item["quantity"].as_i64().unwrap_or(1),
        price["currency"].as_str().unwrap_or("usd"),
    );
    let interval = price["recurring"]["interval"].as_str().unwrap_or("month");
    let period_end = date(&item["current_period_end"]);
    let status = subscription["status"].as_str().unwrap_or_default();
    let standing = match (is_live(subscription), subscription["cancel_at_period_end"] == true) {
        (false, _) => "Canceled".to_owned(),
        (true, true) => format!("Cancels on {period_end}"),
        (true, false) if status == "trialing" => format!("Trial ends on {period_end}"),
        (true, false) => format!("Renews on {period_end}"),
    };
    let title = emulator
        .subscription_title(subscription["id"].as_str().unwrap_or_default())
        .unwrap_or_else(|| "Subscription".to_owned());
    format!(
        r#"<div class="title">{title}</div><div><strong>{amount}</strong> per {interval} <span class="status" id="status">{status}</span></div>
<div class="hint" id="standing">{standing}</div>"#,
        title = escape(&title),
        status = escape(status),
    )
}

/// Switch to another plan: the other Prices on offer, each a button; a downgrade already scheduled
/// is said instead.
fn plan_section(emulator: &StripeEmulator, page_url: &str, subscription: &Value) -> String {
    if !is_live(subscription) {
        return String::new();
    }
    if !subscription["schedule"].is_null() {
        return r#"<p class="hint" id="plan-scheduled">A plan change is scheduled for the end of the period.</p>"#
            .to_owned();
    }
    let offers = emulator.plan_offers(subscription);
    if offers.is_empty() {
        return String::new();
    }
    let id = escape(subscription["id"].as_str().unwrap_or_default());
    let currency = subscription["items"]["data"][0]["price"]["currency"]
        .as_str()
        .unwrap_or("usd");
    let buttons: String = offers
        .iter()
        .map(|offer| {
            format!(
                r#"<form method="post" action="{page}/subscriptions/{id}/plan"><input type="hidden" name="price" value="{price}"><button type="submit" class="secondary" id="switch-{price}">Switch to {name} ({amount})</button></form>"#,
                page = escape(page_url),
                price = escape(&offer.price_id),
                name = escape(&offer.product_name),
                amount = format_amount(offer.unit_amount, currency),
            )
        })
        .collect();
    format!(r#"<div class="plans" id="plans-{id}"><div class="hint">Change plan</div>{buttons}</div>"#)
}

/// Cancel at the period end or now, or resume one set to end; nothing for one that has ended.
fn cancellation_section(page_url: &str, subscription: &Value) -> String {
    if !is_live(subscription) {
        return String::new();
    }
    let id = escape(subscription["id"].as_str().unwrap_or_default());
    let button = |action: &str, label: &str, class: &str| {
        format!(
            r#"<form method="post" action="{page}/subscriptions/{id}"><input type="hidden" name="action" value="{action}"><button type="submit" class="{class}" id="{action}-{id}">{label}</button></form>"#,
            page = escape(page_url),
        )
    };
    match subscription["cancel_at_period_end"] == true {
        true => [
            button("resume", "Don't cancel", ""),
            button("cancel_now", "Cancel now", "secondary"),
        ]
        .concat(),
        false => [
            button("cancel_at_period_end", "Cancel at the end of the period", ""),
            button("cancel_now", "Cancel now", "secondary"),
        ]
        .concat(),
    }
}

fn payment_method_section(emulator: &StripeEmulator, page_url: &str, customer: &str) -> String {
    let card = emulator.default_card(customer);
    let current = match &card {
        Some(card) => format!(
            "{} ending in {}",
            escape(card["card"]["brand"].as_str().unwrap_or("card")),
            escape(card["card"]["last4"].as_str().unwrap_or("????"))
        ),
        None => "No card on file.".to_owned(),
    };
    format!(
        r#"<section id="payment-method"><h2>Payment method</h2><p id="current-card">{current}</p>
<form method="post" action="{page}/payment_method" id="card-form">
  <input name="card_number" id="card-number" inputmode="numeric" autocomplete="off" placeholder="4242 4242 4242 4242" aria-label="Card number">
  <button type="submit" id="update-card">Update card</button>
</form>
<p class="hint">Test mode: 4242 4242 4242 4242 succeeds, 4000 0000 0000 0002 is declined. A past-due invoice is paid with the new card.</p></section>"#,
        page = escape(page_url),
    )
}

/// A timestamp as the day it falls on (UTC).
fn date(timestamp: &Value) -> String {
    timestamp
        .as_i64()
        .and_then(|at| chrono::DateTime::from_timestamp(at, 0))
        .map_or_else(|| "an unknown date".to_owned(), |at| at.format("%Y-%m-%d").to_string())
}

impl StripeEmulator {
    /// What the checkout that started the subscription sold, as its page showed it.
    fn subscription_title(&self, subscription_id: &str) -> Option<String> {
        let state = self.lock();
        let (session_id, _) = state
            .sessions
            .iter()
            .find(|(_, session)| session["subscription"] == subscription_id)?;
        state.requests_by_session.get(session_id).map(|request| request.title())
    }

    /// The customer's default card, as the portal set it.
    fn default_card(&self, customer: &str) -> Option<Value> {
        let state = self.lock();
        let id = state.customers.by_id.get(customer)?["invoice_settings"]["default_payment_method"]
            .as_str()?
            .to_owned();
        state.customers.payment_methods.get(&id).cloned()
    }
}
