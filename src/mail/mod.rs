//! The order confirmation email: what it says (`render`), the headers that make a resend the same
//! message (`message`), and where it goes (`Mailer`: an SMTP server, or the dev mailbox that
//! `/dev/mail` shows in emulator mode). The outbox decides when an order's email is due and calls
//! `Mailer::send`; nothing here reads the database or knows about HTTP.

mod amount;
mod dev_mailbox;
mod error;
mod mailer;
mod message;
mod render;
mod smtp;

pub use amount::format_amount;
pub use dev_mailbox::{DEV_MAILBOX_CAPACITY, DevMailbox, KeptEmail};
pub use error::MailError;
pub use mailer::Mailer;
pub use message::message_id;
pub use render::{RenderedEmail, escape_html, render};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One paid order's confirmation, as the outbox builds it from the order and its Checkout Session.
/// The outbox stores its first build as the message's body, so every retry sends the same email.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderEmail {
    pub order_id: Uuid,
    /// The buyer's address: the session's `customer_details.email`.
    pub to: String,
    pub plan_name: String,
    /// In the currency's minor units, as Stripe and the order hold it.
    pub amount: i64,
    /// Stripe's lowercase ISO code (`usd`); any case is read.
    pub currency: String,
    /// What the order granted, one line each for people: `100 credits`, `Pro access until 2027-01-01`.
    pub granted: Vec<String>,
}
