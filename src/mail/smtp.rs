//! Sending through the SMTP server `SMTP_URL` names, with lettre. One connection per email (no
//! pool): an order's email is a rare event, and a fresh connection per send means a server that
//! was down is simply reached on the next try, with no stale pooled connection to fail first.

use std::time::Duration;

use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    transport::smtp::{
        Error as SmtpError,
        authentication::Credentials,
        client::{Tls, TlsParameters},
    },
};

use super::MailError;
use crate::config::{Secret, SmtpServer, SmtpTls};

/// Replies that refuse our credentials or how we sent them (RFC 4954): the settings are wrong, not
/// the email, which should still go once they are fixed.
const AUTHENTICATION_REFUSED: &[&str] = &["530", "534", "535", "538"];

pub(super) struct SmtpRelay {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    /// `host:port`, named in every error so a log line says which server failed.
    server: String,
    password: Option<Secret>,
    timeout: Duration,
}

impl SmtpRelay {
    pub(super) fn new(server: &SmtpServer) -> Result<Self, MailError> {
        let tls_parameters = TlsParameters::new(server.host.clone())
            .map_err(|err| MailError::Permanent(format!("cannot set up TLS for {}: {err}", server.host)))?;
        let tls = match server.tls {
            SmtpTls::Opportunistic => Tls::Opportunistic(tls_parameters),
            SmtpTls::Implicit => Tls::Wrapper(tls_parameters),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(server.host.clone())
            .port(server.port)
            .tls(tls)
            .timeout(Some(server.timeout));
        if let Some(credentials) = &server.credentials {
            builder = builder.credentials(Credentials::new(
                credentials.username.clone(),
                credentials.password.expose().to_owned(),
            ));
        }
        Ok(Self {
            transport: builder.build(),
            server: format!("{}:{}", server.host, server.port),
            password: server.credentials.as_ref().map(|c| c.password.clone()),
            timeout: server.timeout,
        })
    }

    /// lettre's async transport bounds only the TCP connect with its timeout, so the whole
    /// exchange (greeting, TLS, AUTH, message) is bounded here: a server that accepts and then
    /// says nothing cannot hold the outbox.
    pub(super) async fn send(&self, message: Message) -> Result<(), MailError> {
        match tokio::time::timeout(self.timeout, self.transport.send(message)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) => Err(self.classify(&err)),
            Err(_) => Err(MailError::Transient(format!(
                "SMTP server {}: no answer within {} s",
                self.server,
                self.timeout.as_secs_f64()
            ))),
        }
    }

    /// Only a 5xx about the message itself is permanent; anything that can change by itself or by
    /// fixing a setting (no connection, a timeout, TLS, 4xx, refused credentials) is worth a retry.
    fn classify(&self, err: &SmtpError) -> MailError {
        let text = self.redact(format!("SMTP server {}: {err}", self.server));
        let authentication_refused = err
            .status()
            .is_some_and(|code| AUTHENTICATION_REFUSED.contains(&code.to_string().as_str()));
        if err.is_permanent() && !authentication_refused {
            MailError::Permanent(text)
        } else {
            MailError::Transient(text)
        }
    }

    /// A server may echo what it was sent; whatever it said, the password does not go further.
    fn redact(&self, text: String) -> String {
        match &self.password {
            Some(password) if !password.expose().is_empty() => text.replace(password.expose(), "[redacted]"),
            _ => text,
        }
    }
}
