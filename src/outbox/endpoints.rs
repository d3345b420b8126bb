//! The outbox's endpoints as configured, synced into `outbox_endpoints` when the server starts
//! and reported, so an endpoint that is disabled or failing is in the log of every start: the
//! app's webhook URLs, and the one email endpoint when a mailer exists.

use sqlx::PgPool;

use crate::{
    config::{AppWebhooks, EmailDelivery, SmtpTls},
    db,
    store::outbox_endpoints::{self, EndpointKind},
};

/// What names the email endpoint in `outbox_endpoints` (and in `entitle deliveries`): the SMTP
/// server's scheme, host and port, never its user or password; `dev-mailbox:` in emulator mode.
/// `None` when no email is sent.
pub fn email_endpoint_url(email: &EmailDelivery) -> Option<String> {
    match email {
        EmailDelivery::Off => None,
        EmailDelivery::DevMailbox { .. } => Some("dev-mailbox:".to_owned()),
        EmailDelivery::Smtp { server, .. } => {
            let scheme = match server.tls {
                SmtpTls::Opportunistic => "smtp",
                SmtpTls::Implicit => "smtps",
            };
            let host = match server.host.contains(':') {
                true => format!("[{}]", server.host),
                false => server.host.clone(),
            };
            Some(format!("{scheme}://{host}:{}", server.port))
        }
    }
}

/// Makes `APP_WEBHOOK_URL` the configured webhook endpoints and `email` (from
/// `email_endpoint_url`) the email endpoint (one no longer named receives nothing new), and logs
/// how each stands.
pub async fn sync(db: &PgPool, webhooks: &AppWebhooks, email: Option<&str>) -> Result<(), sqlx::Error> {
    let emails: Vec<String> = email.map(str::to_owned).into_iter().collect();
    let mut tx = db::begin(db).await?;
    outbox_endpoints::sync(&mut tx, EndpointKind::Webhook, &webhooks.urls).await?;
    outbox_endpoints::sync(&mut tx, EndpointKind::Email, &emails).await?;
    tx.commit().await?;
    if webhooks.urls.is_empty() {
        tracing::info!("APP_WEBHOOK_URL is not set: the app is sent no webhooks, and no webhook messages are written");
    }
    if email.is_none() {
        tracing::info!("no mailer (SMTP_URL is not set): no confirmation email messages are written");
    }
    for endpoint in outbox_endpoints::all(db).await?.iter().filter(|e| e.configured) {
        let kind = endpoint.kind.as_str();
        match (&endpoint.disabled_reason, endpoint.failing_since) {
            (Some(reason), _) => tracing::error!(
                kind,
                url = %endpoint.url,
                disabled_at = ?endpoint.disabled_at,
                reason,
                "outbox endpoint is disabled and is sent nothing; once it is fixed, `entitle redeliver --since <age>` enables it and sends what it missed"
            ),
            (None, Some(failing_since)) => tracing::warn!(
                kind,
                url = %endpoint.url,
                %failing_since,
                failures = endpoint.consecutive_failures,
                "outbox endpoint is failing; its deliveries are retried"
            ),
            (None, None) => tracing::info!(kind, url = %endpoint.url, "outbox messages are sent here"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::{Secret, SmtpCredentials, SmtpServer};

    fn smtp(host: &str, tls: SmtpTls) -> EmailDelivery {
        EmailDelivery::Smtp {
            server: SmtpServer {
                host: host.into(),
                port: 2525,
                tls,
                credentials: Some(SmtpCredentials {
                    username: "mailer".into(),
                    password: Secret::new("hunter2"),
                }),
                timeout: Duration::from_secs(30),
            },
            from: "orders@shop.example".parse().unwrap(),
        }
    }

    #[test]
    fn the_email_endpoint_names_the_server_and_never_its_credentials() {
        assert_eq!(
            email_endpoint_url(&smtp("mail.example", SmtpTls::Opportunistic)).as_deref(),
            Some("smtp://mail.example:2525")
        );
        assert_eq!(
            email_endpoint_url(&smtp("::1", SmtpTls::Implicit)).as_deref(),
            Some("smtps://[::1]:2525")
        );
        let dev = EmailDelivery::DevMailbox {
            from: "orders@shop.example".parse().unwrap(),
        };
        assert_eq!(email_endpoint_url(&dev).as_deref(), Some("dev-mailbox:"));
        assert_eq!(email_endpoint_url(&EmailDelivery::Off), None);
    }
}
