//! The hosted checkout page at a session's `url`, standing in for checkout.stripe.com. It takes
//! Stripe's test card numbers and a delayed "bank debit", then redirects to the session's
//! `success_url` (with `{CHECKOUT_SESSION_ID}` filled in) exactly as Stripe does; the service
//! learns of the payment only from the webhook.

use std::time::Duration;

use axum::{
    Form, Router,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::Value;

use super::{PaymentResult, StripeEmulator, pricing};

/// How long a bank debit takes to clear in the emulator.
const BANK_DEBIT_CLEARING_TIME: Duration = Duration::from_secs(3);

pub fn router(emulator: StripeEmulator) -> Router {
    Router::new()
        .route("/c/pay/{id}", get(show_page).post(submit_payment))
        .route("/c/pay/{id}/promotion-code", post(submit_promotion_code))
        .with_state(emulator)
}

#[derive(Deserialize)]
pub struct PromotionCodeForm {
    #[serde(default)]
    code: String,
}

#[derive(Deserialize)]
pub struct PageQuery {
    /// Set by the redirect after a code was refused.
    promotion_code: Option<String>,
}

#[derive(Deserialize)]
pub struct PaymentForm {
    method: String,
    #[serde(default)]
    card_number: String,
    #[serde(default)]
    bank_outcome: String,
}

async fn show_page(
    State(emulator): State<StripeEmulator>,
    Path(id): Path<String>,
    Query(query): Query<PageQuery>,
) -> Response {
    let refused = query
        .promotion_code
        .is_some_and(|outcome| outcome == "invalid")
        .then_some("This code is invalid.");
    match emulator.session(&id) {
        Some(session) => page(&emulator, &session, refused),
        None => (
            StatusCode::NOT_FOUND,
            Html(message_page("This checkout link is not valid.")),
        )
            .into_response(),
    }
}

async fn submit_payment(
    State(emulator): State<StripeEmulator>,
    Path(id): Path<String>,
    Form(form): Form<PaymentForm>,
) -> Response {
    let Some(session) = emulator.session(&id) else {
        return (
            StatusCode::NOT_FOUND,
            Html(message_page("This checkout link is not valid.")),
        )
            .into_response();
    };
    if session["status"] != "open" {
        return page(&emulator, &session, None);
    }
    let result = match form.method.as_str() {
        "card" => match form
            .card_number
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
            .as_str()
        {
            "4242424242424242" => PaymentResult::Card,
            "4000000000000002" => return page(&emulator, &session, Some("Your card was declined.")),
            "4000000000009995" => return page(&emulator, &session, Some("Your card has insufficient funds.")),
            _ => {
                return page(
                    &emulator,
                    &session,
                    Some("Your card number is incorrect. Use a test card such as 4242 4242 4242 4242."),
                );
            }
        },
        "bank" if form.bank_outcome == "fails" => PaymentResult::DelayedFails,
        "bank" => PaymentResult::DelayedSucceeds,
        _ => return page(&emulator, &session, Some("Choose a payment method.")),
    };
    emulator.pay_session_later(&id, result, BANK_DEBIT_CLEARING_TIME);
    let success_url = session["success_url"]
        .as_str()
        .unwrap_or("/")
        .replace("{CHECKOUT_SESSION_ID}", &id);
    Redirect::to(&success_url).into_response()
}

/// The buyer applies a promotion code, as on Stripe's page: the session's discount and total
/// change before it is paid. Back to the page either way (a redirect, so its forms post where
/// they should), saying so when the code is not valid.
async fn submit_promotion_code(
    State(emulator): State<StripeEmulator>,
    Path(id): Path<String>,
    Form(form): Form<PromotionCodeForm>,
) -> Response {
    let applied = pricing::promotion_code_value(&form.code)
        .is_some_and(|(code, percent)| emulator.enter_promotion_code(&id, &code, percent));
    // Relative to this form's own URL, `/…/c/pay/{id}/promotion-code`, wherever the page is mounted.
    let back = if applied {
        format!("../{id}")
    } else {
        format!("../{id}?promotion_code=invalid")
    };
    Redirect::to(&back).into_response()
}

fn page(emulator: &StripeEmulator, session: &Value, error: Option<&str>) -> Response {
    let id = session["id"].as_str().unwrap_or_default();
    let cancel_url = session["cancel_url"].as_str().unwrap_or("/");
    match session["status"].as_str() {
        Some("open") => {}
        Some("complete") => return Html(message_page("This checkout session is already paid.")).into_response(),
        _ => return Html(message_page("This checkout session has expired.")).into_response(),
    }
    let title = emulator.title(id).unwrap_or_else(|| "Your purchase".into());
    let amount = format_amount(
        session["amount_total"].as_i64().unwrap_or(0),
        session["currency"].as_str().unwrap_or("usd"),
    );
    let per_month = if session["mode"] == "subscription" {
        " per period"
    } else {
        ""
    };
    let error = error
        .map(|e| format!(r#"<p class="error" role="alert" id="card-error">{}</p>"#, escape(e)))
        .unwrap_or_default();
    let breakdown = breakdown(session);
    let promotion = promotion_form(session);
    let body = format!(
        r#"<a class="back" href="{cancel}" id="cancel-link">&larr; Cancel and go back</a>
<div class="summary"><div class="title" id="product">{title}</div><div class="amount" id="amount">{amount}{per_month}</div>{breakdown}</div>
{promotion}
<form method="post" id="payment-form">
  <fieldset>
    <label><input type="radio" name="method" value="card" checked> Card</label>
    <input name="card_number" id="card-number" inputmode="numeric" autocomplete="off" placeholder="4242 4242 4242 4242" aria-label="Card number">
    <div class="row"><input placeholder="MM / YY" aria-label="Expiry" value="12 / 34"><input placeholder="CVC" aria-label="CVC" value="123"></div>
  </fieldset>
  <fieldset>
    <label><input type="radio" name="method" value="bank" id="bank-debit"> Bank debit (clears in a few seconds)</label>
    <select name="bank_outcome" id="bank-outcome" aria-label="Test outcome"><option value="succeeds">Test account: payment succeeds</option><option value="fails">Test account: payment fails</option></select>
  </fieldset>
  {error}
  <button type="submit" id="pay-button">Pay {amount}</button>
</form>
<p class="hint">Test mode: 4242 4242 4242 4242 succeeds, 4000 0000 0000 0002 is declined.</p>"#,
        cancel = escape(cancel_url),
        title = escape(&title),
    );
    Html(layout(&body)).into_response()
}

/// Subtotal, discount and tax lines, when the total is not just the subtotal.
fn breakdown(session: &Value) -> String {
    let currency = session["currency"].as_str().unwrap_or("usd");
    let details = &session["total_details"];
    let discount = details["amount_discount"].as_i64().unwrap_or(0);
    let tax = details["amount_tax"].as_i64().unwrap_or(0);
    if discount == 0 && tax == 0 {
        return String::new();
    }
    let mut lines = format!(
        r#"<div class="line" id="subtotal">Subtotal {}</div>"#,
        format_amount(session["amount_subtotal"].as_i64().unwrap_or(0), currency)
    );
    if discount > 0 {
        let code = session["discounts"][0]["promotion_code"]
            .as_str()
            .and_then(|promo| promo.strip_prefix("promo_"))
            .unwrap_or_default();
        lines.push_str(&format!(
            r#"<div class="line" id="discount">{} &minus;{}</div>"#,
            escape(code),
            format_amount(discount, currency)
        ));
    }
    if tax > 0 {
        lines.push_str(&format!(
            r#"<div class="line" id="tax">Tax {}</div>"#,
            format_amount(tax, currency)
        ));
    }
    lines
}

/// The promotion code field, on a session created with `allow_promotion_codes` that has none yet.
fn promotion_form(session: &Value) -> String {
    if session["allow_promotion_codes"] != true || session["discounts"].as_array().is_some_and(|d| !d.is_empty()) {
        return String::new();
    }
    let id = session["id"].as_str().unwrap_or_default();
    format!(
        r#"<form method="post" action="{id}/promotion-code" id="promotion-form" class="row">
  <input name="code" id="promotion-code" autocomplete="off" placeholder="Add promotion code" aria-label="Promotion code">
  <button type="submit" id="apply-code" class="small">Apply</button>
</form>
<p class="hint">Test mode: a code is worth the percentage it ends with (SAVE20 takes 20 % off).</p>"#,
        id = escape(id)
    )
}

fn message_page(message: &str) -> String {
    layout(&format!(r#"<p class="message" id="message">{}</p>"#, escape(message)))
}

fn layout(body: &str) -> String {
    page_layout("Checkout", body)
}

/// The emulator's hosted pages share one look (the portal's too).
pub(super) fn page_layout(title: &str, body: &str) -> String {
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} (Stripe emulator)</title>
<style>
body{{font-family:system-ui,sans-serif;background:#f6f9fc;color:#1a1f36;margin:0}}
main{{max-width:420px;margin:40px auto;background:#fff;border-radius:8px;box-shadow:0 2px 8px #0002;padding:28px}}
.badge{{background:#ffde92;color:#6a4b00;font-size:12px;padding:2px 8px;border-radius:4px}}
.summary{{margin:18px 0}} .title{{color:#697386}} .amount{{font-size:30px;font-weight:600}}
fieldset{{border:1px solid #e3e8ee;border-radius:6px;margin:0 0 12px;padding:12px}}
input:not([type=radio]),select{{width:100%;box-sizing:border-box;padding:10px;margin-top:8px;border:1px solid #e3e8ee;border-radius:4px;font-size:16px}}
.row{{display:flex;gap:8px}} button{{width:100%;padding:12px;background:#635bff;color:#fff;border:0;border-radius:6px;font-size:16px;cursor:pointer}}
.line{{color:#697386;font-size:14px}} button.small{{width:auto;padding:8px 14px;margin-top:8px}} #promotion-form{{margin-bottom:4px}}
.error{{color:#df1b41}} .hint{{color:#697386;font-size:13px}} .back{{display:block;margin-top:14px;color:#635bff;text-decoration:none}}
</style></head><body><main><span class="badge">TEST MODE · Stripe emulator</span>
{body}
</main></body></html>"#
    )
}

/// Formats minor units for display, e.g. 500 usd as "$5.00"; zero-decimal currencies have no cents.
pub(super) fn format_amount(minor: i64, currency: &str) -> String {
    const ZERO_DECIMAL: [&str; 16] = [
        "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf",
    ];
    let code = currency.to_ascii_uppercase();
    let symbol = match currency {
        "usd" => "$",
        "eur" => "€",
        "gbp" => "£",
        _ => "",
    };
    let number = if ZERO_DECIMAL.contains(&currency) {
        minor.to_string()
    } else {
        format!("{}.{:02}", minor / 100, (minor % 100).abs())
    };
    if symbol.is_empty() {
        format!("{number} {code}")
    } else {
        format!("{symbol}{number}")
    }
}

pub(super) fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_shown_in_major_units() {
        assert_eq!(format_amount(500, "usd"), "$5.00");
        assert_eq!(format_amount(2005, "eur"), "€20.05");
        assert_eq!(format_amount(500, "jpy"), "500 JPY");
    }
}
