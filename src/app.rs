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
    routing::get,
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
    openapi, routes,
    state::AppState,
};
use utoipa_axum::{router::OpenApiRouter, router::UtoipaMethodRouterExt, routes};

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

    routes(state.config.stripe.is_emulator())
        .0
        // The operator dashboard, behind ADMIN_TOKEN (open in emulator mode without one): pages
        // for people, listed in `openapi::UNDOCUMENTED_ROUTES`.
        .merge(routes::admin::router(state.clone()))
        .fallback(|| async {
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

/// Every route. Each API route is mounted with its document by `routes!`, which takes the path
/// and method from the handler's `#[utoipa::path]`: adding one is one line, and it cannot go
/// undocumented. Then the pages for people (`openapi::UNDOCUMENTED_ROUTES`), and `/openapi.json`
/// serving the document of the rest, which is returned too. Emulator mode adds the dev routes.
pub fn routes(emulator: bool) -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let mut api = OpenApiRouter::with_openapi(openapi::base_document())
        .routes(routes!(routes::checkout::create_checkout))
        .routes(routes!(routes::cancel_checkout::cancel_checkout))
        .routes(routes!(routes::billing_portal::billing_portal))
        .routes(routes!(routes::subscription_change::change_subscription))
        .routes(routes!(routes::order_status::order_status))
        .routes(routes!(routes::entitlements::entitlements))
        .routes(routes!(routes::plans::plans))
        .routes(routes!(routes::health::healthz))
        .routes(routes!(routes::metrics::metrics))
        // The app's backend, with an API key.
        .routes(routes!(routes::credits::balance))
        .routes(routes!(routes::credits::check))
        .routes(routes!(routes::credits::usage))
        .routes(routes!(routes::credits::reserve))
        .routes(routes!(routes::credits::commit))
        .routes(routes!(routes::credits::release))
        .routes(routes!(routes::credits::grant))
        .routes(
            routes!(routes::webhook::payment_webhook).layer(DefaultBodyLimit::max(routes::webhook::MAX_WEBHOOK_BODY)),
        );
    let mut pages = Router::new()
        .route("/", get(routes::demo::demo_page))
        .route("/checkout/return", get(routes::demo::demo_page));
    if emulator {
        // Anyone may sign in as anyone: only where nothing real can be bought.
        api = api
            .routes(routes!(routes::dev_token::dev_token))
            // The demo shop's credits, spent by the buyer's own token: no API key in a browser.
            .routes(routes!(routes::dev_credits::demo_credits))
            .routes(routes!(routes::dev_credits::use_demo_credits))
            // The emails buyers would get, kept instead of sent while SMTP_URL is unset.
            .routes(routes!(routes::dev_mail::dev_mail_json));
        pages = pages.route("/dev/mail", get(routes::dev_mail::dev_mail));
    }
    let (api, doc) = api.split_for_parts();
    let app = api.merge(pages).route("/openapi.json", routes::openapi::serve(&doc));
    (app, doc)
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
