//! The order confirmation email through a real SMTP server (aiosmtpd, in its own process): what
//! arrives, the Message-ID every copy of one order's email shares, which failures are worth a retry,
//! delivery once a server that was down is back, and the dev mailbox `/dev/mail` shows in emulator
//! mode.

use std::time::{Duration, Instant};

use entitle::{
    config::EmailDelivery,
    mail::{MailError, Mailer, OrderEmail, message_id},
};
use reqwest::StatusCode;
use serde_json::Value;
use uuid::Uuid;

use crate::{
    helpers::TestApp,
    smtp_server::{SmtpOptions, SmtpServer, config_for, mailer_for},
};

const FROM: &str = "Entitle Shop <orders@shop.example>";

fn order_email(to: &str) -> OrderEmail {
    OrderEmail {
        order_id: Uuid::new_v4(),
        to: to.into(),
        plan_name: "Pro <Annual> & more".into(),
        amount: 500,
        currency: "usd".into(),
        granted: vec!["100 credits".into(), "Pro access until 2027-01-01".into()],
    }
}

fn header<'a>(message: &'a Value, name: &str) -> &'a str {
    message["headers"][name]
        .as_str()
        .unwrap_or_else(|| panic!("no {name} header in {message:#}"))
}

#[tokio::test]
async fn given_a_paid_order_when_its_email_is_sent_then_the_smtp_server_receives_both_parts_under_the_orders_message_id()
 {
    // A password with every character that must be percent-encoded in a URL.
    let server = SmtpServer::start(SmtpOptions {
        auth: Some(("mailer@shop.example", "p@ss:w0rd/%")),
        ..Default::default()
    });
    let mailer = mailer_for(&server.url(Some("mailer%40shop.example:p%40ss%3Aw0rd%2F%25")), FROM);
    let email = order_email("buyer@example.com");

    mailer.send(&email).await.unwrap();

    let received = server.wait_for(1).await;
    let message = &received[0];
    assert_eq!(
        message["auth_login"], "mailer@shop.example",
        "the URL's credentials were used"
    );
    assert_eq!(message["mail_from"], "orders@shop.example");
    assert_eq!(message["rcpt_tos"], serde_json::json!(["buyer@example.com"]));
    assert_eq!(
        header(message, "Message-ID"),
        format!("<order-{}@shop.example>", email.order_id)
    );
    assert_eq!(
        header(message, "Message-ID"),
        message_id(email.order_id, mailer.sender())
    );
    assert_eq!(header(message, "From"), FROM);
    assert_eq!(header(message, "To"), "buyer@example.com");
    assert_eq!(header(message, "Subject"), "Order confirmed: Pro <Annual> & more");
    assert!(
        chrono::DateTime::parse_from_rfc2822(header(message, "Date")).is_ok(),
        "{message:#}"
    );
    assert_eq!(message["content_type"], "multipart/alternative");
    assert_eq!(message["parts"], serde_json::json!(["text/plain", "text/html"]));

    let text = message["text"].as_str().unwrap();
    let html = message["html"].as_str().unwrap();
    for part in [text, html] {
        for expected in [
            "$5.00",
            &email.order_id.to_string(),
            "100 credits",
            "Pro access until 2027-01-01",
        ] {
            assert!(part.contains(expected), "{expected} missing from {part}");
        }
    }
    assert!(text.contains("Pro <Annual> & more"), "{text}");
    assert!(
        html.contains("Pro &lt;Annual&gt; &amp; more") && !html.contains("<Annual>"),
        "{html}"
    );
}

#[tokio::test]
async fn given_one_orders_email_sent_twice_as_after_a_crash_then_both_copies_carry_one_message_id() {
    let server = SmtpServer::start(SmtpOptions::default());
    let mailer = mailer_for(&server.url(None), FROM);
    let email = order_email("buyer@example.com");
    let other = order_email("buyer@example.com");

    mailer.send(&email).await.unwrap();
    mailer.send(&email).await.unwrap();
    mailer.send(&other).await.unwrap();

    let received = server.wait_for(3).await;
    let ids: Vec<&str> = received.iter().map(|m| header(m, "Message-ID")).collect();
    assert_eq!(ids[0], ids[1], "a resend is the same message");
    assert_ne!(ids[0], ids[2], "another order's email is another message");
    assert_eq!(ids[2], message_id(other.order_id, mailer.sender()));
}

#[tokio::test]
async fn given_the_smtp_server_is_down_when_the_email_is_sent_then_it_is_transient_and_it_goes_through_once_the_server_is_up()
 {
    let mut server = SmtpServer::on_free_port(SmtpOptions {
        auth: Some(("mailer", "down-hunter2")),
        ..Default::default()
    });
    let mailer = mailer_for(&server.url(Some("mailer:down-hunter2")), FROM);
    let email = order_email("buyer@example.com");

    let err = mailer.send(&email).await.unwrap_err();
    assert!(matches!(err, MailError::Transient(_)), "{err}");
    assert!(err.to_string().contains(&format!("127.0.0.1:{}", server.port)), "{err}");
    assert!(!format!("{err} {err:?}").contains("down-hunter2"), "{err:?}");

    // Down a while longer: still transient, still nothing delivered.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(mailer.send(&email).await.unwrap_err().is_transient());

    server.start_again();
    send_until_delivered(&mailer, &email).await;
    let received = server.wait_for(1).await;
    assert_eq!(
        header(&received[0], "Message-ID"),
        message_id(email.order_id, mailer.sender())
    );

    // And again after a restart: a fresh connection per email, nothing stale left behind.
    server.stop();
    assert!(mailer.send(&email).await.unwrap_err().is_transient());
    server.start_again();
    send_until_delivered(&mailer, &email).await;
    server.wait_for(2).await;
}

/// Retries as the outbox would, until the send succeeds or the deadline passes.
async fn send_until_delivered(mailer: &Mailer, email: &OrderEmail) {
    let started = Instant::now();
    loop {
        match mailer.send(email).await {
            Ok(()) => return,
            Err(err) if err.is_transient() && started.elapsed() < Duration::from_secs(60) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(err) => panic!("the server is up, yet: {err}"),
        }
    }
}

#[tokio::test]
async fn given_a_recipient_the_server_refuses_with_550_then_the_send_is_permanent() {
    let server = SmtpServer::start(SmtpOptions {
        reject: vec!["gone@example.com"],
        ..Default::default()
    });
    let mailer = mailer_for(&server.url(None), FROM);

    let err = mailer.send(&order_email("gone@example.com")).await.unwrap_err();

    assert!(matches!(err, MailError::Permanent(_)), "{err}");
    assert!(err.to_string().contains("550"), "{err}");
    assert!(server.received().is_empty());
}

#[tokio::test]
async fn given_a_recipient_the_server_defers_with_451_then_the_send_is_transient() {
    let server = SmtpServer::start(SmtpOptions {
        defer: vec!["busy@example.com"],
        ..Default::default()
    });
    let mailer = mailer_for(&server.url(None), FROM);

    let err = mailer.send(&order_email("busy@example.com")).await.unwrap_err();

    assert!(matches!(err, MailError::Transient(_)), "{err}");
    assert!(err.to_string().contains("451"), "{err}");
    assert!(server.received().is_empty());
}

#[tokio::test]
async fn given_credentials_the_server_refuses_then_the_send_is_transient_and_no_error_shows_the_password() {
    let server = SmtpServer::start(SmtpOptions {
        auth: Some(("mailer", "the-right-one")),
        ..Default::default()
    });
    // A settings mistake, not this email's: it should still go once SMTP_URL is fixed.
    let mailer = mailer_for(&server.url(Some("mailer:wrong-hunter2")), FROM);

    let err = mailer.send(&order_email("buyer@example.com")).await.unwrap_err();

    assert!(matches!(err, MailError::Transient(_)), "{err}");
    assert!(err.to_string().contains("535"), "{err}");
    let printed = format!("{err} {err:?}");
    assert!(
        !printed.contains("wrong-hunter2") && !printed.contains("the-right-one"),
        "{printed}"
    );
    assert!(server.received().is_empty());
    let config = format!("{:?}", config_for(&server.url(Some("mailer:wrong-hunter2")), FROM));
    assert!(!config.contains("wrong-hunter2"), "{config}");
}

#[tokio::test]
async fn given_a_server_that_accepts_the_connection_but_never_answers_then_the_send_times_out_as_transient() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let mut config = config_for(&format!("smtp://127.0.0.1:{port}"), FROM);
    let EmailDelivery::Smtp { server, .. } = &mut config.email else {
        panic!("SMTP_URL is set")
    };
    server.timeout = Duration::from_secs(1);
    let mailer = Mailer::from_config(&config.email).unwrap().unwrap();

    let started = Instant::now();
    let err = mailer.send(&order_email("buyer@example.com")).await.unwrap_err();

    assert!(err.is_transient(), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30), "the timeout did not apply");
    drop(silent);
}

#[tokio::test]
async fn in_emulator_mode_dev_mail_shows_the_email_a_buyer_gets_and_the_shop_links_to_it() {
    let app = TestApp::spawn_in_emulator_mode().await;
    let mailer = app.mailer.as_ref().expect("emulator mode keeps emails");
    let email = order_email("buyer@example.com");
    mailer.send(&email).await.unwrap();
    let expected_id = message_id(email.order_id, mailer.sender());

    let (status, mailbox) = app.get("/dev/mail.json", None).await;
    assert_eq!(status, StatusCode::OK, "{mailbox}");
    assert_eq!(mailbox["delivery"], "dev_mailbox");
    let kept = &mailbox["emails"][0];
    assert_eq!(kept["messageId"], expected_id.as_str());
    assert_eq!(kept["orderId"], email.order_id.to_string());
    assert_eq!(kept["to"], "buyer@example.com");
    assert_eq!(kept["subject"], "Order confirmed: Pro <Annual> & more");
    assert!(kept["text"].as_str().unwrap().contains("$5.00"));
    assert!(kept["html"].as_str().unwrap().contains("Pro &lt;Annual&gt; &amp; more"));
    assert!(
        kept["source"]
            .as_str()
            .unwrap()
            .contains(&format!("Message-ID: {expected_id}"))
    );

    let by_accept: Value = app
        .http
        .get(app.url("/dev/mail"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(by_accept, mailbox);

    let page = app.http.get(app.url("/dev/mail")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(
        page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );
    let page = page.text().await.unwrap();
    assert!(
        page.contains("Order confirmed: Pro &lt;Annual&gt; &amp; more"),
        "{page}"
    );
    assert!(page.contains(&format!("&lt;order-{}@", email.order_id)), "{page}");
    assert!(page.contains("buyer@example.com"));
    // The email's own HTML, escaped into a sandboxed frame: it is shown, never run as this page.
    assert!(
        page.contains("<iframe sandbox srcdoc=\"&lt;!doctype html&gt;"),
        "{page}"
    );
    assert!(page.contains("Pro &amp;lt;Annual&amp;gt; &amp;amp; more"), "{page}");
    assert!(!page.contains("<Annual>"), "{page}");

    let shop = app.http.get(app.url("/")).send().await.unwrap().text().await.unwrap();
    assert!(shop.contains("href=\"/dev/mail\""));
}

#[tokio::test]
async fn with_a_real_stripe_key_and_no_smtp_url_emails_are_off_and_there_is_no_dev_mail() {
    let app = TestApp::spawn().await;
    assert!(app.mailer.is_none());
    for path in ["/dev/mail", "/dev/mail.json"] {
        let (status, body) = app.get(path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
    }
}
