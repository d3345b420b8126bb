//! Stripe's error answers: `{"error": {"type", "code"?, "message", "param"?, "doc_url"?}}` with the
//! status Stripe gives, so a client (ours, or an official library) reacts to the emulator's refusals
//! exactly as it would to Stripe's. One constructor per kind of refusal keeps the wording in one place.

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub error_type: &'static str,
    /// Stripe leaves `code` out when no documented code fits (e.g. a mode conflict).
    pub code: Option<&'static str>,
    pub message: String,
    pub param: Option<String>,
}

impl ApiError {
    fn invalid_request(code: Option<&'static str>, message: String, param: Option<&str>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            error_type: "invalid_request_error",
            code,
            message,
            param: param.map(str::to_owned),
        }
    }

    /// 404 for an object that does not exist (`kind` as Stripe names it, e.g. `checkout.session`).
    pub fn no_such(kind: &str, id: &str, param: &str) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            ..Self::resource_missing(kind, id, param)
        }
    }

    /// 400 for an id sent as a parameter that names nothing (e.g. `line_items[0][price]`).
    pub fn resource_missing(kind: &str, id: &str, param: &str) -> Self {
        Self::invalid_request(Some("resource_missing"), format!("No such {kind}: '{id}'"), Some(param))
    }

    pub fn missing(param: &str) -> Self {
        Self::invalid_request(
            Some("parameter_missing"),
            format!("Missing required param: {param}."),
            Some(param),
        )
    }

    pub fn unknown(param: &str) -> Self {
        Self::invalid_request(
            Some("parameter_unknown"),
            format!("Received unknown parameter: {param}"),
            Some(param),
        )
    }

    pub fn not_an_integer(param: &str, value: &str) -> Self {
        Self::invalid_request(
            Some("parameter_invalid_integer"),
            format!("Invalid integer: {value}"),
            Some(param),
        )
    }

    /// An integer outside what the parameter takes; `message` is Stripe's sentence for the bound.
    pub fn integer_out_of_range(param: &str, message: String) -> Self {
        Self::invalid_request(Some("parameter_invalid_integer"), message, Some(param))
    }

    pub fn not_a_boolean(param: &str, value: &str) -> Self {
        Self::invalid_request(None, format!("Invalid boolean: {value}"), Some(param))
    }

    /// A string the parameter does not take: an enum value, an unsupported currency, a metadata
    /// entry over Stripe's limits.
    pub fn invalid_string(param: &str, message: String) -> Self {
        Self::invalid_request(Some("parameter_invalid_string"), message, Some(param))
    }

    /// An object created with an id another object of its kind already has.
    pub fn already_exists(param: &str, message: String) -> Self {
        Self::invalid_request(Some("resource_already_exists"), message, Some(param))
    }

    /// Two parameters that exclude each other.
    pub fn exclusive(first: &str, second: &str) -> Self {
        Self::invalid_request(
            Some("parameters_exclusive"),
            format!("You may only specify one of these parameters: {first}, {second}."),
            Some(first),
        )
    }

    /// A request Stripe refuses for what it asks, not for how a parameter is spelled.
    pub fn refused(param: &str, message: String) -> Self {
        Self::invalid_request(None, message, Some(param))
    }

    pub fn unauthorized() -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            error_type: "invalid_request_error",
            code: None,
            message: "Invalid API Key provided.".into(),
            param: None,
        }
    }

    pub fn idempotency_mismatch(key: &str) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            error_type: "idempotency_error",
            code: None,
            message: format!(
                "Keys for idempotent requests can only be used with the same parameters they were first used with. \
                 Try using a key other than '{key}' if you meant to execute a different request."
            ),
            param: None,
        }
    }

    /// A second request with a key whose first request is still being answered.
    pub fn idempotency_in_use() -> Self {
        Self {
            status: StatusCode::CONFLICT,
            error_type: "invalid_request_error",
            code: Some("idempotency_key_in_use"),
            message: "There is currently another in-progress request using this Idempotent Key (that probably means \
                      you submitted twice, and the other request is still going through). Please try again later."
                .into(),
            param: None,
        }
    }

    /// Anything else at `status`: `api_error` for 5xx as Stripe's outages answer, else a plain refusal.
    pub fn with_status(status: StatusCode, message: &str) -> Self {
        Self {
            status,
            error_type: if status.is_server_error() {
                "api_error"
            } else {
                "invalid_request_error"
            },
            code: None,
            message: message.into(),
            param: None,
        }
    }

    pub fn body(&self) -> Value {
        let mut error = json!({ "type": self.error_type, "message": self.message });
        if let Some(code) = self.code {
            error["code"] = json!(code);
            error["doc_url"] = json!(format!(
                "https://stripe.com/docs/error-codes/{}",
                code.replace('_', "-")
            ));
        }
        if let Some(param) = &self.param {
            error["param"] = json!(param);
        }
        json!({ "error": error })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_coded_error_links_its_documentation_and_names_its_param() {
        let body = ApiError::unknown("line_items[0][bogus]").body();
        assert_eq!(
            body,
            json!({ "error": {
                "type": "invalid_request_error",
                "code": "parameter_unknown",
                "doc_url": "https://stripe.com/docs/error-codes/parameter-unknown",
                "message": "Received unknown parameter: line_items[0][bogus]",
                "param": "line_items[0][bogus]",
            }})
        );
        assert!(ApiError::unauthorized().body()["error"].get("code").is_none());
    }
}
