//! Spawns the application as production runs it (same startup path, port 0) against a fresh
//! database and a Stripe emulator on its own port, and speaks to it like a frontend and like Stripe.

use std::{
    collections::HashMap,
    time::{SystemTime, UNIX_EPOCH},
};

use entitle::{
    config::{
        AppWebhooks, CheckoutLimits, Config, ConnectionLimits, EmailDelivery, JobIntervals, LogFormat, OutboxSettings,
        RETURN_SYNC_RATE, Secret, StripeBackend,
    },
    mail::Mailer,
    outbox::signing::SigningKey,
    startup::Application,
    stripe::signature::sign_stripe_payload,
    stripe_emulator::{PaymentResult, StripeEmulator},
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

pub const WEBHOOK_SECRET: &str = "whsec_test_primary_secret";
pub const JWT_SECRET: &str = "test-jwt-secret-that-is-long-enough-for-hs256";
/// The app backend's key for `/v1/`.
pub const API_KEY: &str = "ek_test_0123456789abcdefghijklmnopqrstuvwxyz";
/// What the app's webhooks are signed with (32 bytes, base64), and its receiver verifies them with.
pub const APP_WEBHOOK_SECRET: &str = "whsec_ZW50aXRsZS10ZXN0cy1hcHAtd2ViaG9vay1rZXkhISE=";

pub fn admin_database_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

pub struct TestApp {
    pub address: String,
    pub db: PgPool,
    pub db_name: String,
    pub emulator: StripeEmulator,
    pub http: reqwest::Client,
    /// The configuration the app runs with, for operator commands run beside it.
    pub config: Config,
    /// A client for the emulator, as the app builds it.
    pub stripe: entitle::stripe::StripeApi,
    /// The app's own mailer (the dev mailbox in emulator mode), to send through as the outbox does.
    pub mailer: Option<Mailer>,
    /// In emulator mode: where the emulator's API is served on a port of its own, e.g.
    /// `http://127.0.0.1:40123` (its `/v1/…` at the root).
    pub emulator_api: Option<String>,
    /// How the app names itself in `job_runs`.
    pub instance_id: Uuid,
}

pub struct Options {
    /// Extra webhook secrets configured after the primary one (secret rotation).
    pub extra_webhook_secrets: Vec<&'static str>,
    /// Longer than any wait in the tests by default, so a long-poll answered early was woken by
    /// its notification and not by the re-read timer.
    pub order_status_reread: std::time::Duration,
    /// The key the app runs with; its prefix sets the mode (the emulator accepts any key).
    pub stripe_secret_key: &'static str,
    /// By default far above what any test opens as one user, so only the limit's own tests meet it.
    pub checkout_limits: CheckoutLimits,
    /// The app's webhook endpoints; none by default, so no outbox message is written.
    pub app_webhook_urls: Vec<String>,
    /// By default in tenths of seconds, so retries and leases run out within a test's patience.
    pub outbox: OutboxSettings,
    /// The server's defaults unless a test of them needs them short.
    pub connection_limits: ConnectionLimits,
    /// `METRICS_TOKEN`; none by default, so `/metrics` is open.
    pub metrics_token: Option<&'static str>,
    /// `ADMIN_TOKEN`; none by default, so `/admin` is closed (the tests run with a real-looking key).
    pub admin_token: Option<&'static str>,
    /// JWKS, issuer, audience and user claim of user tokens; none by default.
    pub user_auth: entitle::config::UserAuth,
    /// Where confirmation emails go; off by default, so no email message is written.
    pub email: EmailDelivery,
    /// The periodic jobs' intervals: the server's defaults, far longer than a test.
    pub jobs: JobIntervals,
    /// A catalog of the test's own instead of the shipped `plans.toml`.
    pub plans_file: Option<std::path::PathBuf>,
    /// `AUTOMATIC_TAX`; off by default.
    pub automatic_tax: bool,
}

/// Outbox timings short enough for tests: retries within a fraction of a second, a lease that
/// outlives the send timeout by a second.
pub fn fast_outbox() -> OutboxSettings {
    OutboxSettings {
        concurrency: 8,
        lease: std::time::Duration::from_secs(3),
        sweep: std::time::Duration::from_millis(100),
        retry_first: std::time::Duration::from_millis(200),
        retry_max: std::time::Duration::from_secs(1),
        give_up_after: std::time::Duration::from_secs(3 * 86_400),
        send_timeout: std::time::Duration::from_secs(2),
    }
}

impl Default for Options {
    fn default() -> Self {
        Self {
            extra_webhook_secrets: Vec::new(),
            order_status_reread: std::time::Duration::from_secs(600),
            stripe_secret_key: "sk_test_emulated",
            checkout_limits: CheckoutLimits {
                per_user_per_minute: 1000,
                ..CheckoutLimits::default()
            },
            app_webhook_urls: Vec::new(),
            outbox: fast_outbox(),
            connection_limits: ConnectionLimits {
                header_timeout: std::time::Duration::from_secs(65),
                max_connections: 4096,
            },
            metrics_token: None,
            admin_token: None,
            user_auth: Default::default(),
            email: EmailDelivery::Off,
            jobs: JobIntervals::default(),
            plans_file: None,
            automatic_tax: false,
        }
    }
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(Options::default()).await
    }

    pub async fn spawn_with(options: Options) -> Self {
        init_test_logging();
        let (db_name, database_url) = create_test_database().await;

        let emulator_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let emulator_base = format!("http://{}", emulator_listener.local_addr().unwrap());
        let emulator = StripeEmulator::new(&emulator_base);
        tokio::spawn(axum::serve(emulator_listener, emulator.router()).into_future());

        let mut webhook_secrets = vec![Secret::new(WEBHOOK_SECRET)];
        webhook_secrets.extend(options.extra_webhook_secrets.iter().map(|s| Secret::new(*s)));
        let config = Config {
            database_url: Secret::new(database_url.clone()),
            database_max_connections: 10,
            bind_addr: "127.0.0.1:0".parse().unwrap(),
            emulator_addr: "127.0.0.1:0".parse().unwrap(),
            app_base_url: "http://localhost:5173".into(),
            stripe: StripeBackend::Api {
                secret_key: Secret::new(options.stripe_secret_key),
                api_base: emulator_base,
            },
            webhook_secrets,
            webhook_tolerance: std::time::Duration::from_secs(300),
            jwt_secret: Some(Secret::new(JWT_SECRET)),
            user_auth: options.user_auth,
            api_keys: vec![Secret::new(API_KEY)],
            api_key_generated: false,
            metrics_token: options.metrics_token.map(Secret::new),
            admin_token: options.admin_token.map(Secret::new),
            plans_file: options
                .plans_file
                .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/plans.toml").into()),
            automatic_tax: options.automatic_tax,
            emulator_chaos: Default::default(),
            entitlement_grace: std::time::Duration::from_secs(86_400),
            order_status_reread: options.order_status_reread,
            reconciler_max_attempts: 5,
            jobs: options.jobs,
            drift_check: entitle::config::DriftCheck::default(),
            checkout_limits: options.checkout_limits,
            return_sync_rate: RETURN_SYNC_RATE,
            app_webhooks: AppWebhooks {
                keys: match options.app_webhook_urls.is_empty() {
                    true => Vec::new(),
                    false => vec![SigningKey::from_whsec(APP_WEBHOOK_SECRET).unwrap()],
                },
                urls: options.app_webhook_urls,
            },
            outbox: options.outbox,
            connection_limits: options.connection_limits,
            log_format: LogFormat::Text,
            email: options.email,
            billing_portal_return_url: "http://localhost:5173/account".into(),
        };
        let stripe = entitle::startup::stripe_client(&config, config.bind_addr, Default::default()).unwrap();
        let app = Application::build(config.clone())
            .await
            .expect("the application starts");
        let address = format!("http://127.0.0.1:{}", app.port());
        Self::serve(app, address, (db_name, database_url), emulator, config, stripe).await
    }

    /// The app as `cargo run` starts it with nothing configured: the built-in emulator serves Stripe's
    /// API and hosted pages in the same process and delivers signed webhooks to the app.
    pub async fn spawn_in_emulator_mode() -> Self {
        Self::spawn_in_emulator_mode_with(&[]).await
    }

    /// Emulator mode with extra environment variables, e.g. the chaos knobs.
    pub async fn spawn_in_emulator_mode_with(extra: &[(&'static str, &str)]) -> Self {
        init_test_logging();
        let (db_name, database_url) = create_test_database().await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://localhost:{}", listener.local_addr().unwrap().port());
        let mut vars = HashMap::from([
            ("DATABASE_URL", database_url.clone()),
            ("APP_BASE_URL", address.clone()),
            (
                "PLANS_FILE",
                concat!(env!("CARGO_MANIFEST_DIR"), "/plans.toml").to_owned(),
            ),
            // Any free port: tests run side by side, and 12111 may be someone's stripe-mock.
            ("STRIPE_EMULATOR_ADDR", "127.0.0.1:0".to_owned()),
        ]);
        vars.extend(extra.iter().map(|(name, value)| (*name, value.to_string())));
        let config = Config::from_lookup(|name| vars.get(name).cloned()).unwrap();
        assert!(config.stripe.is_emulator());
        let own_addr = listener.local_addr().unwrap();
        let stripe = entitle::startup::stripe_client(&config, own_addr, Default::default()).unwrap();
        let app = Application::build_on(listener, config.clone())
            .await
            .expect("the application starts");
        let emulator = app.emulator().expect("emulator mode has an emulator").clone();
        Self::serve(app, address, (db_name, database_url), emulator, config, stripe).await
    }

    /// Runs the built app in the background and connects the test's own pool to its database.
    async fn serve(
        app: Application,
        address: String,
        (db_name, database_url): (String, String),
        emulator: StripeEmulator,
        config: Config,
        stripe: entitle::stripe::StripeApi,
    ) -> Self {
        let mailer = app.mailer().cloned();
        let instance_id = app.instance_id();
        let emulator_api = app.emulator_api_port().map(|port| format!("http://127.0.0.1:{port}"));
        tokio::spawn(app.run_until_stopped());
        let db = PgPool::connect(&database_url).await.unwrap();
        Self {
            address,
            db,
            db_name,
            emulator,
            http: reqwest::Client::new(),
            config,
            stripe,
            mailer,
            emulator_api,
            instance_id,
        }
    }

    /// The configuration of another deployment on this app's database, with another Stripe backend:
    /// for starting a second instance, as after a redeploy that changed the environment.
    pub fn config_on_same_database(&self, stripe: StripeBackend) -> Config {
        Config {
            stripe,
            ..self.config.clone()
        }
    }

    /// Starts another instance with `config` (e.g. on this app's database) and returns its address.
    pub async fn start_beside(&self, config: Config) -> String {
        let other = Application::build(config).await.expect("the other instance starts");
        let address = format!("http://127.0.0.1:{}", other.port());
        tokio::spawn(other.run_until_stopped());
        address
    }

    /// Signs in through the emulator-mode dev endpoint, as the demo shop does.
    pub async fn dev_token(&self, user: &str) -> String {
        let (status, body) = self.post_json("/dev/token", None, &json!({ "userId": user })).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["token"].as_str().unwrap().to_owned()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn post_json(&self, path: &str, token: Option<&str>, body: &Value) -> (StatusCode, Value) {
        let mut request = self.http.post(self.url(path)).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        read(request.send().await.unwrap()).await
    }

    /// A call of the server API with the app backend's key: status, `Idempotent-Replayed`, body.
    pub async fn api_post(&self, path: &str, body: &Value) -> (StatusCode, bool, Value) {
        let response = self
            .http
            .post(self.url(path))
            .bearer_auth(API_KEY)
            .json(body)
            .send()
            .await
            .unwrap();
        let replayed = response
            .headers()
            .get("idempotent-replayed")
            .is_some_and(|v| v == "true");
        let (status, body) = read(response).await;
        (status, replayed, body)
    }

    pub async fn api_get(&self, path: &str) -> (StatusCode, Value) {
        self.get(path, Some(API_KEY)).await
    }

    /// `GET /v1/users/{user}/balance`, asserted 200.
    pub async fn balance(&self, user: &str) -> Value {
        let (status, body) = self.api_get(&format!("/v1/users/{user}/balance")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// Gives the user `credits` through `POST /v1/grants`, asserted 200; the grant's id.
    pub async fn grant_credits(&self, user: &str, credits: i64) -> String {
        let body = json!({
            "userId": user, "credits": credits, "reason": "test",
            "idempotencyKey": format!("grant-{}", Uuid::new_v4()),
        });
        let (status, _, body) = self.api_post("/v1/grants", &body).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    /// Every ledger row of the user summed, for checking a balance against its rows.
    pub async fn ledger_sum(&self, user: &str) -> i64 {
        sqlx::query_scalar::<_, i64>("select coalesce(sum(delta), 0)::bigint from credit_ledger where user_id = $1")
            .bind(user)
            .fetch_one(&self.db)
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        let mut request = self.http.get(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        read(request.send().await.unwrap()).await
    }

    /// Starts a checkout as `user` would and returns (order id, Stripe session id).
    /// `POST /checkout-session` as `user` for `plan_id`, whatever the answer.
    pub async fn try_checkout(&self, user: &str, plan_id: &str) -> (StatusCode, Value) {
        self.post_json(
            "/checkout-session",
            Some(&token_for(user)),
            &json!({ "planId": plan_id }),
        )
        .await
    }

    pub async fn checkout(&self, user: &str, plan_id: &str) -> (Uuid, String) {
        let (status, body) = self.try_checkout(user, plan_id).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let order_id = Uuid::parse_str(body["orderId"].as_str().unwrap()).unwrap();
        let session_id = body["checkoutUrl"]
            .as_str()
            .unwrap()
            .rsplit('/')
            .next()
            .unwrap()
            .to_owned();
        (order_id, session_id)
    }

    /// The emulator's `POST /v1/checkout/sessions` requests, oldest first (a first checkout also
    /// creates the user's customer).
    pub fn session_creations(&self) -> Vec<entitle::stripe_emulator::RecordedRequest> {
        self.emulator
            .requests()
            .into_iter()
            .filter(|r| r.method == "POST" && r.path == "/v1/checkout/sessions")
            .collect()
    }

    /// The customer pays on the hosted page; returns the events Stripe would send, oldest first.
    pub fn pay(&self, session_id: &str, result: PaymentResult) -> Vec<Value> {
        self.emulator
            .pay_session(session_id, result)
            .expect("the session is open")
    }

    pub async fn order_status(&self, user: &str, order_id: Uuid) -> Value {
        let (status, body) = self
            .post_json("/order-status", Some(&token_for(user)), &json!({ "orderId": order_id }))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// Orders of every user, whatever their status.
    pub async fn order_count(&self) -> i64 {
        sqlx::query_scalar("select count(*) from orders")
            .fetch_one(&self.db)
            .await
            .unwrap()
    }

    pub async fn credits(&self, user: &str) -> i64 {
        let (status, body) = self.get("/entitlements", Some(&token_for(user))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["credits"].as_i64().unwrap()
    }

    /// Delivers an event as Stripe does: the exact bytes, signed now with the primary secret.
    pub async fn deliver(&self, event: &Value) -> (StatusCode, Value) {
        let body = serde_json::to_vec(event).unwrap();
        let header = sign_stripe_payload(&body, WEBHOOK_SECRET, unix_now());
        self.deliver_raw(body, Some(&header)).await
    }

    pub async fn deliver_raw(&self, body: Vec<u8>, signature: Option<&str>) -> (StatusCode, Value) {
        let mut request = self
            .http
            .post(self.url("/payment-webhook"))
            .header("content-type", "application/json")
            .body(body);
        if let Some(signature) = signature {
            request = request.header("stripe-signature", signature);
        }
        read(request.send().await.unwrap()).await
    }

    pub async fn processed_event_count(&self) -> i64 {
        sqlx::query_scalar("select count(*) from processed_webhook_events")
            .fetch_one(&self.db)
            .await
            .unwrap()
    }

    pub async fn ledger_rows(&self, order_id: Uuid) -> i64 {
        sqlx::query_scalar("select count(*) from credit_ledger where order_id = $1")
            .bind(order_id)
            .fetch_one(&self.db)
            .await
            .unwrap()
    }
}

/// A fresh, empty database nobody has started on yet: (name, URL).
pub async fn fresh_database() -> (String, String) {
    create_test_database().await
}

async fn create_test_database() -> (String, String) {
    let db_name = format!("entitle_test_{}", Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&format!("{}/postgres", admin_database_url()))
        .await
        .expect("PostgreSQL must be reachable at TEST_DATABASE_URL (default postgres://postgres@127.0.0.1:5432)");
    sqlx::query(&format!("create database {db_name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let database_url = format!("{}/{db_name}", admin_database_url());
    (db_name, database_url)
}

async fn read(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, body)
}

pub fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// A token as the app's own auth would issue it: HS256, `sub` = user id, one hour to live.
pub fn token_for(user: &str) -> String {
    token_with(json!({ "sub": user, "exp": unix_now() + 3600 }), JWT_SECRET)
}

pub fn token_with(claims: Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// Asserts the service's error shape and returns the error code.
pub fn error_code(body: &Value) -> &str {
    assert!(
        body["error"]["message"].is_string(),
        "error body without a message: {body}"
    );
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("error body without a code: {body}"))
}

/// An event for `session_id` of the given type, built from the session as the emulator holds it.
pub fn event_for(app: &TestApp, event_type: &str, session_id: &str) -> Value {
    let session = app.emulator.session(session_id).expect("a known session");
    json!({
        "id": format!("evt_test_{}", Uuid::new_v4().simple()),
        "object": "event",
        "api_version": "2025-09-30.clover",
        "created": unix_now(),
        "data": { "object": session },
        "livemode": false,
        "pending_webhooks": 1,
        "request": { "id": null, "idempotency_key": null },
        "type": event_type,
    })
}

/// Shows the service's logs in a failing test's output: `TEST_LOG=1 cargo test`.
pub fn init_test_logging() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("entitle=debug")
            .with_test_writer()
            .try_init();
    }
}

/// What the credit tables hold in all, to show that a refused request wrote nothing.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct CreditRows {
    pub ledger: i64,
    pub spends: i64,
    pub grants: i64,
    pub accounts: i64,
    pub remaining: i64,
}

impl TestApp {
    /// A request with any `Authorization` header (or none) and any body (or none), as a client that
    /// gets auth wrong would send it: (status, body).
    pub async fn request_with_auth(
        &self,
        method: reqwest::Method,
        path: &str,
        authorization: Option<&str>,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method, self.url(path));
        if let Some(authorization) = authorization {
            request = request.header("authorization", authorization);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        read(request.send().await.unwrap()).await
    }

    /// `POST /v1/usage` for `user`: (status, replayed, body).
    pub async fn usage(&self, user: &str, credits: i64, key: &str) -> (StatusCode, bool, Value) {
        self.api_post(
            "/v1/usage",
            &json!({ "userId": user, "credits": credits, "idempotencyKey": key }),
        )
        .await
    }

    /// `POST /v1/reservations` for `user`, with the default TTL when `ttl_seconds` is `None`.
    pub async fn reserve(
        &self,
        user: &str,
        credits: i64,
        key: &str,
        ttl_seconds: Option<i64>,
    ) -> (StatusCode, bool, Value) {
        let mut body = json!({ "userId": user, "credits": credits, "idempotencyKey": key });
        if let Some(ttl) = ttl_seconds {
            body["ttlSeconds"] = json!(ttl);
        }
        self.api_post("/v1/reservations", &body).await
    }

    /// `POST /v1/reservations/{id}/commit` with `credits` (all of it when `None`).
    pub async fn commit_reservation(&self, id: &str, credits: Option<i64>) -> (StatusCode, Value) {
        let body = match credits {
            Some(credits) => json!({ "credits": credits }),
            None => json!({}),
        };
        let (status, _, body) = self.api_post(&format!("/v1/reservations/{id}/commit"), &body).await;
        (status, body)
    }

    /// `POST /v1/reservations/{id}/release`.
    pub async fn release_reservation(&self, id: &str) -> (StatusCode, Value) {
        let (status, _, body) = self
            .api_post(&format!("/v1/reservations/{id}/release"), &json!({}))
            .await;
        (status, body)
    }

    /// Gives `user` `credits` that expire at `expires_at` (RFC 3339) through `POST /v1/grants`,
    /// asserted 200; the grant as answered.
    pub async fn grant_expiring(&self, user: &str, credits: i64, expires_at: &str) -> Value {
        let body = json!({
            "userId": user, "credits": credits, "reason": "test", "expiresAt": expires_at,
            "idempotencyKey": format!("grant-{}", Uuid::new_v4()),
        });
        let (status, _, body) = self.api_post("/v1/grants", &body).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// The balance, asserted consistent with the ledger: available − overdrawn is the sum of the
    /// user's rows, every row names its cause, no grant has less than nothing left, and what the
    /// grants list holds is what is available. Returns the balance.
    pub async fn consistent_balance(&self, user: &str) -> Value {
        let balance = self.balance(user).await;
        let credits = &balance["credits"];
        let (available, reserved, overdrawn) = (
            credits["available"].as_i64().unwrap(),
            credits["reserved"].as_i64().unwrap(),
            credits["overdrawn"].as_i64().unwrap(),
        );
        assert!(available >= 0 && reserved >= 0 && overdrawn >= 0, "{balance}");
        assert!(
            available == 0 || overdrawn == 0,
            "credits are available while some are owed: {balance}"
        );
        let sum = self.ledger_sum(user).await;
        assert_eq!(
            available - overdrawn,
            sum,
            "available − overdrawn is not the sum of the ledger rows for {user}: {balance}\n{:?}",
            self.ledger_of(user).await
        );
        let in_grants: i64 = balance["grants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["remaining"].as_i64().unwrap())
            .sum();
        assert_eq!(in_grants, available, "the grants listed do not add up: {balance}");
        let causeless: i64 = sqlx::query_scalar(
            "select count(*) from credit_ledger
             where user_id = $1 and grant_id is null and spend_id is null and order_id is null",
        )
        .bind(user)
        .fetch_one(&self.db)
        .await
        .unwrap();
        assert_eq!(causeless, 0, "ledger rows naming no cause for {user}");
        let negative: i64 = sqlx::query_scalar("select count(*) from credit_grants where remaining < 0")
            .fetch_one(&self.db)
            .await
            .unwrap();
        assert_eq!(negative, 0, "a grant has less than nothing left");
        balance
    }

    /// The user's ledger rows, oldest first, as (kind, delta).
    pub async fn ledger_of(&self, user: &str) -> Vec<(String, i64)> {
        sqlx::query_as("select kind, delta from credit_ledger where user_id = $1 order by id")
            .bind(user)
            .fetch_all(&self.db)
            .await
            .unwrap()
    }

    /// Counts of every credit table, and every grant's remaining credits summed.
    pub async fn credit_rows(&self) -> CreditRows {
        let (ledger, spends, grants, accounts, remaining): (i64, i64, i64, i64, i64) = sqlx::query_as(
            "select (select count(*) from credit_ledger), (select count(*) from credit_spends),
                    (select count(*) from credit_grants), (select count(*) from credit_accounts),
                    (select coalesce(sum(remaining), 0)::bigint from credit_grants)",
        )
        .fetch_one(&self.db)
        .await
        .unwrap();
        CreditRows {
            ledger,
            spends,
            grants,
            accounts,
            remaining,
        }
    }
}

/// `at` as RFC 3339 in UTC, to the millisecond (what a client would send).
pub fn rfc3339(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Sleeps until `at` (RFC 3339) has passed by `margin`.
pub async fn sleep_past(at: &str, margin: std::time::Duration) {
    let at = chrono::DateTime::parse_from_rfc3339(at)
        .unwrap()
        .with_timezone(&chrono::Utc);
    let wait = (at - chrono::Utc::now()).to_std().unwrap_or_default() + margin;
    tokio::time::sleep(wait).await;
}

impl TestApp {
    /// Ends every session the app has open on its database, as a restart or a failover does, while
    /// the database stays up; how many there were.
    pub async fn kill_app_connections(&self) -> i64 {
        let mut admin = PgConnection::connect(&format!("{}/postgres", admin_database_url()))
            .await
            .unwrap();
        // The test's own pool goes too; it pings before use and reconnects.
        sqlx::query_scalar(
            "select count(*) from (select pg_terminate_backend(pid) from pg_stat_activity where datname = $1) k",
        )
        .bind(&self.db_name)
        .fetch_one(&mut admin)
        .await
        .unwrap()
    }
}

impl TestApp {
    /// Closes the app's database to new connections and ends those open (`false`), as an outage
    /// does, or opens it again (`true`).
    pub async fn set_database_accepting(&self, accepting: bool) {
        let mut admin = PgConnection::connect(&format!("{}/postgres", admin_database_url()))
            .await
            .unwrap();
        sqlx::query(&format!(
            "alter database {} allow_connections {accepting}",
            self.db_name
        ))
        .execute(&mut admin)
        .await
        .unwrap();
        if !accepting {
            sqlx::query("select pg_terminate_backend(pid) from pg_stat_activity where datname = $1")
                .bind(&self.db_name)
                .execute(&mut admin)
                .await
                .unwrap();
        }
    }
}

/// Runs a scenario whose setup must be done before something it sets to expire does: `attempt`
/// gets the attempt's number (to name fresh users and keys by) and how far ahead to set its
/// expiries, and answers `false` when its setup outlived them. It is then run again with twice
/// the time, so that a slow machine makes the test slower, never wrong.
pub async fn with_time_to_spare<F, Fut>(first: chrono::Duration, mut attempt: F)
where
    F: FnMut(u32, chrono::Duration) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut span = first;
    for n in 0..6 {
        if attempt(n, span).await {
            return;
        }
        span = span * 2;
    }
    panic!("six attempts and the setup never beat its own expiries");
}

/// Another instance on its own runtime, so a test can kill it as a crash would: every task it
/// runs (requests in flight, periodic jobs, senders) stops at once, and its database connections
/// (with any advisory lock they hold) close. Dropped, it is killed too.
pub struct KillableInstance {
    pub address: String,
    /// How it names itself in `job_runs`.
    pub instance_id: Uuid,
    runtime: Option<tokio::runtime::Runtime>,
}

impl KillableInstance {
    pub async fn start(config: Config) -> Self {
        tokio::task::spawn_blocking(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let app = runtime
                .block_on(Application::build(config))
                .expect("the other instance starts");
            let address = format!("http://127.0.0.1:{}", app.port());
            let instance_id = app.instance_id();
            runtime.spawn(app.run_until_stopped());
            Self {
                address,
                instance_id,
                runtime: Some(runtime),
            }
        })
        .await
        .unwrap()
    }

    pub fn kill(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for KillableInstance {
    fn drop(&mut self) {
        self.kill();
    }
}
