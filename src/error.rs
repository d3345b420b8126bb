//! The one error type of the HTTP layer. Every failure leaves as `{"error": {"code", "message"}}`:
//! 4xx explain what was wrong with the request; 5xx are logged with their cause and answered with
//! a fixed message, so no internal detail reaches a client.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header::RETRY_AFTER},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use utoipa::ToSchema;

/// What every error answer carries: `{"error": {"code", "message"}}`. Its schema is the shared
/// error component of the OpenAPI document (`crate::openapi`).
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable and machine-readable, e.g. `invalid_body`, `unauthorized`, `order_not_found`.
    #[schema(example = "invalid_body")]
    code: &'static str,
    /// For people; may change wording.
    message: String,
    /// Only with `insufficient_credits` (402): the credits that could be spent.
    #[serde(skip_serializing_if = "Option::is_none")]
    available: Option<i64>,
    /// Only with `insufficient_credits` (402): the credits asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    requested: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("Missing or invalid bearer token.")]
    Unauthorized,
    #[error("{message}")]
    NotFound { code: &'static str, message: &'static str },
    #[error("{message}")]
    Conflict { code: &'static str, message: &'static str },
    /// A 402 whose body also carries the numbers, so an app need not parse the message.
    #[error("Not enough credits: {available} available, {requested} requested.")]
    InsufficientCredits { available: i64, requested: i64 },
    /// Answered with `Retry-After`: the client may come back then, and not before.
    #[error("{message}")]
    TooManyRequests {
        code: &'static str,
        message: String,
        retry_after_secs: u64,
    },
    #[error("This route does not accept that method.")]
    MethodNotAllowed,
    #[error("The request body is larger than allowed.")]
    PayloadTooLarge,
    #[error("Expected a JSON body with Content-Type: application/json.")]
    UnsupportedMediaType,
    #[error("the request took too long")]
    Timeout,
    #[error("the payment provider failed")]
    PaymentProvider(#[source] crate::stripe::ProviderError),
    #[error("database error")]
    Database(#[from] sqlx::Error),
}

/// The one mapping from the domain's error to HTTP.
impl From<crate::domain_error::DomainError> for AppError {
    fn from(err: crate::domain_error::DomainError) -> Self {
        use crate::domain_error::DomainError;
        match err {
            DomainError::Database(err) => Self::Database(err),
            DomainError::PaymentProvider(err) => Self::PaymentProvider(err),
            DomainError::Conflict { code, message } => Self::Conflict { code, message },
            DomainError::NotFound { code, message } => Self::NotFound { code, message },
            DomainError::Invalid { code, message } => Self::BadRequest { code, message },
            DomainError::InsufficientCredits { available, requested } => {
                Self::InsufficientCredits { available, requested }
            }
            DomainError::TooManyRequests {
                code,
                message,
                retry_after_secs,
            } => Self::TooManyRequests {
                code,
                message,
                retry_after_secs,
            },
        }
    }
}

impl AppError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            message: message.into(),
        }
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::NotFound { code, .. } => (StatusCode::NOT_FOUND, code),
            Self::Conflict { code, .. } => (StatusCode::CONFLICT, code),
            Self::InsufficientCredits { .. } => (StatusCode::PAYMENT_REQUIRED, "insufficient_credits"),
            Self::TooManyRequests { code, .. } => (StatusCode::TOO_MANY_REQUESTS, code),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::Database(err) if is_unstorable_input(err) => (StatusCode::BAD_REQUEST, "invalid_body"),
            Self::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::UnsupportedMediaType => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            Self::Timeout => (StatusCode::SERVICE_UNAVAILABLE, "timeout"),
            Self::PaymentProvider(_) => (StatusCode::BAD_GATEWAY, "payment_provider_unavailable"),
            Self::Database(err) if is_unavailable(err) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Self::Database(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

/// Input Postgres refuses to store or index: a NUL character (22021), or a value too long for its
/// column or index (22001, 54000). The client sent something unusable; nothing was written.
fn is_unstorable_input(err: &sqlx::Error) -> bool {
    let code = err.as_database_error().and_then(|e| e.code()).unwrap_or_default();
    matches!(code.as_ref(), "22021" | "22001" | "54000")
}

/// Errors that mean "try again later" rather than "this is a bug": the pool could not hand out a
/// connection, the connection broke, or the server refused the session (a FATAL error, such as a
/// database that is shutting down, over its connection limit or closed to connections).
fn is_unavailable(err: &sqlx::Error) -> bool {
    let out_of_resources = err
        .as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code.starts_with("53"));
    matches!(
        err,
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Tls(_)
    ) || out_of_resources
        || crate::db::connection_lost(err)
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let retry_after = match &self {
            Self::TooManyRequests { retry_after_secs, .. } => Some(HeaderValue::from(*retry_after_secs)),
            _ => None,
        };
        let message = if status.is_server_error() {
            match &self {
                Self::PaymentProvider(crate::stripe::ProviderError::Stripe(err)) => tracing::error!(
                    error = ?self,
                    http_status = %crate::stripe::failure::HttpStatus(err),
                    "request failed"
                ),
                _ => tracing::error!(error = ?self, "request failed"),
            }
            match status {
                StatusCode::BAD_GATEWAY => "The payment provider could not be reached. Please try again.".to_owned(),
                StatusCode::SERVICE_UNAVAILABLE => {
                    "The service is temporarily unavailable. Please try again.".to_owned()
                }
                _ => "An internal error occurred.".to_owned(),
            }
        } else if let Self::Database(_) = self {
            "The request contains a value that cannot be stored (such as a NUL character or an over-long string)."
                .to_owned()
        } else {
            self.to_string()
        };
        let (available, requested) = match &self {
            Self::InsufficientCredits { available, requested } => (Some(*available), Some(*requested)),
            _ => (None, None),
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code,
                message,
                available,
                requested,
            },
        };
        let mut response = (status, Json(body)).into_response();
        if let Some(retry_after) = retry_after {
            response.headers_mut().insert(RETRY_AFTER, retry_after);
        }
        response
    }
}
