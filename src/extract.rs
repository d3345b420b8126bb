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

impl<T: DeserializeOwned> AppJson<T> {
    /// A body already read (one that may also be empty, say), with the same errors as the extractor.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, AppError> {
        match axum::Json::<T>::from_bytes(bytes) {
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
        JsonRejection::JsonDataError(err) => {
            AppError::bad_request("invalid_body", describe_data_error(&err.body_text()))
        }
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => AppError::PayloadTooLarge,
        _ => AppError::bad_request("invalid_body", "The request body could not be read."),
    }
}

/// serde's words, less our Rust names: `expected struct CheckoutSessionRequest` becomes
/// `expected a JSON object`, `expected i64` becomes `expected a whole number`.
fn describe_data_error(text: &str) -> String {
    let text = text
        .strip_prefix("Failed to deserialize the JSON body into the target type: ")
        .unwrap_or(text);
    let mut words: Vec<String> = Vec::new();
    let mut pieces = text.split(' ').peekable();
    while let Some(word) = pieces.next() {
        match word {
            "struct" => {
                let name = pieces.next().unwrap_or_default();
                let trailing: String = name.chars().skip_while(|c| c.is_alphanumeric() || *c == '_').collect();
                words.push(format!("a JSON object{trailing}"));
            }
            w if w.trim_end_matches(',').starts_with("i64") || w.trim_end_matches(',').starts_with("u64") => {
                words.push(format!("a whole number{}", &w[3..]));
            }
            w => words.push(w.to_owned()),
        }
    }
    format!("Invalid request body: {}", words.join(" "))
}

#[cfg(test)]
mod tests {
    use super::describe_data_error;

    #[test]
    fn serde_messages_keep_the_field_and_lose_our_type_names() {
        assert_eq!(
            describe_data_error(
                "Failed to deserialize the JSON body into the target type: invalid type: sequence, expected struct CheckoutSessionRequest at line 1 column 2"
            ),
            "Invalid request body: invalid type: sequence, expected a JSON object at line 1 column 2"
        );
        assert_eq!(
            describe_data_error(
                "Failed to deserialize the JSON body into the target type: waitSeconds: invalid type: floating point `1.5`, expected i64 at line 1 column 20"
            ),
            "Invalid request body: waitSeconds: invalid type: floating point `1.5`, expected a whole number at line 1 column 20"
        );
        assert!(
            describe_data_error(
                "Failed to deserialize the JSON body into the target type: missing field `planId` at line 1 column 2"
            )
            .contains("missing field `planId`")
        );
    }
}
