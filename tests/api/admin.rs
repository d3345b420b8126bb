//! The operator dashboard over HTTP: who may open it (emulator open, a real key without
//! ADMIN_TOKEN closed, the token as a bearer or through the sign-in cookie), that a post from
//! elsewhere is refused, that each kind of id finds its order, that an order's timeline lists
//! its events in the order they were applied, that a mismatched payment waits in the attention
//! list with its command, and that a hostile user id is shown as text, never as markup.

use reqwest::{StatusCode, header};
use serde_json::json;
use uuid::Uuid;

use crate::{
    helpers::{Options, TestApp, event_for, unix_now},
    lifecycle_helpers::event_id,
};

const ADMIN_TOKEN: &str = "admin-token-0123456789abcdefghijklmnop";

async fn with_admin_token() -> TestApp {
    TestApp::spawn_with(Options {
        admin_token: Some(ADMIN_TOKEN),
        ..Options::default()
    })
    .await
}

/// A client that shows redirects instead of following them.
fn not_following() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

impl TestApp {
    /// `GET` a dashboard page with the admin token as a bearer, redirects followed: the final
    /// path and query, the status and the HTML.
    async fn admin_page(&self, path: &str) -> (String, StatusCode, String) {
        let response = self
            .http
            .get(self.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        let url = response.url();
        let at = format!(
            "{}{}",
            url.path(),
            url.query().map(|q| format!("?{q}")).unwrap_or_default()
        );
        let status = response.status();
        (at, status, response.text().await.unwrap())
    }

    /// The sign-in form posted as a browser on our page would: the session cookie's `Set-Cookie`.
    async fn sign_in(&self, token: &str) -> (StatusCode, Option<String>) {
        let response = not_following()
            .post(self.url("/admin/login"))
            .header(header::ORIGIN, &self.address)
            .form(&[("token", token)])
            .send()
            .await
            .unwrap();
        let cookie = response
            .headers()
            .get(header::SET_COOKIE)
            .map(|v| v.to_str().unwrap().to_owned());
        (response.status(), cookie)
    }
}

/// `name=value` of a `Set-Cookie`, as a browser sends it back.
fn cookie_pair(set_cookie: &str) -> &str {
    set_cookie.split(';').next().unwrap()
}

#[tokio::test]
async fn in_emulator_mode_without_a_token_the_dashboard_is_open() {
    let app = TestApp::spawn_in_emulator_mode().await;
    let response = app.http.get(app.url("/admin")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.text().await.unwrap().contains("Needs a person"));
}

#[tokio::test]
async fn with_a_real_key_and_no_admin_token_the_dashboard_is_closed_to_everyone() {
    let app = TestApp::spawn().await;
    for path in ["/admin", "/admin/login", "/admin/search?q=alice"] {
        let response = app
            .http
            .get(app.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{path}");
        assert!(response.text().await.unwrap().contains("ADMIN_TOKEN"));
    }
    let (status, cookie) = app.sign_in(ADMIN_TOKEN).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(cookie.is_none());
}

#[tokio::test]
async fn the_admin_token_as_a_bearer_opens_it_and_anything_else_gets_the_sign_in_page() {
    let app = with_admin_token().await;
    let (_, status, html) = app.admin_page("/admin").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("Needs a person"), "{html}");

    let wrong = format!("{ADMIN_TOKEN}x");
    for request in [
        app.http.get(app.url("/admin")),
        app.http.get(app.url("/admin")).bearer_auth(&wrong),
        app.http
            .get(app.url("/admin/user?id=alice"))
            .bearer_auth(&ADMIN_TOKEN[1..]),
        app.http
            .get(app.url("/admin"))
            .header(header::COOKIE, "entitle_admin=99999999999.00"),
    ] {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let html = response.text().await.unwrap();
        assert!(html.contains(r#"<form method="post" action="/admin/login">"#), "{html}");
        assert!(!html.contains("Needs a person"));
    }
}

#[tokio::test]
async fn signing_in_sets_an_http_only_strict_cookie_that_is_not_the_token_and_signing_out_clears_it() {
    let app = with_admin_token().await;
    let (status, cookie) = app.sign_in("not-the-token-0123456789abcdefghijklmn").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(cookie.is_none());

    let (status, set_cookie) = app.sign_in(ADMIN_TOKEN).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let set_cookie = set_cookie.expect("a session cookie");
    assert!(set_cookie.starts_with("entitle_admin="), "{set_cookie}");
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"),
        "{set_cookie}"
    );
    // Plain http here: a Secure cookie would never come back.
    assert!(!set_cookie.contains("Secure"), "{set_cookie}");
    assert!(!set_cookie.contains(ADMIN_TOKEN), "{set_cookie}");

    let cookie = cookie_pair(&set_cookie).to_owned();
    let response = app
        .http
        .get(app.url("/admin"))
        .header(header::COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.text().await.unwrap().contains(r#"id="sign-out""#));

    let response = not_following()
        .post(app.url("/admin/logout"))
        .header(header::COOKIE, &cookie)
        .header(header::ORIGIN, &app.address)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let cleared = response.headers()[header::SET_COOKIE].to_str().unwrap();
    assert!(
        cleared.starts_with("entitle_admin=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );

    // Behind a TLS proxy the cookie is Secure.
    let response = not_following()
        .post(app.url("/admin/login"))
        .header(header::ORIGIN, &app.address)
        .header("x-forwarded-proto", "https")
        .form(&[("token", ADMIN_TOKEN)])
        .send()
        .await
        .unwrap();
    assert!(
        response.headers()[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("; Secure")
    );
}

#[tokio::test]
async fn a_post_that_did_not_come_from_the_dashboard_is_refused() {
    let app = with_admin_token().await;
    let (_, set_cookie) = app.sign_in(ADMIN_TOKEN).await;
    let cookie = cookie_pair(&set_cookie.unwrap()).to_owned();

    for origin in [None, Some("https://evil.example"), Some("null")] {
        let mut sign_in = not_following()
            .post(app.url("/admin/login"))
            .form(&[("token", ADMIN_TOKEN)]);
        let mut sign_out = not_following()
            .post(app.url("/admin/logout"))
            .header(header::COOKIE, &cookie);
        if let Some(origin) = origin {
            sign_in = sign_in.header(header::ORIGIN, origin);
            sign_out = sign_out.header(header::ORIGIN, origin);
        }
        let response = sign_in.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{origin:?}");
        assert!(response.headers().get(header::SET_COOKIE).is_none());
        let response = sign_out.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{origin:?}");
        assert!(response.headers().get(header::SET_COOKIE).is_none());
    }
}

#[tokio::test]
async fn a_search_by_each_kind_of_id_finds_the_order() {
    let app = with_admin_token().await;
    let purchase = app.fulfilled_purchase("alice", "pro_monthly").await;
    let order_id = purchase.order_id;
    // Another order, so that a search that found "some order" would be caught.
    app.fulfilled_purchase("bob", "credits_100").await;
    // The ids Stripe did not give this order are set by hand: what is searched is the column.
    sqlx::query(
        "update orders set stripe_customer_id = coalesce(stripe_customer_id, 'cus_admin_search'),
                           stripe_payment_intent_id = coalesce(stripe_payment_intent_id, 'pi_admin_search')
         where id = $1",
    )
    .bind(order_id)
    .execute(&app.db)
    .await
    .unwrap();
    let (session, payment_intent, subscription, customer): (String, String, String, String) = sqlx::query_as(
        "select stripe_checkout_session_id, stripe_payment_intent_id, stripe_subscription_id, stripe_customer_id
         from orders where id = $1",
    )
    .bind(order_id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    let event = event_id(&purchase.events[0]);
    assert!(event.starts_with("evt_"));
    // A renewal's payment is on no order: it names the order through its subscription.
    sqlx::query(
        "insert into subscription_payments (stripe_payment_intent_id, stripe_subscription_id, stripe_invoice_id)
         values ('pi_admin_renewal', $1, 'in_admin_renewal')",
    )
    .bind(&subscription)
    .execute(&app.db)
    .await
    .unwrap();

    for id in [
        order_id.to_string(),
        session,
        payment_intent,
        subscription,
        customer,
        event,
        "pi_admin_renewal".to_owned(),
    ] {
        let (at, status, html) = app.admin_page(&format!("/admin/search?q={id}")).await;
        assert_eq!(status, StatusCode::OK, "{id}: {html}");
        assert_eq!(at, format!("/admin/orders/{order_id}"), "{id}");
        assert!(html.contains(&id) || id == "pi_admin_renewal", "{id}");
    }

    let (at, status, html) = app.admin_page("/admin/search?q=alice").await;
    assert_eq!((at.as_str(), status), ("/admin/user?id=alice", StatusCode::OK));
    assert!(html.contains(&order_id.to_string()), "{html}");

    let (_, _, html) = app.admin_page("/admin/search?q=cus_nobody").await;
    assert!(html.contains(r#"id="nothing-found""#), "{html}");

    // A user whose id looks like a Stripe id is still found.
    app.checkout("cus_is_my_user_id", "credits_100").await;
    let (at, _, _) = app.admin_page("/admin/search?q=cus_is_my_user_id").await;
    assert_eq!(at, "/admin/user?id=cus_is_my_user_id");
}

#[tokio::test]
async fn the_timeline_lists_the_events_applied_to_the_order_in_order_with_what_each_changed() {
    let app = with_admin_token().await;
    let purchase = app.fulfilled_purchase("alice", "credits_100").await;
    let charge = app.charge_of(&purchase);
    let refund = app.emulator.refund_charge(&charge, Some(250)).unwrap();
    let (status, _) = app.deliver(&refund).await;
    assert_eq!(status, StatusCode::OK);

    let (_, status, html) = app.admin_page(&format!("/admin/orders/{}", purchase.order_id)).await;
    assert_eq!(status, StatusCode::OK);
    let position = |needle: &str| html.find(needle).unwrap_or_else(|| panic!("{needle} missing: {html}"));
    let completed = position(&format!(r#"data-event-id="{}""#, event_id(&purchase.events[0])));
    let purchase_credits = position("credits +100 (purchase)");
    let refunded = position(&format!(r#"data-event-id="{}""#, event_id(&refund)));
    let refund_credits = position("credits -50 (refund)");
    assert!(completed < purchase_credits && purchase_credits < refunded && refunded < refund_credits);
    assert!(html.matches(r#"class="timeline-event""#).count() >= 2);
    // Stripe's `created` is kept beside the time it was applied.
    let created: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("select event_created from processed_webhook_events where event_id = $1")
            .bind(event_id(&refund))
            .fetch_one(&app.db)
            .await
            .unwrap();
    let created = created.expect("the event's created is recorded");
    assert_eq!(created.timestamp(), refund["created"].as_i64().unwrap());
    assert!(html.contains(&created.format("%Y-%m-%d %H:%M:%S").to_string()));

    let (status, body) = app
        .get(&format!("/admin/orders/{}", Uuid::new_v4()), Some(ADMIN_TOKEN))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("order_not_found"))
    );
}

#[tokio::test]
async fn a_mismatched_payment_waits_in_the_attention_list_with_its_command() {
    let app = with_admin_token().await;
    let (_, _, html) = app.admin_page("/admin").await;
    assert!(html.contains(r#"id="under-review-none""#), "{html}");

    let (order_id, session_id) = app.checkout("alice", "credits_100").await;
    let mut paid_less = event_for(&app, "checkout.session.completed", &session_id);
    paid_less["data"]["object"]["payment_status"] = json!("paid");
    paid_less["data"]["object"]["amount_total"] = json!(499);
    let (_, body) = app.deliver(&paid_less).await;
    assert_eq!(body["outcome"], "amount_mismatch");

    let (_, status, html) = app.admin_page("/admin").await;
    assert_eq!(status, StatusCode::OK);
    let row = html
        .split(r#"<tr class="under-review">"#)
        .nth(1)
        .unwrap_or_else(|| panic!("no order under review: {html}"));
    let row = &row[..row.find("</tr>").unwrap()];
    assert!(row.contains(&order_id.to_string()), "{row}");
    assert!(row.contains("499"), "the reason names what was paid: {row}");
    assert!(row.contains(&format!("<code>entitle order {order_id}</code>")), "{row}");
}

#[tokio::test]
async fn a_hostile_user_id_is_shown_as_text_on_every_page() {
    let app = with_admin_token().await;
    let hostile = r#"<script>alert("x")</script><img src=x onerror=alert(1)>'&"#;
    let escaped = "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;&#39;&amp;";
    app.grant_credits(hostile, 30).await;
    let (order_id, session_id) = app.checkout(hostile, "credits_100").await;
    let mut paid_less = event_for(&app, "checkout.session.completed", &session_id);
    paid_less["data"]["object"]["payment_status"] = json!("paid");
    paid_less["data"]["object"]["amount_total"] = json!(499);
    app.deliver(&paid_less).await;

    let search = format!(
        "/admin/search?q={}",
        percent_encoding::utf8_percent_encode(hostile, percent_encoding::NON_ALPHANUMERIC)
    );
    for path in ["/admin".to_owned(), format!("/admin/orders/{order_id}"), search] {
        let (at, status, html) = app.admin_page(&path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {html}");
        assert!(!html.contains("<script") && !html.contains("<img"), "{at}: {html}");
        assert!(html.contains(escaped), "{at}: {html}");
        if at.starts_with("/admin/user") {
            assert!(html.contains(r#"<dd id="available">30</dd>"#), "{html}");
        }
    }
}

#[tokio::test]
async fn a_users_ledger_is_shown_a_page_at_a_time() {
    let app = with_admin_token().await;
    for _ in 0..52 {
        app.grant_credits("carol", 1).await;
    }
    let (_, status, first) = app.admin_page("/admin/user?id=carol").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first.matches(r#"class="ledger-row""#).count(), 50);
    let older = first
        .split(r#"<a id="older" href=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a link to older rows")
        .replace("&amp;", "&");
    let (_, _, second) = app.admin_page(&older).await;
    assert_eq!(second.matches(r#"class="ledger-row""#).count(), 2);
    assert!(!second.contains(r#"id="older""#));
}

#[tokio::test]
async fn the_charts_count_every_event_received_and_how_late_it_came() {
    let app = with_admin_token().await;
    app.fulfilled_purchase("alice", "credits_100").await;
    // Created two minutes before it is delivered, as after a Stripe retry.
    let late = json!({
        "id": format!("evt_late_{}", Uuid::new_v4().simple()), "object": "event", "type": "customer.created",
        "created": unix_now() - 120, "livemode": false, "data": { "object": { "id": "cus_late", "object": "customer" } },
    });
    let (status, _) = app.deliver(&late).await;
    assert_eq!(status, StatusCode::OK);

    let (_, _, html) = app.admin_page("/admin").await;
    let chart = |id: &str| {
        let start = html
            .find(&format!(r#"<svg id="{id}""#))
            .unwrap_or_else(|| panic!("no {id}: {html}"));
        html[start..start + html[start..].find("</svg>").unwrap()].to_owned()
    };
    let values = |svg: &str| -> Vec<String> {
        svg.split(r#"data-value=""#)
            .skip(1)
            .map(|rest| rest[..rest.find('"').unwrap()].to_owned())
            .collect()
    };
    let rate = values(&chart("webhook-rate"));
    assert_eq!(rate.len(), 24, "six hours in quarter hours");
    let counted: i64 = rate
        .iter()
        .map(|v| v.strip_suffix(" events").unwrap().parse::<i64>().unwrap())
        .sum();
    assert_eq!(counted, app.processed_event_count().await);

    let worst = values(&chart("webhook-lag"))
        .iter()
        .filter_map(|v| v.split("worst ").nth(1)?.strip_suffix('s')?.parse::<f64>().ok())
        .fold(0.0, f64::max);
    assert!((120.0..600.0).contains(&worst), "the late event's lag shows: {worst}");
}

#[tokio::test]
async fn a_set_aside_event_and_a_failed_delivery_wait_with_their_commands_and_the_delivery_is_on_the_timeline() {
    // A port nothing listens on: every delivery to it fails.
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let app = TestApp::spawn_with(Options {
        admin_token: Some(ADMIN_TOKEN),
        app_webhook_urls: vec![format!("http://127.0.0.1:{closed_port}/hooks")],
        ..Options::default()
    })
    .await;
    let purchase = app.fulfilled_purchase("alice", "credits_100").await;
    sqlx::query(
        "insert into reconciler_failures (event_id, event_type, event_created, attempts, last_error, set_aside_at)
         values ('evt_set_aside_1', 'charge.refunded', 1700000000, 5, 'Stripe answered 500', now())",
    )
    .execute(&app.db)
    .await
    .unwrap();

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let html = loop {
        let (_, _, html) = app.admin_page("/admin").await;
        if html.contains(r#"<tr class="failed-delivery">"#) {
            break html;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no failed delivery listed: {html}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let row = |class: &str| {
        let row = html.split(&format!(r#"<tr class="{class}">"#)).nth(1).unwrap();
        row[..row.find("</tr>").unwrap()].to_owned()
    };
    let event = row("failed-event");
    assert!(
        event.contains("set aside") && event.contains("Stripe answered 500"),
        "{event}"
    );
    assert!(event.contains("<code>entitle replay evt_set_aside_1</code>"), "{event}");
    let delivery = row("failed-delivery");
    let failed: Vec<Uuid> = sqlx::query_scalar("select id from outbox_deliveries where last_error is not null")
        .fetch_all(&app.db)
        .await
        .unwrap();
    assert!(
        failed
            .iter()
            .any(|id| delivery.contains(&format!("<code>entitle redeliver {id}</code>"))),
        "{delivery}"
    );

    let (_, _, order) = app.admin_page(&format!("/admin/orders/{}", purchase.order_id)).await;
    assert!(
        order.contains(r#"<tr class="timeline-delivery">"#) && order.contains("order.paid"),
        "{order}"
    );
}
