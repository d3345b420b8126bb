//! The dashboard's pages: the overview (what needs a person, the webhook charts), search, an
//! order's timeline and a user's credits. Each reads one `admin` read model and writes it out;
//! every value from data goes through `esc`.

use std::fmt::Write;

use axum::{
    Extension,
    extract::{Path, Query as QueryString, State},
    http::StatusCode,
    response::{IntoResponse, Redirect, Response},
};
use serde::Deserialize;
use uuid::Uuid;

use super::{
    auth::Signed,
    chart::{lag_chart, rate_chart},
    html::{Chrome, esc, opt_time, page, query_value, time},
};
use crate::{
    admin::{
        activity::activity,
        attention::{self, DRIFT_COMMAND, attention},
        order::{Entry, order_timeline},
        search::{Found, Query, search},
        user::user_page,
    },
    credits::check_user_id,
    error::AppError,
    state::AppState,
    store::order_history::OrderBrief,
};

/// `GET /admin`.
pub async fn overview(
    State(state): State<AppState>,
    Extension(Signed(chrome)): Extension<Signed>,
) -> Result<Response, AppError> {
    let needs = attention(&state.db).await?;
    let activity = activity(&state.db, chrono::Utc::now()).await?;
    let mut body = String::from("<h1>Needs a person</h1>");
    if needs.is_empty() {
        body.push_str(r#"<p class="empty" id="nothing-needed">Nothing is waiting: no payment under review, no event set aside, no failed delivery.</p>"#);
    }

    body.push_str(r#"<h2>Payments under review</h2><p>The payment did not match its order (an amount or currency mismatch): nothing was granted. Read the order, then refund the payment at Stripe or grant by hand (<code>POST /v1/grants</code>).</p>"#);
    let mut rows = String::new();
    for order in &needs.under_review {
        let _ = write!(
            rows,
            r#"<tr class="under-review"><td><a href="/admin/orders/{id}">{id}</a></td><td>{}</td><td>{}</td><td>{}</td><td class="bad">{}</td><td class="cmd"><code>{}</code></td></tr>"#,
            user_link(&order.user_id),
            esc(&order.plan_id),
            time(order.updated_at),
            esc(order.review_reason.as_deref().unwrap_or("no reason recorded")),
            esc(&attention::review_command(order)),
            id = order.id,
        );
    }
    table(
        &mut body,
        "under-review",
        &["Order", "User", "Plan", "Since", "Reason", "Command"],
        &rows,
    );

    body.push_str("<h2>Events set aside or failing</h2><p>Missed events the reconciler could not apply. Fix the cause, then replay the event.</p>");
    let mut rows = String::new();
    for event in &needs.failed_events {
        let state = match event.set_aside_at {
            Some(at) => format!("set aside {}", time(at)),
            None => "retrying".to_owned(),
        };
        let _ = write!(
            rows,
            r#"<tr class="failed-event"><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td class="bad">{}</td><td class="cmd"><code>{}</code></td></tr>"#,
            esc(&event.event_id),
            esc(&event.event_type),
            esc(&state),
            event.attempts,
            esc(&event.last_error),
            esc(&attention::replay_command(event)),
        );
    }
    table(
        &mut body,
        "failed-events",
        &["Event", "Type", "State", "Attempts", "Last error", "Command"],
        &rows,
    );

    body.push_str(
        "<h2>Failed deliveries to the app</h2><p>Webhook messages abandoned, or pending after a failed attempt.</p>",
    );
    let mut rows = String::new();
    for delivery in &needs.failed_deliveries {
        let _ = write!(
            rows,
            r#"<tr class="failed-delivery"><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class="bad">{}</td><td class="cmd"><code>{}</code></td></tr>"#,
            delivery.delivery_id,
            esc(delivery.message_type.as_str()),
            user_link(&delivery.user_id),
            esc(delivery.status.as_str()),
            delivery.attempts,
            esc(&delivery_problem(delivery)),
            esc(&attention::redeliver_command(delivery)),
        );
    }
    table(
        &mut body,
        "failed-deliveries",
        &[
            "Delivery",
            "Type",
            "User",
            "Status",
            "Attempts",
            "Last result",
            "Command",
        ],
        &rows,
    );

    let _ = write!(
        body,
        "<h2>Drift from Stripe</h2><p>Not stored: the check compares our records with Stripe's objects now, prints each disagreement and fixes what it can: <code>{}</code></p>",
        esc(DRIFT_COMMAND)
    );

    let _ = write!(
        body,
        r#"<h1>Webhooks, last 6 hours</h1><div class="charts">{}{}</div>"#,
        rate_chart(&activity),
        lag_chart(&activity)
    );
    Ok(page(StatusCode::OK, "Overview", chrome, "", &body))
}

#[derive(Deserialize)]
pub struct SearchParams {
    #[serde(default)]
    q: String,
}

/// `GET /admin/search?q=…`: straight to the one thing found, or a list, or "nothing".
pub async fn search_page(
    State(state): State<AppState>,
    Extension(Signed(chrome)): Extension<Signed>,
    QueryString(params): QueryString<SearchParams>,
) -> Result<Response, AppError> {
    let Some(query) = Query::parse(&params.q) else {
        return Ok(Redirect::to("/admin").into_response());
    };
    if let Query::User(user) = &query
        && check_user_id("q", user).is_err()
    {
        return Ok(nothing_found(
            chrome,
            &params.q,
            "It is not an order id, a Stripe id or a user id.",
        ));
    }
    Ok(match search(&state.db, &query).await? {
        Found::Order(id) => Redirect::to(&format!("/admin/orders/{id}")).into_response(),
        Found::User(user) => Redirect::to(&format!("/admin/user?id={}", query_value(&user))).into_response(),
        Found::Orders(orders) => {
            let mut body = format!("<h1>{} orders for <code>{}</code></h1>", orders.len(), esc(&params.q));
            orders_table(&mut body, &orders);
            page(StatusCode::OK, "Search", chrome, &params.q, &body)
        }
        Found::EventWithoutOrder(event) => nothing_found(
            chrome,
            &params.q,
            &format!("{event} was applied, but named no order (an event type the service does not act on)."),
        ),
        Found::Nothing => nothing_found(chrome, &params.q, "No order, event or Stripe object has this id."),
    })
}

fn nothing_found(chrome: Chrome, q: &str, why: &str) -> Response {
    let body = format!(
        r#"<h1>Nothing found for <code>{}</code></h1><p id="nothing-found">{}</p>"#,
        esc(q),
        esc(why)
    );
    page(StatusCode::OK, "Search", chrome, q, &body)
}

/// `GET /admin/orders/{id}`.
pub async fn order_page(
    State(state): State<AppState>,
    Extension(Signed(chrome)): Extension<Signed>,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let not_found = AppError::NotFound {
        code: "order_not_found",
        message: "No order has this id.",
    };
    let Ok(order_id) = Uuid::try_parse(&id) else {
        return Err(not_found);
    };
    let Some(timeline) = order_timeline(&state.db, order_id).await? else {
        return Err(not_found);
    };
    let order = &timeline.order;
    let mut body = format!(
        r#"<h1>Order <code>{}</code>: <span id="order-status" data-status="{status}">{status}</span></h1><dl>"#,
        order.id,
        status = esc(&order.status)
    );
    let mut field = |name: &str, value: String| {
        let _ = write!(body, "<dt>{}</dt><dd>{value}</dd>", esc(name));
    };
    field("User", user_link(&order.user_id));
    field("Plan", esc(&order.plan_id).to_string());
    field(
        "Amount",
        format!(
            "{} {} (refunded {})",
            order.amount,
            esc(&order.currency),
            order.amount_refunded
        ),
    );
    if let Some(hold) = &order.hold {
        field("Hold", format!(r#"<span class="bad">{}</span>"#, esc(hold)));
    }
    if let Some(reason) = &order.review_reason {
        field("Under review", format!(r#"<span class="bad">{}</span>"#, esc(reason)));
    }
    for (name, id) in [
        ("Checkout session", &order.stripe_checkout_session_id),
        ("Payment intent", &order.stripe_payment_intent_id),
        ("Subscription", &order.stripe_subscription_id),
        ("Customer", &order.stripe_customer_id),
    ] {
        if let Some(id) = id {
            field(name, format!("<code>{}</code>", esc(id)));
        }
    }
    field("Created", time(order.created_at));
    field("Paid", opt_time(order.paid_at));
    field("Updated", time(order.updated_at));
    let _ = write!(
        body,
        "</dl><p>In a terminal: <code>entitle order {}</code></p><h2>Timeline</h2>",
        order.id
    );

    let mut rows = String::new();
    for entry in &timeline.entries {
        match entry {
            Entry::Event { event, changes } => {
                let changed = match changes.is_empty() {
                    true => r#"<span class="empty">nothing else</span>"#.to_owned(),
                    false => format!(
                        r#"<ul class="changes">{}</ul>"#,
                        changes
                            .iter()
                            .map(|c| format!("<li>{}</li>", esc(c)))
                            .collect::<String>()
                    ),
                };
                let _ = write!(
                    rows,
                    r#"<tr class="timeline-event" data-event-id="{id}"><td>{}</td><td>{}</td><td>event <code>{id}</code> <strong>{}</strong></td><td>{}</td><td>{changed}</td></tr>"#,
                    time(event.received_at),
                    opt_time(event.event_created),
                    esc(&event.event_type),
                    esc(&event.outcome),
                    id = esc(&event.event_id),
                );
            }
            Entry::Change { at, change } => {
                let _ = write!(
                    rows,
                    r#"<tr class="timeline-change"><td>{}</td><td>–</td><td>change without an event (return-page sync or an operator)</td><td></td><td>{}</td></tr>"#,
                    time(*at),
                    esc(change)
                );
            }
            Entry::Delivery(delivery) => {
                let _ = write!(
                    rows,
                    r#"<tr class="timeline-delivery"><td>{}</td><td>–</td><td>outbox {} <strong>{}</strong> to {}</td><td>{}</td><td>{}</td></tr>"#,
                    time(delivery.created_at),
                    esc(delivery.endpoint_kind.as_str()),
                    esc(delivery.message_type.as_str()),
                    esc(&delivery.url),
                    esc(delivery.status.as_str()),
                    esc(&delivery_problem(delivery)),
                );
            }
        }
    }
    table(
        &mut body,
        "timeline",
        &["Applied (UTC)", "Stripe created", "What", "Outcome", "What it changed"],
        &rows,
    );
    Ok(page(StatusCode::OK, &format!("Order {}", order.id), chrome, "", &body))
}

#[derive(Deserialize)]
pub struct UserParams {
    id: String,
    before: Option<i64>,
}

/// `GET /admin/user?id=…[&before=<ledger row id>]`: the id is a query value, as user ids may hold
/// any character a path would trip on.
pub async fn user_page_handler(
    State(state): State<AppState>,
    Extension(Signed(chrome)): Extension<Signed>,
    QueryString(params): QueryString<UserParams>,
) -> Result<Response, AppError> {
    check_user_id("id", &params.id)?;
    let user = user_page(&state.db, &params.id, params.before).await?;
    let balance = &user.balance;
    let mut body = format!(
        r#"<h1>User <code id="user-id">{}</code></h1><dl><dt>Available</dt><dd id="available">{}</dd><dt>Reserved</dt><dd>{}</dd><dt>Overdrawn</dt><dd>{}</dd></dl>"#,
        esc(&user.user_id),
        balance.available,
        balance.reserved,
        balance.overdrawn
    );
    if user.is_unknown() {
        body.push_str(r#"<p class="empty" id="unknown-user">Nothing is recorded for this id: no order, credits or entitlement (is it the id your tokens carry in <code>sub</code>?).</p>"#);
    }

    body.push_str("<h2>Entitlements</h2>");
    let mut rows = String::new();
    for held in &user.entitlements {
        let _ = write!(
            rows,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&held.key),
            esc(held.status.as_str()),
            opt_time(held.current_period_end),
            if held.cancel_at_period_end { "yes" } else { "no" }
        );
    }
    table(
        &mut body,
        "entitlements",
        &["Key", "Status", "Period end", "Cancels at period end"],
        &rows,
    );

    body.push_str("<h2>Grants, in the order they are spent</h2>");
    let mut rows = String::new();
    for grant in &user.grants {
        let _ = write!(
            rows,
            "<tr><td><code>{}</code></td><td>{}</td><td>{} of {}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            grant.id,
            esc(grant.source.as_str()),
            grant.remaining,
            grant.granted,
            grant.expires_at.map_or_else(|| "never".to_owned(), time),
            order_link(grant.order_id),
            esc(grant.reason.as_deref().unwrap_or("")),
        );
    }
    table(
        &mut body,
        "grants",
        &["Grant", "Source", "Left", "Expires", "Order", "Reason"],
        &rows,
    );

    body.push_str("<h2>Orders</h2>");
    orders_table(&mut body, &user.orders);

    body.push_str("<h2>Ledger, newest first</h2>");
    let mut rows = String::new();
    for row in &user.ledger {
        let _ = write!(
            rows,
            r#"<tr class="ledger-row"><td>{}</td><td>{}</td><td>{}</td><td>{:+}</td><td>{}</td><td>{}</td></tr>"#,
            row.id,
            time(row.created_at),
            esc(row.kind.as_str()),
            row.delta,
            order_link(row.order_id),
            esc(row.stripe_event_id.as_deref().unwrap_or("")),
        );
    }
    table(
        &mut body,
        "ledger",
        &["Row", "At (UTC)", "Kind", "Credits", "Order", "Event"],
        &rows,
    );
    if let Some(older) = user.older_than {
        let _ = write!(
            body,
            r#"<p><a id="older" href="/admin/user?id={}&amp;before={older}">Older rows</a></p>"#,
            esc(&query_value(&user.user_id))
        );
    }
    let _ = write!(
        body,
        "<p>In a terminal: <code>entitle user {}</code></p>",
        esc(&shell_word(&user.user_id))
    );
    Ok(page(
        StatusCode::OK,
        &format!("User {}", user.user_id),
        chrome,
        "",
        &body,
    ))
}

fn orders_table(body: &mut String, orders: &[OrderBrief]) {
    let mut rows = String::new();
    for order in orders {
        let _ = write!(
            rows,
            r#"<tr class="order-row"><td><a href="/admin/orders/{id}">{id}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{} {}</td><td>{}</td></tr>"#,
            user_link(&order.user_id),
            esc(&order.plan_id),
            esc(&order.status),
            order.amount,
            esc(&order.currency),
            time(order.created_at),
            id = order.id,
        );
    }
    table(
        body,
        "orders",
        &["Order", "User", "Plan", "Status", "Amount", "Created (UTC)"],
        &rows,
    );
}

/// A table, or a line saying there is nothing, when `rows` is empty.
fn table(body: &mut String, id: &str, headings: &[&str], rows: &str) {
    if rows.is_empty() {
        let _ = write!(body, r#"<p class="empty" id="{}-none">None.</p>"#, esc(id));
        return;
    }
    let _ = write!(body, r#"<table id="{}"><tr>"#, esc(id));
    for heading in headings {
        let _ = write!(body, "<th>{}</th>", esc(heading));
    }
    let _ = write!(body, "</tr>{rows}</table>");
}

fn order_link(order_id: Option<Uuid>) -> String {
    order_id.map_or_else(String::new, |id| format!(r#"<a href="/admin/orders/{id}">{id}</a>"#))
}

fn user_link(user_id: &str) -> String {
    format!(
        r#"<a href="/admin/user?id={}">{}</a>"#,
        esc(&query_value(user_id)),
        esc(user_id)
    )
}

fn delivery_problem(delivery: &crate::store::outbox_deliveries::Listed) -> String {
    match (delivery.last_response, &delivery.last_error) {
        (Some(status), Some(error)) => format!("HTTP {status}: {error}"),
        (Some(status), None) => format!("HTTP {status}"),
        (None, Some(error)) => error.clone(),
        (None, None) => String::new(),
    }
}

/// The id as one shell word, for a command to copy: single-quoted unless it is plain.
fn shell_word(text: &str) -> String {
    let plain = text.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.@:".contains(&b));
    match plain {
        true => text.to_owned(),
        false => format!("'{}'", text.replace('\'', r"'\''")),
    }
}
