//! `GET /metrics`: Prometheus's scrape, behind `METRICS_TOKEN` when one is set. The counters are
//! kept as things happen (`crate::metrics`); the outbox backlog and the pool are read here, at
//! scrape time. A database that does not answer still gets its metrics served, with
//! `entitle_database_up 0`: that is when an operator needs them most.

use axum::{
    extract::State,
    http::{HeaderMap, header},
    response::{IntoResponse, Response},
};

use crate::{
    auth::bearer_matches,
    error::AppError,
    metrics::{CONTENT_TYPE, Sampled},
    openapi::{Unauthorized, Unavailable},
    state::AppState,
    store::outbox_deliveries,
};

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    // Open when METRICS_TOKEN is unset.
    security(("metricsToken" = []), ()),
    responses(
        (status = 200, description = "The scrape, in the OpenMetrics text format.", content_type = "application/openmetrics-text", body = String),
        (status = 401, response = Unauthorized),
        (status = 503, response = Unavailable),
    )
)]
pub async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, AppError> {
    if let Some(token) = &state.config.metrics_token
        && !bearer_matches(&headers, token.expose())
    {
        return Err(AppError::Unauthorized);
    }
    let backlog = outbox_deliveries::backlog(&state.db)
        .await
        .inspect_err(|err| tracing::warn!(error = %err, "metrics: the outbox backlog could not be read"))
        .ok();
    let total = i64::from(state.db.size());
    let idle = i64::try_from(state.db.num_idle()).unwrap_or(i64::MAX);
    let sampled = Sampled {
        database_up: backlog.is_some(),
        outbox: backlog.map(|backlog| {
            (
                backlog.pending,
                std::time::Duration::from_secs_f64(backlog.oldest_age_secs.unwrap_or(0.0).max(0.0)),
            )
        }),
        pool_in_use: (total - idle).max(0),
        pool_idle: idle,
    };
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], state.metrics.render(&sampled)).into_response())
}
