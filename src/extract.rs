//! A `Json` extractor whose rejections come back in our error shape instead of axum's plain text.

use axum::{
    extract::{FromRequest, Request, rejection::JsonRejection},
    http::StatusCode,
};
use serde::de::DeserializeOwned;

use crate::error::AppError;

pub struct AppJson<T>(pub T);

impl<S, T> FromRequest<S> for AppJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection_to_error(rejection)),
        }
    }
}

fn json_rejection_to_error(rejection: JsonRejection) -> AppError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => AppError::UnsupportedMediaType,
        JsonRejection::JsonSyntaxError(_) => {
            AppError::bad_request("invalid_json", "The request body is not valid JSON.")
        }
        // serde's message names the missing or mistyped field, which is what a client needs.
        JsonRejection::JsonDataError(err) => AppError::bad_request("invalid_body", err.body_text()),
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => AppError::PayloadTooLarge,
        _ => AppError::bad_request("invalid_body", "The request body could not be read."),
    }
}
