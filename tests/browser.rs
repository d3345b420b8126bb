//! The demo shop in a real browser: headless Chromium, driven over chromedriver, against the app in
//! emulator mode exactly as `cargo run` starts it. A buyer signs in, buys 100 credits and pays with
//! 4242…, sees "paid" and the credits, spends them 10 at a time until told there are not enough; a
//! declined card shows Stripe's error; cancel ends "canceled".
//! The operator dashboard too: an operator signs in with ADMIN_TOKEN, searches for the buyer,
//! opens their order and finds it again by its id.
//! Each final page is saved under target/screenshots/ for people to look at.

use std::{
    collections::HashMap,
    net::TcpListener as StdListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use entitle::{config::Config, startup::Application};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

struct Chromedriver(Child);

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn start_app() -> String {
    start_app_with(&[]).await
}

/// The app in emulator mode with more environment variables (`ADMIN_TOKEN`, say).
async fn start_app_with(extra: &[(&'static str, &str)]) -> String {
    let admin_url = std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    let db_name = format!("entitle_browser_{}", Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&format!("{admin_url}/postgres"))
        .await
        .expect("PostgreSQL is reachable");
    sqlx::query(&format!("create database {db_name}"))
        .execute(&mut admin)
        .await
        .unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://localhost:{}", listener.local_addr().unwrap().port());
    let mut vars = HashMap::from([
        ("DATABASE_URL", format!("{admin_url}/{db_name}")),
        ("APP_BASE_URL", address.clone()),
        (
            "PLANS_FILE",
            concat!(env!("CARGO_MANIFEST_DIR"), "/plans.toml").to_owned(),
        ),
        ("STRIPE_EMULATOR_ADDR", "127.0.0.1:0".to_owned()),
    ]);
    vars.extend(extra.iter().map(|(name, value)| (*name, value.to_string())));
    let config = Config::from_lookup(|name| vars.get(name).cloned()).unwrap();
    let app = Application::build_on(listener, config)
        .await
        .expect("the app starts in emulator mode");
    tokio::spawn(app.run_until_stopped());
    address
}

async fn start_browser() -> (Chromedriver, Client) {
    let port = StdListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let driver = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(Chromedriver)
        .expect("chromedriver must be installed (scripts/test installs Debian's chromium-driver)");
    let profile = std::env::temp_dir().join(format!("entitle-chromium-{}", Uuid::new_v4().simple()));
    let capabilities = json!({
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1000,900", format!("--user-data-dir={}", profile.display()),
            ]
        }
    });
    let capabilities = capabilities.as_object().unwrap().clone();
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    for _ in 0..100 {
        let mut builder = ClientBuilder::new(connector.clone());
        builder.capabilities(capabilities.clone());
        if let Ok(client) = builder.connect(&format!("http://127.0.0.1:{port}")).await {
            return (driver, client);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("could not start a Chromium session through chromedriver");
}

async fn screenshot(browser: &Client, name: &str) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let png = browser.screenshot().await.unwrap();
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

/// Waits until the return page shows a settled status, and returns it.
async fn wait_for_order_status(browser: &Client, expected: &str) {
    let status = browser
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css(&format!("#order-status[data-status='{expected}']")))
        .await;
    if status.is_err() {
        let shown = browser
            .find(Locator::Id("order-status"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        screenshot(browser, &format!("unexpected-{expected}")).await;
        panic!("expected order status {expected}, the page shows {shown:?}");
    }
}

async fn sign_in_to_shop(browser: &Client, shop: &str, user_id: &str) {
    browser.goto(shop).await.unwrap();
    let user = browser
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Id("user-id"))
        .await
        .unwrap();
    user.clear().await.unwrap();
    user.send_keys(user_id).await.unwrap();
    browser
        .find(Locator::Id("sign-in"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // The element is in the page from the start, hidden and empty: wait for what sign-in puts there.
    browser
        .wait()
        .at_most(WAIT)
        .for_element(Locator::XPath(&format!(
            "//strong[@id='signed-in-as' and text()='{user_id}']"
        )))
        .await
        .unwrap();
}

async fn buy_credits(browser: &Client, shop: &str) {
    browser.goto(shop).await.unwrap();
    browser
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Id("buy-credits_100"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Id("card-number"))
        .await
        .unwrap();
}

async fn pay_with_card(browser: &Client, number: &str) {
    browser
        .find(Locator::Id("card-number"))
        .await
        .unwrap()
        .send_keys(number)
        .await
        .unwrap();
    browser
        .find(Locator::Id("pay-button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

async fn use_ten_credits(browser: &Client) {
    let button = browser.find(Locator::Id("use-credits")).await.unwrap();
    // The page re-enables the button once the previous use has answered.
    for _ in 0..300 {
        if button.is_enabled().await.unwrap() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    button.click().await.unwrap();
}

#[tokio::test]
async fn a_buyer_pays_is_declined_and_cancels_in_a_real_browser() {
    let shop = start_app().await;
    let (_driver, browser) = start_browser().await;

    // Sign in and buy 100 credits with the card that succeeds.
    sign_in_to_shop(&browser, &shop, "browser-buyer").await;

    buy_credits(&browser, &shop).await;
    assert!(
        browser
            .current_url()
            .await
            .unwrap()
            .path()
            .starts_with("/stripe-emulator/c/pay/cs_test_")
    );
    pay_with_card(&browser, "4242 4242 4242 4242").await;
    wait_for_order_status(&browser, "paid").await;
    assert_eq!(browser.current_url().await.unwrap().path(), "/checkout/return");
    browser
        .wait()
        .at_most(WAIT)
        .for_element(Locator::XPath("//strong[@id='credits' and text()='100']"))
        .await
        .unwrap();
    screenshot(&browser, "paid").await;

    // "Use 10 credits" spends from the purchase's grant, which then shows what is left.
    browser
        .wait()
        .at_most(WAIT)
        .for_element(Locator::XPath("//table[@id='grants']//td[text()='100']"))
        .await
        .unwrap();
    use_ten_credits(&browser).await;
    for spent in [
        "//strong[@id='credits' and text()='90']",
        "//table[@id='grants']//td[text()='90']",
        "//span[@id='usage-result' and text()='Used 10 credits: 90 left.']",
    ] {
        browser
            .wait()
            .at_most(WAIT)
            .for_element(Locator::XPath(spent))
            .await
            .unwrap();
    }
    screenshot(&browser, "spent").await;
    // Spent down to nothing, one more use is refused in words a buyer understands.
    for left in (0..90).step_by(10).rev() {
        use_ten_credits(&browser).await;
        let result = format!("//span[@id='usage-result' and text()='Used 10 credits: {left} left.']");
        browser
            .wait()
            .at_most(WAIT)
            .for_element(Locator::XPath(&result))
            .await
            .unwrap();
    }
    use_ten_credits(&browser).await;
    let refused = "//span[@id='usage-result' and starts-with(text(), 'Not enough credits')]";
    browser
        .wait()
        .at_most(WAIT)
        .for_element(Locator::XPath(refused))
        .await
        .unwrap();
    screenshot(&browser, "not-enough-credits").await;

    // A declined card: the hosted page says so and nothing changes.
    buy_credits(&browser, &shop).await;
    pay_with_card(&browser, "4000 0000 0000 0002").await;
    let error = browser
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Id("card-error"))
        .await
        .unwrap();
    assert_eq!(error.text().await.unwrap(), "Your card was declined.");
    screenshot(&browser, "declined").await;

    // Then the buyer gives up: the return page shows the order canceled (by Stripe's webhook).
    browser
        .find(Locator::Id("cancel-link"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_order_status(&browser, "canceled").await;
    let credits = browser
        .find(Locator::Id("credits"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(credits, "0", "the declined and canceled orders granted nothing");
    screenshot(&browser, "canceled").await;

    browser.close().await.unwrap();
}

const ADMIN_TOKEN: &str = "browser-admin-token-0123456789abcdefghij";

#[tokio::test]
async fn an_operator_signs_in_searches_and_opens_an_order_in_a_real_browser() {
    let shop = start_app_with(&[("ADMIN_TOKEN", ADMIN_TOKEN)]).await;
    let (_driver, browser) = start_browser().await;

    // A paid order to look at, bought as a buyer would.
    sign_in_to_shop(&browser, &shop, "admin-browser-buyer").await;
    buy_credits(&browser, &shop).await;
    pay_with_card(&browser, "4242 4242 4242 4242").await;
    wait_for_order_status(&browser, "paid").await;

    // The dashboard asks for the token first.
    browser.goto(&format!("{shop}/admin")).await.unwrap();
    let token = wait_for(&browser, Locator::Id("token")).await;
    screenshot(&browser, "admin-sign-in").await;
    token.send_keys(ADMIN_TOKEN).await.unwrap();
    click(&browser, Locator::Id("sign-in")).await;
    wait_for(&browser, Locator::XPath("//h1[text()='Needs a person']")).await;
    browser.find(Locator::Id("webhook-rate")).await.unwrap();
    screenshot(&browser, "admin-overview").await;

    // The buyer's id finds their page, with the credits and the order.
    search(&browser, "admin-browser-buyer").await;
    wait_for(&browser, Locator::XPath("//dd[@id='available' and text()='100']")).await;
    screenshot(&browser, "admin-user").await;
    click(&browser, Locator::Css("#orders a[href^='/admin/orders/']")).await;
    let paid = Locator::Css("#order-status[data-status='paid']");
    wait_for(&browser, paid).await;
    let applied = browser.find_all(Locator::Css("tr.timeline-event")).await.unwrap();
    assert!(!applied.is_empty(), "the paying event is on the timeline");
    let order_page = browser.current_url().await.unwrap();
    screenshot(&browser, "admin-order").await;

    // The order's own id finds it too.
    let order_id = order_page.path().rsplit('/').next().unwrap().to_owned();
    // The search lands on the page already shown: until the old page is gone, its elements would
    // pass for the new one's (and go stale under the next click).
    let shown = browser.find(Locator::Css("html")).await.unwrap();
    search(&browser, &order_id).await;
    wait_until_gone(shown).await;
    wait_for(&browser, paid).await;
    assert_eq!(browser.current_url().await.unwrap().path(), order_page.path());

    // Signing out asks for the token again.
    click(&browser, Locator::Id("sign-out")).await;
    wait_for(&browser, Locator::Id("token")).await;

    browser.close().await.unwrap();
}

async fn search(browser: &Client, text: &str) {
    let field = wait_for(browser, Locator::Id("search")).await;
    field.clear().await.unwrap();
    field.send_keys(text).await.unwrap();
    click(browser, Locator::Id("search-button")).await;
}

async fn wait_for(browser: &Client, what: Locator<'_>) -> fantoccini::elements::Element {
    browser.wait().at_most(WAIT).for_element(what).await.unwrap()
}

/// Waits until `element`'s page has been replaced by another (the element is then stale).
async fn wait_until_gone(element: fantoccini::elements::Element) {
    let deadline = std::time::Instant::now() + WAIT;
    while element.tag_name().await.is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "the page was not replaced within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn click(browser: &Client, what: Locator<'_>) {
    browser.find(what).await.unwrap().click().await.unwrap();
}
