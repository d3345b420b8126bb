//! The server API under `/v1/` (the app's backend, with an API key): balance, check, usage,
//! reservations and manual grants. HTTP only: the rules are `credits`'.

use axum::{
    Json,
    extract::{Path, State, rejection::PathRejection},
    http::{HeaderName, HeaderValue},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    auth::ApiCaller,
    credits::{self, SpendStatus},
    domain_error::DomainError,
    error::AppError,
    extract::AppJson,
    holdings::{self, EntitlementView},
    openapi::{
        BadRequest, Conflict, DatabaseErrors, JsonBodyErrors, NotFound, PayloadTooLarge, PaymentRequired, Unauthorized,
    },
    state::AppState,
};

// The request schemas' bounds below, which an attribute takes only as literals.
const _: () = assert!(
    credits::MAX_CREDITS == 1_000_000_000_000
        && credits::MAX_KEY_LEN == 255
        && credits::MAX_TEXT_LEN == 1000
        && credits::MAX_RESERVATION_TTL_SECS == 86_400
        && crate::user_id::MAX_USER_ID_LEN == 255
);

const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// A JSON answer, marked `Idempotent-Replayed: true` when it repeats an earlier one.
fn answer(body: impl Serialize, replayed: bool) -> Response {
    let mut response = Json(body).into_response();
    if replayed {
        response
            .headers_mut()
            .insert(REPLAYED, HeaderValue::from_static("true"));
    }
    response
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BalanceResponse {
    user_id: String,
    credits: CreditsView,
    grants: Vec<GrantView>,
    entitlements: Vec<EntitlementView>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct CreditsView {
    available: i64,
    reserved: i64,
    overdrawn: i64,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct GrantView {
    id: Uuid,
    source: &'static str,
    granted: i64,
    remaining: i64,
    expires_at: Option<DateTime<Utc>>,
}

fn user_in_path(path: Result<Path<String>, PathRejection>) -> Result<String, AppError> {
    let Path(user_id) =
        path.map_err(|_| AppError::bad_request("invalid_user_id", "The user id in the path is not valid."))?;
    credits::check_user_id("userId", &user_id)?;
    Ok(user_id)
}

/// `GET /v1/users/{userId}/balance`: the credits (available, reserved, overdrawn), the grants they
/// are spent from in the order they are spent, and the entitlements as `GET /entitlements` shows them.
#[utoipa::path(
    get,
    path = "/v1/users/{user_id}/balance",
    tag = "server",
    security(("apiKey" = [])),
    params(("user_id" = String, Path, description = "The app's id for the user.")),
    responses(
        (status = 200, description = "The user's credits, grants and entitlements.", body = BalanceResponse),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        DatabaseErrors,
    )
)]
pub async fn balance(
    State(state): State<AppState>,
    _caller: ApiCaller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<BalanceResponse>, AppError> {
    let user_id = user_in_path(path)?;
    let balance = credits::balance(&state.db, &user_id).await?;
    let grants = credits::spendable_grants(&state.db, &user_id)
        .await?
        .into_iter()
        .map(|grant| GrantView {
            id: grant.id,
            source: grant.source.as_str(),
            granted: grant.granted,
            remaining: grant.remaining,
            expires_at: grant.expires_at,
        })
        .collect();
    let entitlements = holdings::entitlements(&state.db, &user_id, state.config.entitlement_grace).await?;
    Ok(Json(BalanceResponse {
        user_id,
        credits: CreditsView {
            available: balance.available,
            reserved: balance.reserved,
            overdrawn: balance.overdrawn,
        },
        grants,
        entitlements,
    }))
}

/// Names `credits`, `entitlement` or both.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CheckRequest {
    #[schema(min_length = 1, max_length = 255)]
    user_id: String,
    #[schema(minimum = 0, maximum = 1_000_000_000_000_i64)]
    credits: Option<i64>,
    /// An entitlement key, as the catalog names them.
    #[schema(min_length = 1, max_length = 255)]
    entitlement: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckResponse {
    allowed: bool,
    available: i64,
    entitlement: Option<EntitlementCheck>,
}

#[derive(Serialize, ToSchema)]
struct EntitlementCheck {
    key: String,
    active: bool,
}

/// `POST /v1/check`: whether the user may do something that needs `credits` and/or the
/// `entitlement`, without spending anything.
#[utoipa::path(
    post,
    path = "/v1/check",
    tag = "server",
    security(("apiKey" = [])),
    request_body = CheckRequest,
    responses(
        (status = 200, description = "Whether the user may; nothing is spent.", body = CheckResponse),
        (status = 401, response = Unauthorized),
        JsonBodyErrors,
        DatabaseErrors,
    )
)]
pub async fn check(
    State(state): State<AppState>,
    _caller: ApiCaller,
    AppJson(request): AppJson<CheckRequest>,
) -> Result<Json<CheckResponse>, AppError> {
    let answer = credits::check(
        &state.db,
        &state.balances,
        &request.user_id,
        request.credits,
        request.entitlement.as_deref(),
        state.config.entitlement_grace,
    )
    .await?;
    Ok(Json(CheckResponse {
        allowed: answer.allowed,
        available: answer.available,
        entitlement: answer.entitlement.map(|(key, active)| EntitlementCheck { key, active }),
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UsageRequest {
    #[schema(min_length = 1, max_length = 255)]
    user_id: String,
    #[schema(minimum = 1, maximum = 1_000_000_000_000_i64)]
    credits: i64,
    /// The same key answers the same again; another request under it is a 409.
    #[schema(min_length = 1, max_length = 255, pattern = r"^[^\u0000-\u001f\u007f-\u009f]+$")]
    idempotency_key: String,
    #[schema(max_length = 1000)]
    description: Option<String>,
    /// A JSON object of at most 8 KiB, kept with the usage.
    #[schema(value_type = Option<Object>)]
    metadata: Option<Value>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageResponse {
    usage_id: Uuid,
    credits: i64,
    available: i64,
}

/// `POST /v1/usage`: spends credits now, exactly once per idempotency key.
#[utoipa::path(
    post,
    path = "/v1/usage",
    tag = "server",
    security(("apiKey" = [])),
    request_body = UsageRequest,
    responses(
        (status = 200, description = "The credits are spent (or were, by the first request with this key).", body = UsageResponse, headers(("Idempotent-Replayed" = String, description = "`true` when this repeats the answer to an earlier request with the same idempotency key."))),
        (status = 401, response = Unauthorized),
        (status = 402, response = PaymentRequired),
        (status = 409, response = Conflict),
        JsonBodyErrors,
        DatabaseErrors,
    )
)]
pub async fn usage(
    State(state): State<AppState>,
    _caller: ApiCaller,
    AppJson(request): AppJson<UsageRequest>,
) -> Result<Response, AppError> {
    let spent = credits::record_usage(
        &state.db,
        &state.debit_gate,
        &state.wakeups,
        credits::UsageRequest {
            user_id: request.user_id,
            credits: request.credits,
            idempotency_key: request.idempotency_key,
            description: request.description,
            metadata: request.metadata,
        },
    )
    .await?;
    let body = UsageResponse {
        usage_id: spent.id,
        credits: spent.credits,
        available: spent.available,
    };
    Ok(answer(body, spent.replayed))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReserveRequest {
    #[schema(min_length = 1, max_length = 255)]
    user_id: String,
    #[schema(minimum = 1, maximum = 1_000_000_000_000_i64)]
    credits: i64,
    /// The same key answers the same again; another request under it is a 409.
    #[schema(min_length = 1, max_length = 255, pattern = r"^[^\u0000-\u001f\u007f-\u009f]+$")]
    idempotency_key: String,
    /// How long the credits are held unless committed or released; 300 by default.
    #[schema(minimum = 1, maximum = 86_400)]
    ttl_seconds: Option<i64>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReserveResponse {
    reservation_id: Uuid,
    credits: i64,
    status: &'static str,
    expires_at: Option<DateTime<Utc>>,
    available: i64,
}

/// `POST /v1/reservations`: holds credits until committed, released or expired.
#[utoipa::path(
    post,
    path = "/v1/reservations",
    tag = "server",
    security(("apiKey" = [])),
    request_body = ReserveRequest,
    responses(
        (status = 200, description = "The credits are held.", body = ReserveResponse, headers(("Idempotent-Replayed" = String, description = "`true` when this repeats the answer to an earlier request with the same idempotency key."))),
        (status = 401, response = Unauthorized),
        (status = 402, response = PaymentRequired),
        (status = 409, response = Conflict),
        JsonBodyErrors,
        DatabaseErrors,
    )
)]
pub async fn reserve(
    State(state): State<AppState>,
    _caller: ApiCaller,
    AppJson(request): AppJson<ReserveRequest>,
) -> Result<Response, AppError> {
    let spent = credits::reserve(
        &state.db,
        &state.debit_gate,
        &state.wakeups,
        credits::ReservationRequest {
            user_id: request.user_id,
            credits: request.credits,
            idempotency_key: request.idempotency_key,
            ttl_seconds: request.ttl_seconds,
        },
    )
    .await?;
    let body = ReserveResponse {
        reservation_id: spent.id,
        credits: spent.credits,
        status: status_name(spent.status),
        expires_at: spent.expires_at,
        available: spent.available,
    };
    Ok(answer(body, spent.replayed))
}

/// `held`, `committed` or `released` (a reservation that outlived its TTL released itself, and
/// says so with `expired`).
fn status_name(status: SpendStatus) -> &'static str {
    match status {
        SpendStatus::Held => "held",
        SpendStatus::Committed | SpendStatus::Spent => "committed",
        SpendStatus::Released | SpendStatus::Expired => "released",
    }
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CommitRequest {
    /// At most what was held; all of it when absent.
    #[schema(minimum = 0, maximum = 1_000_000_000_000_i64)]
    credits: Option<i64>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReservationResponse {
    reservation_id: Uuid,
    user_id: String,
    status: &'static str,
    /// What was held.
    credits: i64,
    /// What was spent of it.
    spent: i64,
    /// Released because its TTL passed, not by a call.
    expired: bool,
    expires_at: Option<DateTime<Utc>>,
    settled_at: Option<DateTime<Utc>>,
}

impl From<credits::Reservation> for ReservationResponse {
    fn from(reservation: credits::Reservation) -> Self {
        Self {
            reservation_id: reservation.id,
            user_id: reservation.user_id,
            status: status_name(reservation.status),
            credits: reservation.credits,
            spent: reservation.spent,
            expired: reservation.status == SpendStatus::Expired,
            expires_at: reservation.expires_at,
            settled_at: reservation.settled_at,
        }
    }
}

fn reservation_in_path(path: Result<Path<String>, PathRejection>) -> Result<Uuid, AppError> {
    path.ok().and_then(|Path(id)| Uuid::parse_str(&id).ok()).ok_or_else(|| {
        DomainError::NotFound {
            code: "reservation_not_found",
            message: "No reservation has this id.",
        }
        .into()
    })
}

/// `POST /v1/reservations/{id}/commit`: spends `credits` of it (all by default), releases the rest.
/// The body may be empty.
#[utoipa::path(
    post,
    path = "/v1/reservations/{id}/commit",
    tag = "server",
    security(("apiKey" = [])),
    params(("id" = String, Path, format = Uuid, description = "The reservation's id.")),
    request_body(content = Option<CommitRequest>, description = "May be empty: all of it is spent."),
    responses(
        (status = 200, description = "The reservation is settled.", body = ReservationResponse),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        DatabaseErrors,
    )
)]
pub async fn commit(
    State(state): State<AppState>,
    _caller: ApiCaller,
    path: Result<Path<String>, PathRejection>,
    body: axum::body::Bytes,
) -> Result<Json<ReservationResponse>, AppError> {
    let id = reservation_in_path(path)?;
    // Read as every other body is, so that an error names the field.
    let request: CommitRequest = if body.iter().all(u8::is_ascii_whitespace) {
        CommitRequest::default()
    } else {
        // `null` is no body too, as the document's optional body allows.
        AppJson::<Option<CommitRequest>>::from_bytes(&body)?
            .0
            .unwrap_or_default()
    };
    Ok(Json(credits::commit(&state.db, id, request.credits).await?.into()))
}

/// `POST /v1/reservations/{id}/release`: hands all of it back.
#[utoipa::path(
    post,
    path = "/v1/reservations/{id}/release",
    tag = "server",
    security(("apiKey" = [])),
    params(("id" = String, Path, format = Uuid, description = "The reservation's id.")),
    responses(
        (status = 200, description = "The reservation is released.", body = ReservationResponse),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        DatabaseErrors,
    )
)]
pub async fn release(
    State(state): State<AppState>,
    _caller: ApiCaller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<ReservationResponse>, AppError> {
    let id = reservation_in_path(path)?;
    Ok(Json(credits::release(&state.db, id).await?.into()))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrantRequest {
    #[schema(min_length = 1, max_length = 255)]
    user_id: String,
    #[schema(minimum = 1, maximum = 1_000_000_000_000_i64)]
    credits: i64,
    /// The same key answers the same again; another request under it is a 409.
    #[schema(min_length = 1, max_length = 255, pattern = r"^[^\u0000-\u001f\u007f-\u009f]+$")]
    idempotency_key: String,
    /// In the future; never when absent.
    expires_at: Option<DateTime<Utc>>,
    /// Why, for the ledger.
    // Optional to serde, so that its absence gets the domain's message naming the field.
    #[schema(value_type = String, required = true, min_length = 1, max_length = 1000)]
    reason: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GrantResponse {
    id: Uuid,
    user_id: String,
    source: &'static str,
    granted: i64,
    /// Less than granted when part of it paid credits the user owed.
    remaining: i64,
    expires_at: Option<DateTime<Utc>>,
}

/// `POST /v1/grants`: promotional or support credits, once per idempotency key.
#[utoipa::path(
    post,
    path = "/v1/grants",
    tag = "server",
    security(("apiKey" = [])),
    request_body = GrantRequest,
    responses(
        (status = 200, description = "The credits are granted (or were, by the first request with this key).", body = GrantResponse, headers(("Idempotent-Replayed" = String, description = "`true` when this repeats the answer to an earlier request with the same idempotency key."))),
        (status = 401, response = Unauthorized),
        (status = 409, response = Conflict),
        JsonBodyErrors,
        DatabaseErrors,
    )
)]
pub async fn grant(
    State(state): State<AppState>,
    _caller: ApiCaller,
    AppJson(request): AppJson<GrantRequest>,
) -> Result<Response, AppError> {
    let user_id = request.user_id.clone();
    let granted = credits::grant_manual(
        &state.db,
        credits::ManualGrantRequest {
            user_id: request.user_id,
            credits: request.credits,
            idempotency_key: request.idempotency_key,
            expires_at: request.expires_at,
            reason: request.reason,
        },
    )
    .await?;
    let body = GrantResponse {
        id: granted.id,
        user_id,
        source: "manual",
        granted: granted.credits,
        remaining: granted.remaining,
        expires_at: granted.expires_at,
    };
    Ok(answer(body, granted.replayed))
}
