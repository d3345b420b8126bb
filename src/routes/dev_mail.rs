//! `GET /dev/mail`: the dev mailbox, where emulator mode keeps the order confirmations it would
//! have sent, so a newcomer sees the email a buyer gets. Mounted only in emulator mode, beside
//! `/dev/token`. `/dev/mail.json`, or `Accept: application/json`, answers the same as JSON for
//! tests and scripts.

use std::fmt::Write;

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, HeaderValue, header},
    response::{Html, IntoResponse, Response},
};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{
    mail::{DEV_MAILBOX_CAPACITY, KeptEmail, Mailer, escape_html},
    openapi::Unavailable,
    state::AppState,
};

/// The page runs no script and loads nothing; each email's HTML is shown in a sandboxed frame
/// that inherits this, so an email cannot run script or fetch anything either.
const PAGE_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'";

#[derive(Serialize, ToSchema)]
pub struct DevMailResponse {
    /// `dev_mailbox`, or `smtp` when `SMTP_URL` is set and nothing is kept here.
    delivery: &'static str,
    /// Newest first.
    emails: Vec<KeptEmail>,
}

pub async fn dev_mail(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let wants_json = headers
        .get(header::ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .is_some_and(|accept| accept.contains("application/json"));
    let mailbox = mailbox(state.mailer.as_ref());
    if wants_json {
        return Json(mailbox).into_response();
    }
    let mut page = Html(page(&mailbox)).into_response();
    page.headers_mut()
        .insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(PAGE_POLICY));
    page
}

#[utoipa::path(
    get,
    path = "/dev/mail.json",
    tag = "dev",
    responses(
        (status = 200, description = "The emails kept instead of sent (emulator mode only).", body = DevMailResponse),
        (status = 503, response = Unavailable),
    )
)]
pub async fn dev_mail_json(State(state): State<AppState>) -> Json<DevMailResponse> {
    Json(mailbox(state.mailer.as_ref()))
}

fn mailbox(mailer: Option<&Mailer>) -> DevMailResponse {
    match mailer.and_then(Mailer::kept) {
        Some(kept) => DevMailResponse {
            delivery: "dev_mailbox",
            emails: kept.emails(),
        },
        None => DevMailResponse {
            delivery: if mailer.is_some() { "smtp" } else { "off" },
            emails: Vec::new(),
        },
    }
}

fn page(mailbox: &DevMailResponse) -> String {
    let mut body = String::new();
    match (mailbox.delivery, mailbox.emails.is_empty()) {
        ("dev_mailbox", true) => body.push_str(
            "<p>No email yet. Buy a plan in the <a href=\"/\">shop</a>: its confirmation appears here once the payment is confirmed. Reload to see new ones.</p>",
        ),
        ("dev_mailbox", false) => {}
        _ => body.push_str("<p>SMTP_URL is set, so emails go to that server and none are kept here.</p>"),
    }
    for email in &mailbox.emails {
        let _ = write!(
            body,
            "<article class=\"card\"><h2>{subject}</h2><dl>\
             <dt>To</dt><dd>{to}</dd><dt>From</dt><dd>{from}</dd><dt>Sent</dt><dd>{sent_at}</dd>\
             <dt>Message-ID</dt><dd><code>{message_id}</code></dd><dt>Order</dt><dd><code>{order_id}</code></dd></dl>\
             <h3>HTML part</h3><iframe sandbox srcdoc=\"{html}\" title=\"HTML part of {subject}\"></iframe>\
             <h3>Plain-text part</h3><pre>{text}</pre>\
             <details><summary>Source</summary><pre>{source}</pre></details></article>",
            subject = escape_html(&email.subject),
            to = escape_html(&email.to),
            from = escape_html(&email.from),
            sent_at = email.sent_at.format("%Y-%m-%d %H:%M:%S UTC"),
            message_id = escape_html(&email.message_id),
            order_id = email.order_id,
            html = escape_html(&email.html),
            text = escape_html(&email.text),
            source = escape_html(&email.source),
        );
    }
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>Dev mailbox</title><style>\
         body {{ font-family: system-ui, sans-serif; max-width: 760px; margin: 40px auto; padding: 0 16px; color: #1a1f36; }}\
         h1 {{ font-size: 24px; }} h2 {{ font-size: 18px; margin: 0 0 8px; }} h3 {{ font-size: 14px; color: #697386; }}\
         .muted {{ color: #697386; }} .card {{ border: 1px solid #e3e8ee; border-radius: 8px; padding: 16px; margin: 16px 0; }}\
         dl {{ display: grid; grid-template-columns: max-content 1fr; gap: 4px 16px; margin: 0; }} dt {{ color: #697386; }} dd {{ margin: 0; }}\
         iframe {{ width: 100%; height: 320px; border: 1px solid #e3e8ee; border-radius: 4px; }}\
         pre {{ white-space: pre-wrap; background: #f6f8fa; padding: 8px; border-radius: 4px; font-size: 13px; }}\
         </style></head><body><h1>Dev mailbox</h1>\
         <p class=\"muted\">Emulator mode keeps here the confirmation emails buyers would get, newest first (the last \
         {DEV_MAILBOX_CAPACITY}, until the service restarts). Set SMTP_URL and EMAIL_FROM to send them. \
         <a href=\"/\">Back to the shop</a> · <a href=\"/dev/mail.json\">JSON</a></p>{body}</body></html>\n"
    )
}
