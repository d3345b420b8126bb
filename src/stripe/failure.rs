//! What a failed Stripe call tells us: its HTTP status when async-stripe kept it, and whether
//! asking again could ever be answered differently. Logs and retry decisions read it from here.

use std::fmt;

use stripe::StripeError;
use stripe_shared::ApiErrorsCode;

/// async-stripe's texts for an error answer whose body is not Stripe's error JSON (a proxy's page,
/// a wrong `STRIPE_API_BASE`). It keeps no status for those: its own `request returned error
/// status` warning, just before, names it.
const NOT_STRIPE_ERROR_BODY: [&str; 2] = ["error deserializing Stripe error", "Response was not valid UTF-8"];

/// The status of a failed call, for a log field: `404`, or why there is none.
pub struct HttpStatus<'a>(pub &'a StripeError);

impl fmt::Display for HttpStatus<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            StripeError::Stripe(_, status) => write!(f, "{status}"),
            StripeError::JSONDeserialize(text) if NOT_STRIPE_ERROR_BODY.contains(&text.as_str()) => {
                f.write_str("an error status with a body that is not Stripe's (see async-stripe's warning)")
            }
            StripeError::JSONDeserialize(_) => f.write_str("unknown (an answer we could not read)"),
            StripeError::Timeout | StripeError::ClientError(_) => f.write_str("none (no answer)"),
            StripeError::ConfigError(_) => f.write_str("none (not sent)"),
        }
    }
}

/// Stripe refused the request itself (bad request, no such object), or answered something that is
/// not its API: the same request will get the same answer. Rate limits (429), conflicts (409),
/// authentication (401, 403: our key, to fix) and anything without an answer stay retryable.
/// An error page that is not Stripe's JSON counts as permanent although async-stripe hides its
/// status, so a proxy's 502 page is taken for a refusal too; Stripe itself always answers JSON.
pub fn is_permanent_refusal(err: &StripeError) -> bool {
    match err {
        StripeError::Stripe(_, status) => matches!(status, 400 | 404),
        StripeError::JSONDeserialize(_) => true,
        StripeError::Timeout | StripeError::ClientError(_) | StripeError::ConfigError(_) => false,
    }
}

/// Stripe has no object of that id for the request's parameter `param` (`resource_missing`): one
/// deleted in the Dashboard, or one of the other mode's.
pub fn is_missing(err: &StripeError, param: &str) -> bool {
    matches!(err, StripeError::Stripe(api, 400 | 404)
        if api.code == Some(ApiErrorsCode::ResourceMissing) && api.param.as_deref() == Some(param))
}

/// One line for an operator: the status and Stripe's own message, never a request's content.
pub fn describe(err: &StripeError) -> String {
    match err {
        StripeError::Stripe(api, status) => format!(
            "Stripe answered HTTP {status}: {}",
            api.message.as_deref().unwrap_or("(no message)")
        ),
        StripeError::JSONDeserialize(text) => format!("Stripe's answer could not be read: {text}"),
        other => other.to_string(),
    }
}
