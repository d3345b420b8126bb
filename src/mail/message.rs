//! The email as it goes on the wire. Its `Message-ID` is derived from the order alone, so a copy
//! sent again after a crash between sending and recording it is the same message to the buyer's
//! mail client, which shows it once.

use std::time::SystemTime;

use lettre::{
    Address, Message,
    message::{Mailbox, MultiPart},
};
use uuid::Uuid;

use super::{MailError, OrderEmail, RenderedEmail};

/// `<order-{order id}@{the sender's domain}>`: unique as long as the sender's domain is ours, and
/// the same for every copy of one order's email.
pub fn message_id(order_id: Uuid, from: &Mailbox) -> String {
    format!("<order-{order_id}@{}>", from.email.domain())
}

/// The buyer's address is whatever Stripe collected; one that is no address will never be, so
/// it is a permanent failure.
pub(super) fn recipient(email: &OrderEmail) -> Result<Mailbox, MailError> {
    email.to.trim().parse::<Address>().map(Mailbox::from).map_err(|_| {
        MailError::Permanent(format!(
            "order {}: the buyer's address is not an email address",
            email.order_id
        ))
    })
}

pub(super) fn build(
    email: &OrderEmail,
    rendered: &RenderedEmail,
    from: &Mailbox,
    date: SystemTime,
) -> Result<Message, MailError> {
    Message::builder()
        .from(from.clone())
        .to(recipient(email)?)
        .subject(rendered.subject.clone())
        .date(date)
        .message_id(Some(message_id(email.order_id, from)))
        .multipart(MultiPart::alternative_plain_html(
            rendered.text.clone(),
            rendered.html.clone(),
        ))
        .map_err(|err| MailError::Permanent(format!("order {}: cannot build the email: {err}", email.order_id)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mail::render;

    fn order(to: &str) -> OrderEmail {
        OrderEmail {
            order_id: Uuid::parse_str("3f2b8c1e-0d5a-4c39-9a57-2f1e6b7d8a90").unwrap(),
            to: to.into(),
            plan_name: "100 credits".into(),
            amount: 500,
            currency: "usd".into(),
            granted: vec!["100 credits".into()],
        }
    }

    #[test]
    fn the_message_id_is_the_order_at_the_senders_domain() {
        let from: Mailbox = "Shop <orders@shop.example>".parse().unwrap();
        assert_eq!(
            message_id(order("a@b.example").order_id, &from),
            "<order-3f2b8c1e-0d5a-4c39-9a57-2f1e6b7d8a90@shop.example>"
        );
    }

    #[test]
    fn the_message_carries_its_headers_and_both_parts() {
        let from: Mailbox = "Shop <orders@shop.example>".parse().unwrap();
        let email = order("buyer@example.com");
        let message = build(&email, &render(&email), &from, SystemTime::now()).unwrap();
        let raw = String::from_utf8(message.formatted()).unwrap();
        for header in [
            "From: Shop <orders@shop.example>\r\n",
            "To: buyer@example.com\r\n",
            "Subject: Order confirmed: 100 credits\r\n",
            "Message-ID: <order-3f2b8c1e-0d5a-4c39-9a57-2f1e6b7d8a90@shop.example>\r\n",
            "Date: ",
            "Content-Type: multipart/alternative;",
            "Content-Type: text/plain; charset=utf-8",
            "Content-Type: text/html; charset=utf-8",
        ] {
            assert!(raw.contains(header), "{header:?} missing from\n{raw}");
        }
    }

    #[test]
    fn an_address_that_is_none_is_a_permanent_failure() {
        let from: Mailbox = "orders@shop.example".parse().unwrap();
        for to in [
            "",
            "buyer",
            "buyer@",
            "a@b.example, c@d.example",
            "x\r\nBcc: y@z.example",
        ] {
            let email = order(to);
            let err = build(&email, &render(&email), &from, SystemTime::now()).unwrap_err();
            assert!(matches!(err, MailError::Permanent(_)), "{to:?}: {err}");
        }
    }
}
