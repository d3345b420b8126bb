//! Where confirmation emails go, chosen once at startup from the configuration: one `send` for
//! the outbox whatever the backend, so the dev mailbox shows exactly the message SMTP would carry.

use std::{sync::Arc, time::SystemTime};

use lettre::message::Mailbox;

use super::{DevMailbox, KeptEmail, MailError, OrderEmail, message, render, smtp::SmtpRelay};
use crate::config::{EmailDelivery, SmtpServer};

#[derive(Clone)]
pub struct Mailer {
    from: Mailbox,
    backend: Backend,
}

/// Cheap to clone: the outbox may hand one to each worker.
#[derive(Clone)]
enum Backend {
    Smtp(Arc<SmtpRelay>),
    DevMailbox(DevMailbox),
}

impl Mailer {
    /// The mailer the configuration asks for; `None` when emails are off.
    pub fn from_config(email: &EmailDelivery) -> Result<Option<Self>, MailError> {
        Ok(match email {
            EmailDelivery::Off => None,
            EmailDelivery::DevMailbox { from } => Some(Self::dev_mailbox(from.clone())),
            EmailDelivery::Smtp { server, from } => Some(Self::smtp(server, from.clone())?),
        })
    }

    pub fn smtp(server: &SmtpServer, from: Mailbox) -> Result<Self, MailError> {
        Ok(Self {
            from,
            backend: Backend::Smtp(Arc::new(SmtpRelay::new(server)?)),
        })
    }

    pub fn dev_mailbox(from: Mailbox) -> Self {
        Self {
            from,
            backend: Backend::DevMailbox(DevMailbox::new()),
        }
    }

    pub fn sender(&self) -> &Mailbox {
        &self.from
    }

    /// The dev mailbox, when that is where emails go.
    pub fn kept(&self) -> Option<&DevMailbox> {
        match &self.backend {
            Backend::DevMailbox(mailbox) => Some(mailbox),
            Backend::Smtp(_) => None,
        }
    }

    /// Sends the order's confirmation. Every copy of one order's email has the same `Message-ID`
    /// (`message_id`), so a retry after a crash shows as one email; whether one was already sent
    /// is the outbox's to record.
    pub async fn send(&self, email: &OrderEmail) -> Result<(), MailError> {
        let rendered = render(email);
        let now = SystemTime::now();
        let message = message::build(email, &rendered, &self.from, now)?;
        match &self.backend {
            Backend::Smtp(relay) => relay.send(message).await,
            Backend::DevMailbox(mailbox) => {
                mailbox.keep(KeptEmail {
                    order_id: email.order_id,
                    message_id: message::message_id(email.order_id, &self.from),
                    from: self.from.to_string(),
                    to: message::recipient(email)?.to_string(),
                    subject: rendered.subject,
                    sent_at: now.into(),
                    text: rendered.text,
                    html: rendered.html,
                    source: String::from_utf8_lossy(&message.formatted()).into_owned(),
                });
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::mail::DEV_MAILBOX_CAPACITY;

    fn order(to: &str) -> OrderEmail {
        OrderEmail {
            order_id: Uuid::new_v4(),
            to: to.into(),
            plan_name: "100 credits".into(),
            amount: 500,
            currency: "usd".into(),
            granted: vec!["100 credits".into()],
        }
    }

    fn mailer() -> Mailer {
        Mailer::dev_mailbox("Shop <orders@shop.example>".parse().unwrap())
    }

    #[tokio::test]
    async fn the_dev_mailbox_keeps_what_would_be_sent_newest_first() {
        let mailer = mailer();
        let (first, second) = (order("a@example.com"), order("b@example.com"));
        mailer.send(&first).await.unwrap();
        mailer.send(&second).await.unwrap();
        let kept = mailer.kept().unwrap().emails();
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[0].order_id, second.order_id);
        assert_eq!(kept[0].to, "b@example.com");
        assert_eq!(kept[1].message_id, format!("<order-{}@shop.example>", first.order_id));
        assert!(kept[1].source.contains(&format!("Message-ID: {}", kept[1].message_id)));
        assert!(kept[1].text.contains("$5.00") && kept[1].html.contains("$5.00"));
    }

    #[tokio::test]
    async fn the_dev_mailbox_forgets_the_oldest_past_its_capacity() {
        let mailer = mailer();
        let first = order("first@example.com");
        mailer.send(&first).await.unwrap();
        for _ in 0..DEV_MAILBOX_CAPACITY {
            mailer.send(&order("later@example.com")).await.unwrap();
        }
        let kept = mailer.kept().unwrap().emails();
        assert_eq!(kept.len(), DEV_MAILBOX_CAPACITY);
        assert!(kept.iter().all(|email| email.order_id != first.order_id));
    }

    #[tokio::test]
    async fn a_buyer_address_that_is_no_address_is_permanent_and_kept_nowhere() {
        let mailer = mailer();
        let err = mailer.send(&order("not an address")).await.unwrap_err();
        assert!(!err.is_transient(), "{err}");
        assert!(mailer.kept().unwrap().emails().is_empty());
    }
}
