//! One confirmation email delivery: the email (built from the order by its first attempt, then
//! the same for every retry), the send through the mailer, and what the mailer's answer means
//! for the outbox: sent, worth a retry with the endpoint's backoff, or refused for good.

use std::time::{Duration, Instant};

use super::{
    confirmation,
    delivery::{Outcome, Setback},
    dispatch::{Claimed, Outbox},
};
use crate::{
    db,
    mail::{MailError, OrderEmail},
    store::{order_confirmation, outbox_messages},
};

/// Recorded as the attempt's response status when the server accepted the email (SMTP's "250 OK").
const SMTP_ACCEPTED: u16 = 250;

impl Outbox {
    /// Sends the order's email; `None` when the database could not say what it is (it is sent
    /// once the lease runs out).
    pub(super) async fn send_email(&self, claimed: &Claimed) -> Option<(Outcome, Duration)> {
        let leased = &claimed.leased;
        let Some(mailer) = &self.mailer else {
            // Only processes with a mailer claim emails; this is a bug, not the buyer's problem.
            let error = "this process has no mailer".to_owned();
            return Some((
                Outcome::Setback(Setback::Failed { status: None, error }),
                Duration::ZERO,
            ));
        };
        let email = match self.email_of(claimed).await {
            Ok(Ok(email)) => email,
            Ok(Err(error)) => {
                return Some((
                    Outcome::Setback(Setback::Refused { reached: false, error }),
                    Duration::ZERO,
                ));
            }
            Err(err) => {
                tracing::error!(error = ?err, order_id = ?leased.order_id, "outbox: cannot build the confirmation email; it is sent once its lease runs out");
                return None;
            }
        };
        let started = Instant::now();
        let sent = mailer.send(&email).await;
        let latency = started.elapsed();
        tracing::debug!(order_id = %email.order_id, url = %leased.url, ?sent, ?latency, "outbox: email attempt made");
        let outcome = match sent {
            Ok(()) => Outcome::Delivered { status: SMTP_ACCEPTED },
            Err(MailError::Transient(error)) => Outcome::Setback(Setback::Failed { status: None, error }),
            Err(MailError::Permanent(error)) => Outcome::Setback(Setback::Refused { reached: true, error }),
        };
        Some((outcome, latency))
    }

    /// The email the first attempt stored, else built from the order now and stored; `Ok(Err)`
    /// says why the order can have none.
    async fn email_of(&self, claimed: &Claimed) -> Result<Result<OrderEmail, String>, sqlx::Error> {
        let leased = &claimed.leased;
        let body = match &leased.body {
            Some(body) => body.clone(),
            None => {
                let Some(order_id) = leased.order_id else {
                    return Ok(Err("a confirmation message that names no order".to_owned()));
                };
                let order = db::retry_idempotent(&self.db, || order_confirmation::find(&self.db, order_id)).await?;
                let Some(order) = order else {
                    return Ok(Err(format!("order {order_id} does not exist")));
                };
                let email = match confirmation::order_email(order) {
                    Ok(email) => email,
                    Err(why) => return Ok(Err(why)),
                };
                let built = serde_json::to_string(&email).expect("an email of strings and numbers serializes");
                let (ids, bodies) = ([leased.message_id], [built]);
                let stored =
                    db::retry_idempotent(&self.db, || outbox_messages::fix_bodies(&self.db, &ids, &bodies)).await?;
                stored
                    .into_iter()
                    .next()
                    .map(|(_, body)| body)
                    .ok_or_else(|| sqlx::Error::Decode("a confirmation message that is gone".into()))?
            }
        };
        serde_json::from_str(&body).map(Ok).map_err(|err| {
            sqlx::Error::Decode(format!("a stored confirmation email that does not read back: {err}").into())
        })
    }
}
