//! Why an email was not sent, split by what the caller should do next.

/// Neither message ever holds the SMTP password: the SMTP backend takes it out of anything the
/// server or the network said before it gets here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MailError {
    /// Try again later: the server could not be reached or timed out, answered 4xx, or refused our
    /// credentials (a setting to fix, after which the email should still go).
    #[error("email not sent yet: {0}")]
    Transient(String),
    /// Sending it again will not help: the server refused this message or its recipient (5xx), or
    /// the buyer's address is not an address.
    #[error("email refused: {0}")]
    Permanent(String),
}

impl MailError {
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient(_))
    }
}
