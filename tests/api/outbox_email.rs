//! The confirmation email through the outbox, end to end: Stripe's events (the emulator's wire
//! format) pay an order, the transaction that first marks it paid writes its one email message, and
//! the outbox sends it to a real SMTP server (aiosmtpd, in its own process) on real Postgres: once
//! per order under duplicate and concurrent events, after the server was down, never again for a
//! refund, a dispute or a renewal, abandoned alone when refused for good, and kept in the dev
//! mailbox in emulator mode.

use std::time::Duration;

use entitle::{config::EmailDelivery, stripe_emulator::PaymentResult};
use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    app_webhook_helpers::eventually,
    helpers::{Options, TestApp},
    smtp_server::{SmtpOptions, SmtpServer, config_for},
};

const FROM: &str = "Entitle Shop <orders@shop.example>";
/// The address the emulator's checkout page collects from every buyer.
const BUYER: &str = "customer@example.com";

/// Emails through `server`, as `SMTP_URL` and `EMAIL_FROM` configure them.
fn emailing(server: &SmtpServer) -> Options {
    Options {
        email: smtp_delivery(server),
        ..Options::default()
    }
}

/// With the tests' short lease (3 s), so an email's send timeout is shorter than it, as the
/// service's configuration requires of `OUTBOX_LEASE_SECS` (a send never starts unless its
/// answer is due within the lease).
fn smtp_delivery(server: &SmtpServer) -> EmailDelivery {
    match config_for(&server.url(None), FROM).email {
        EmailDelivery::Smtp { mut server, from } => {
            server.timeout = Duration::from_secs(2);
            EmailDelivery::Smtp { server, from }
        }
        other => other,
    }
}

fn header<'a>(message: &'a Value, name: &str) -> &'a str {
    message["headers"][name]
        .as_str()
        .unwrap_or_else(|| panic!("no {name} header in {message:#}"))
}

/// An email delivery as the outbox holds it.
#[derive(Debug, sqlx::FromRow)]
struct EmailDeliveryRow {
    id: Uuid,
    order_id: Option<Uuid>,
    status: String,
    attempts: i32,
    last_error: Option<String>,
}

impl TestApp {
    async fn email_deliveries(&self) -> Vec<EmailDeliveryRow> {
        sqlx::query_as(
            "select d.id, m.order_id, d.status, d.attempts, d.last_error
             from outbox_deliveries d join outbox_messages m on m.id = d.message_id
             where m.kind = 'email' order by d.created_at, d.id",
        )
        .fetch_all(&self.db)
        .await
        .unwrap()
    }

    /// Confirmation messages written, of any order.
    async fn confirmations(&self) -> i64 {
        sqlx::query_scalar("select count(*) from outbox_messages where type = 'order.confirmation'")
            .fetch_one(&self.db)
            .await
            .unwrap()
    }

    /// Waits until no email delivery is pending, and returns them all.
    async fn emails_settled(&self) -> Vec<EmailDeliveryRow> {
        eventually("every email delivery to be delivered or given up on", || async {
            let deliveries = self.email_deliveries().await;
            deliveries.iter().all(|d| d.status != "pending").then_some(deliveries)
        })
        .await
    }

    /// The email endpoint: (url, configured, failures in a row, disabled reason).
    async fn email_endpoints(&self) -> Vec<(String, bool, i32, Option<String>)> {
        sqlx::query_as(
            "select url, configured, consecutive_failures, disabled_reason from outbox_endpoints
             where kind = 'email' order by created_at",
        )
        .fetch_all(&self.db)
        .await
        .unwrap()
    }
}

/// What the server received, once the outbox has nothing left to send and a sweep more has passed
/// (so a second copy, were one to be sent, would have arrived).
async fn all_received(app: &TestApp, server: &SmtpServer, count: usize) -> Vec<Value> {
    server.wait_for(count).await;
    app.emails_settled().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let received = server.received();
    assert_eq!(received.len(), count, "{received:#?}");
    received
}

#[tokio::test]
async fn given_one_paid_session_delivered_twice_and_another_eight_times_at_once_then_each_order_gets_one_email() {
    let server = SmtpServer::start(SmtpOptions::default());
    let app = TestApp::spawn_with(emailing(&server)).await;
    let (twice, session_id) = app.checkout("alice", "credits_100").await;
    let completed = app.pay(&session_id, PaymentResult::Card).remove(0);
    for _ in 0..2 {
        assert_eq!(app.deliver(&completed).await.0, StatusCode::OK);
    }
    let (at_once, session_id) = app.checkout("bob", "pro_lifetime").await;
    let completed = app.pay(&session_id, PaymentResult::Card).remove(0);
    let answers = join_all((0..8).map(|_| app.deliver(&completed))).await;
    assert!(
        answers.iter().all(|(status, _)| *status == StatusCode::OK),
        "{answers:?}"
    );

    let received = all_received(&app, &server, 2).await;
    assert_eq!(app.confirmations().await, 2);
    let email_of = |order: Uuid| {
        let message_id = format!("<order-{order}@shop.example>");
        let copies: Vec<&Value> = received
            .iter()
            .filter(|m| header(m, "Message-ID") == message_id)
            .collect();
        assert_eq!(copies.len(), 1, "{message_id} in {received:#?}");
        copies[0].clone()
    };

    let alice = email_of(twice);
    assert_eq!(alice["rcpt_tos"], json!([BUYER]));
    assert_eq!(alice["mail_from"], "orders@shop.example");
    assert_eq!(header(&alice, "Subject"), "Order confirmed: 100 credits");
    for part in [alice["text"].as_str().unwrap(), alice["html"].as_str().unwrap()] {
        for expected in ["100 credits", "$5.00", &twice.to_string()] {
            assert!(part.contains(expected), "{expected} missing from {part}");
        }
    }
    let bob = email_of(at_once);
    assert_eq!(
        header(&bob, "Subject"),
        "Order confirmed: Pro for life, with 100 credits"
    );
    let text = bob["text"].as_str().unwrap();
    for expected in ["$99.00", &at_once.to_string(), "- 100 credits", "- pro_lifetime access"] {
        assert!(text.contains(expected), "{expected:?} missing from {text}");
    }

    let deliveries = app.email_deliveries().await;
    assert!(
        deliveries.iter().all(|d| d.status == "delivered" && d.attempts == 1),
        "{deliveries:?}"
    );
    let attempts: Vec<(String, Option<i32>, Option<i32>)> =
        sqlx::query_as("select status, response_status, latency_ms from outbox_attempts order by id")
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert!(
        attempts
            .iter()
            .all(|(status, response, latency)| status == "delivered" && *response == Some(250) && latency.is_some()),
        "{attempts:?}"
    );
    assert_eq!(
        app.email_endpoints().await,
        [(format!("smtp://127.0.0.1:{}", server.port), true, 0, None)]
    );
}

#[tokio::test]
async fn given_the_smtp_server_down_when_the_order_is_paid_then_the_email_arrives_once_after_it_starts() {
    let mut server = SmtpServer::on_free_port(SmtpOptions::default());
    let app = TestApp::spawn_with(emailing(&server)).await;
    let purchase = app.fulfilled_purchase("carol", "credits_100").await;
    eventually("two failed attempts while the server is down", || async {
        let failed: Vec<String> = sqlx::query_scalar("select error from outbox_attempts where status = 'failed'")
            .fetch_all(&app.db)
            .await
            .unwrap();
        (failed.len() >= 2).then_some(failed)
    })
    .await
    .iter()
    .for_each(|error| assert!(error.contains(&format!("127.0.0.1:{}", server.port)), "{error}"));
    assert!(app.email_endpoints().await[0].2 >= 1, "the endpoint backs off");

    server.start_again();
    let received = all_received(&app, &server, 1).await;
    assert_eq!(
        header(&received[0], "Message-ID"),
        format!("<order-{}@shop.example>", purchase.order_id)
    );
    let deliveries = app.email_deliveries().await;
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].status, "delivered");
    assert!(deliveries[0].attempts >= 3, "{deliveries:?}");
    let (_, configured, failures, disabled) = app.email_endpoints().await.remove(0);
    assert!(configured && failures == 0 && disabled.is_none(), "healthy again");
}

#[tokio::test]
async fn given_paid_orders_when_refunded_disputed_won_or_lost_or_renewed_then_no_second_email_is_written_or_sent() {
    let server = SmtpServer::start(SmtpOptions::default());
    let app = TestApp::spawn_with(emailing(&server)).await;
    let refunded = app.fulfilled_purchase("dave", "credits_100").await;
    let won = app.fulfilled_purchase("erin", "credits_100").await;
    let lost = app.fulfilled_purchase("frank", "credits_100").await;
    let renewed = app.fulfilled_purchase("grace", "pro_monthly").await;
    all_received(&app, &server, 4).await;

    let refund = app.emulator.refund_charge(&app.charge_of(&refunded), None).unwrap();
    app.deliver_all(&[refund.clone(), refund]).await;
    for (purchase, win) in [(&won, true), (&lost, false)] {
        let (dispute, opened) = app.emulator.open_dispute(&app.charge_of(purchase)).unwrap();
        app.deliver_all(&[opened]).await;
        let closed = app.emulator.close_dispute(&dispute, win).unwrap();
        app.deliver_all(&[closed.clone(), closed]).await;
    }
    let renewal = app.emulator.renew_subscription(&renewed.subscription_id()).unwrap();
    app.deliver_all(&renewal).await;

    let statuses: Vec<String> = sqlx::query_scalar("select status from orders order by created_at")
        .fetch_all(&app.db)
        .await
        .unwrap();
    // A dispute lost takes the payment back, as a refund does.
    assert_eq!(
        statuses,
        ["refunded", "paid", "refunded", "paid"],
        "the changes applied"
    );
    assert_eq!(app.confirmations().await, 4);
    let received = all_received(&app, &server, 4).await;
    let mut ids: Vec<&str> = received.iter().map(|m| header(m, "Message-ID")).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 4, "one email per order");
}

#[tokio::test]
async fn given_a_recipient_the_server_refuses_then_that_email_is_abandoned_and_a_later_orders_email_still_goes() {
    let server = SmtpServer::start(SmtpOptions {
        reject: vec!["gone@example.com"],
        ..Default::default()
    });
    let app = TestApp::spawn_with(emailing(&server)).await;
    let (refused, session_id) = app.checkout("heidi", "credits_100").await;
    let mut completed = app.pay(&session_id, PaymentResult::Card).remove(0);
    completed["data"]["object"]["customer_details"]["email"] = json!("gone@example.com");
    assert_eq!(app.deliver(&completed).await.0, StatusCode::OK);
    let abandoned = eventually("the refused email to be given up on", || async {
        let deliveries = app.emails_settled().await;
        (deliveries.len() == 1).then(|| deliveries.into_iter().next().unwrap())
    })
    .await;
    assert_eq!(abandoned.order_id, Some(refused));
    assert_eq!((abandoned.status.as_str(), abandoned.attempts), ("abandoned", 1));
    let error = abandoned.last_error.unwrap();
    assert!(error.contains("550") && error.contains("gone@example.com"), "{error}");
    assert_eq!(app.email_endpoints().await[0].3, None, "the endpoint is not disabled");

    let later = app.fulfilled_purchase("heidi", "credits_100").await;
    let received = all_received(&app, &server, 1).await;
    assert_eq!(received[0]["rcpt_tos"], json!([BUYER]));
    assert_eq!(
        header(&received[0], "Message-ID"),
        format!("<order-{}@shop.example>", later.order_id)
    );
    let (_, configured, failures, disabled) = app.email_endpoints().await.remove(0);
    assert!(configured && failures == 0 && disabled.is_none());

    let (ok, listed, stderr) = app.run_entitle(&["deliveries", "--failed"]).await;
    assert!(ok, "{stderr}");
    assert!(
        listed.contains(&format!("  email    smtp://127.0.0.1:{}  healthy", server.port)),
        "{listed}"
    );
    assert!(listed.contains("  email    msg_"), "{listed}");
    assert!(listed.contains("order.confirmation  user heidi"), "{listed}");
    assert!(listed.contains("ABANDONED after 1 attempt"), "{listed}");
    assert!(listed.contains("550"), "{listed}");
    assert_eq!(
        listed.matches("order.confirmation").count(),
        1,
        "only the failed one: {listed}"
    );
}

#[tokio::test]
async fn given_a_buyer_who_gave_no_address_then_that_email_is_abandoned_unsent_and_the_endpoint_stays_healthy() {
    let server = SmtpServer::start(SmtpOptions::default());
    let app = TestApp::spawn_with(emailing(&server)).await;
    let (order_id, session_id) = app.checkout("mia", "credits_100").await;
    let mut completed = app.pay(&session_id, PaymentResult::Card).remove(0);
    completed["data"]["object"]["customer_details"]["email"] = Value::Null;
    assert_eq!(app.deliver(&completed).await.0, StatusCode::OK);
    assert_eq!(app.credits("mia").await, 100, "the order is fulfilled all the same");

    let deliveries = app.emails_settled().await;
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].order_id, Some(order_id));
    assert_eq!(deliveries[0].status, "abandoned");
    let error = deliveries[0].last_error.as_deref().unwrap();
    assert!(error.contains("no buyer email address"), "{error}");
    let (_, configured, failures, disabled) = app.email_endpoints().await.remove(0);
    assert!(configured && failures == 0 && disabled.is_none());

    let later = app.fulfilled_purchase("mia", "credits_100").await;
    let received = all_received(&app, &server, 1).await;
    assert_eq!(
        header(&received[0], "Message-ID"),
        format!("<order-{}@shop.example>", later.order_id)
    );
}

#[tokio::test]
async fn entitle_redeliver_sends_an_orders_email_again_as_the_same_message() {
    let server = SmtpServer::start(SmtpOptions::default());
    let app = TestApp::spawn_with(emailing(&server)).await;
    let purchase = app.fulfilled_purchase("ivan", "credits_100").await;
    let first = all_received(&app, &server, 1).await.remove(0);
    let delivery = app.email_deliveries().await.remove(0);

    let (ok, report, stderr) = app.run_entitle(&["redeliver", &delivery.id.to_string()]).await;
    assert!(ok, "{stderr}");
    assert!(
        report.contains("1 delivery is pending again, due now (1 delivered before"),
        "{report}"
    );
    let received = all_received(&app, &server, 2).await;
    let message_id = format!("<order-{}@shop.example>", purchase.order_id);
    assert!(received.iter().all(|m| header(m, "Message-ID") == message_id));
    assert_eq!(received[1]["text"], first["text"], "the same email");
    assert_eq!(app.email_deliveries().await[0].attempts, 2);
}

#[tokio::test]
async fn in_emulator_mode_without_smtp_url_the_email_of_a_paid_order_shows_at_dev_mail() {
    let app = TestApp::spawn_in_emulator_mode().await;
    let token = app.dev_token("judy").await;
    let (status, body) = app
        .post_json("/checkout-session", Some(&token), &json!({ "planId": "credits_100" }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let order_id = body["orderId"].as_str().unwrap().to_owned();
    let session_id = body["checkoutUrl"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    // The emulator signs and delivers the payment's events to the app itself.
    app.pay(&session_id, PaymentResult::Card);

    let emails = eventually("the email in the dev mailbox", || async {
        let (_, mailbox) = app.get("/dev/mail.json", None).await;
        let emails = mailbox["emails"].as_array().cloned().unwrap_or_default();
        (!emails.is_empty()).then_some(emails)
    })
    .await;
    assert_eq!(emails.len(), 1, "{emails:#?}");
    let email = &emails[0];
    assert_eq!(email["orderId"], order_id.as_str());
    assert_eq!(email["to"], BUYER);
    assert_eq!(email["subject"], "Order confirmed: 100 credits");
    assert!(email["text"].as_str().unwrap().contains("$5.00"), "{email:#}");
    assert_eq!(email["messageId"], format!("<order-{order_id}@example.com>").as_str());
    assert_eq!(app.email_endpoints().await, [("dev-mailbox:".into(), true, 0, None)]);
}

#[tokio::test]
async fn with_no_mailer_no_email_message_is_written_and_a_mailer_removed_leaves_its_endpoint_unconfigured() {
    let app = TestApp::spawn().await;
    app.fulfilled_purchase("kim", "credits_100").await;
    let email_rows: i64 = sqlx::query_scalar(
        "select (select count(*) from outbox_messages where kind = 'email')
              + (select count(*) from outbox_endpoints where kind = 'email')",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(email_rows, 0);

    // An instance with a mailer configures the endpoint; one started after it without a mailer
    // takes it out of use, so the next payment writes no email.
    let server = SmtpServer::start(SmtpOptions::default());
    let with_mailer = entitle::config::Config {
        email: smtp_delivery(&server),
        ..app.config.clone()
    };
    app.start_beside(with_mailer).await;
    assert_eq!(app.email_endpoints().await.len(), 1);
    app.start_beside(app.config.clone()).await;
    let (_, configured, _, _) = app.email_endpoints().await.remove(0);
    assert!(!configured);
    app.fulfilled_purchase("kim", "credits_100").await;
    assert_eq!(app.confirmations().await, 0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(server.received().is_empty());
}

#[tokio::test]
async fn a_payment_that_rolls_back_writes_no_email() {
    let server = SmtpServer::start(SmtpOptions::default());
    let app = TestApp::spawn_with(emailing(&server)).await;
    let (order_id, _) = app.checkout("liam", "credits_100").await;

    let mut tx = app.db.begin().await.unwrap();
    sqlx::query("update orders set status = 'paid', paid_at = now() where id = $1")
        .bind(order_id)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(app.confirmations().await, 0);

    // The same change committed writes it, so the trigger was there to fire.
    sqlx::query("update orders set status = 'paid', paid_at = now() where id = $1")
        .bind(order_id)
        .execute(&app.db)
        .await
        .unwrap();
    assert_eq!(app.confirmations().await, 1);
}
