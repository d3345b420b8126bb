//! Emulator mode's mailbox: the emails that would have gone to buyers, kept in this process for
//! `/dev/mail` to show. Bounded, so a long demo session cannot grow it without end; lost on
//! restart, which is fine for something only a developer looks at.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
};

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

/// How many emails are kept; the oldest goes first.
pub const DEV_MAILBOX_CAPACITY: usize = 200;

/// One email as it would have been sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeptEmail {
    pub order_id: Uuid,
    pub message_id: String,
    pub from: String,
    pub to: String,
    pub subject: String,
    pub sent_at: DateTime<Utc>,
    pub text: String,
    pub html: String,
    /// The whole message as an SMTP server would receive it, headers and encoded parts.
    pub source: String,
}

#[derive(Clone, Default)]
pub struct DevMailbox(Arc<Mutex<VecDeque<KeptEmail>>>);

impl DevMailbox {
    pub fn new() -> Self {
        Self::default()
    }

    pub(super) fn keep(&self, email: KeptEmail) {
        let mut emails = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if emails.len() == DEV_MAILBOX_CAPACITY {
            emails.pop_back();
        }
        emails.push_front(email);
    }

    /// Newest first.
    pub fn emails(&self) -> Vec<KeptEmail> {
        let emails = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        emails.iter().cloned().collect()
    }
}
