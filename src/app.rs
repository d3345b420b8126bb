//! The router: every route, and the layers around them (request id, trace, CORS, timeout, body
//! limits).

use std::time::{Duration, Instant};

use axum::{
    BoxError, Router,
    error_handling::HandleErrorLayer,
    extract::{DefaultBodyLimit, MatchedPath, Request, State},
    http::{HeaderName, HeaderValue, Method, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use tower::ServiceBuilder;
use tower_http::{
    cors::CorsLayer,
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    trace::TraceLayer,
};

use crate::{
    error::AppError,
    metrics::{Metrics, Route},
    routes,
    state::AppState,
};

/// No request may hold a connection or a client waiting longer than this. It stays above the
/// longest `/order-status` wait, so a long-poll always ends with its own answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const _: () = assert!(routes::order_status::MAX_WAIT_SECONDS < REQUEST_TIMEOUT.as_secs() as i64);
/// API requests are tiny JSON documents.
const MAX_API_BODY: usize = 64 * 1024;

pub fn router(state: AppState) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    let cors = CorsLayer::new()
        .allow_origin(HeaderValue::from_str(&state.config.app_base_url).expect("APP_BASE_URL was validated at startup"))
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, request_id.clone()])
        .expose_headers([request_id.clone()]);

    let mut app = Router::new()
        .route("/", get(routes::demo::demo_page))
        .route("/checkout/return", get(routes::demo::demo_page))
        .route("/checkout-session", post(routes::checkout::create_checkout))
        .route("/cancel-checkout", post(routes::cancel_checkout::cancel_checkout))
        .route("/order-status", post(routes::order_status::order_status))
        .route("/entitlements", get(routes::entitlements::entitlements))
        .route("/plans", get(routes::plans::plans))
        .route(
            "/subscription/change",
            post(routes::subscription_change::change_subscription),
        )
        .route("/healthz", get(routes::health::healthz))
        .route("/metrics", get(routes::metrics::metrics))
        // The app's backend, with an API key.
        .route("/v1/users/{user_id}/balance", get(routes::credits::balance))
        .route("/v1/check", post(routes::credits::check))
        .route("/v1/usage", post(routes::credits::usage))
        .route("/v1/reservations", post(routes::credits::reserve))
        .route("/v1/reservations/{id}/commit", post(routes::credits::commit))
        .route("/v1/reservations/{id}/release", post(routes::credits::release))
        .route("/v1/grants", post(routes::credits::grant))
        .route(
            "/payment-webhook",
            post(routes::webhook::payment_webhook).layer(DefaultBodyLimit::max(routes::webhook::MAX_WEBHOOK_BODY)),
        );
    if state.config.stripe.is_emulator() {
        // Anyone may sign in as anyone: only where nothing real can be bought.
        app = app
            .route("/dev/token", post(routes::dev_token::dev_token))
            // The demo shop's credits, spent by the buyer's own token: no API key in a browser.
            .route("/dev/credits", get(routes::dev_credits::demo_credits))
            .route("/dev/credits/use", post(routes::dev_credits::use_demo_credits))
            // The emails buyers would get, kept instead of sent while SMTP_URL is unset.
            .route("/dev/mail", get(routes::dev_mail::dev_mail))
            .route("/dev/mail.json", get(routes::dev_mail::dev_mail_json));
    }

    app.fallback(|| async {
        AppError::NotFound {
            code: "not_found",
            message: "No such route.",
        }
    })
    .method_not_allowed_fallback(|| async { AppError::MethodNotAllowed })
    .layer(DefaultBodyLimit::max(MAX_API_BODY))
    .layer(
        ServiceBuilder::new()
            .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
            .layer(middleware::from_fn_with_state(state.metrics.clone(), count_request))
            .layer(
                TraceLayer::new_for_http()
                    .make_span_with(|request: &Request| {
                        let request_id = request
                            .headers()
                            .get("x-request-id")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("");
                        let route = request.extensions().get::<MatchedPath>().map(MatchedPath::as_str);
                        tracing::info_span!(
                            "request",
                            method = %request.method(),
                            path = %request.uri().path(),
                            route,
                            request_id
                        )
                    })
                    // One line per request, with its status and latency as numbers: the access log.
                    .on_response(|response: &Response, latency: Duration, _: &tracing::Span| {
                        tracing::info!(
                            status = response.status().as_u16(),
                            latency_ms = latency.as_secs_f64() * 1000.0,
                            "finished processing request"
                        );
                    }),
            )
            .layer(PropagateRequestIdLayer::new(request_id))
            .layer(cors)
            .layer(HandleErrorLayer::new(|_: BoxError| async {
                AppError::Timeout.into_response()
            }))
            .timeout(REQUEST_TIMEOUT),
    )
    .with_state(state)
}

/// Counts and times every answer for `/metrics`, by the route's template, so the series are the
/// routes and not the paths asked for.
async fn count_request(State(metrics): State<Metrics>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = match *request.method() {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    };
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(Route::UNMATCHED, |path| Route::Matched(path.clone()));
    let response = next.run(request).await;
    metrics.http_request(method, route, response.status().as_u16(), started.elapsed());
    response
}
