//! One delivery, from its lease to its result: the body (fixed by the first attempt), the signed
//! POST or the email, and what came of it does to the delivery and to its endpoint's health.

use std::time::{Duration, Instant};

use chrono::{SubsecRound, Utc};

use super::{
    backoff,
    dispatch::{Claimed, Outbox},
    payload::{self, Credits, EventType, HoldingsData, OrderData},
    sender::{self, Answer},
    signing,
};
use crate::{
    db,
    holdings::EntitlementView,
    store::{
        entitlements::Held,
        outbox_attempts::{self, AttemptStatus, Finished},
        outbox_deliveries::{self, Failure},
        outbox_endpoints::{self, EndpointKind},
        outbox_messages, user_versions,
    },
};

/// What came of one attempt, whatever the endpoint's kind.
#[derive(Debug)]
pub(super) enum Outcome {
    /// Accepted: a webhook's 2xx, or the SMTP server's 250 for an email.
    Delivered { status: u16 },
    /// 410 Gone: the webhook endpoint asks to be sent nothing more.
    Gone,
    /// Worth another attempt later, with the endpoint's backoff.
    Failed { status: Option<u16>, error: String },
    /// This message will never be accepted (an email the server refused for good, or one with no
    /// address to go to): that delivery is given up on, the endpoint is not. `reached` says the
    /// endpoint answered, so it is working.
    Refused { reached: bool, error: String },
}

impl From<Answer> for Outcome {
    fn from(answer: Answer) -> Self {
        match answer {
            Answer::Delivered { status } => Self::Delivered { status },
            Answer::Gone => Self::Gone,
            Answer::Failed { status, error } => Self::Failed { status, error },
        }
    }
}

impl Outbox {
    /// Sends one claimed delivery and records what came of it. A database error leaves the lease
    /// to run out, after which the delivery is sent again: at least once, never lost.
    pub(super) async fn deliver(&self, claimed: Claimed) {
        let sent = match claimed.leased.endpoint_kind {
            EndpointKind::Webhook => self.send_webhook(&claimed).await,
            EndpointKind::Email => self.send_email(&claimed).await,
        };
        let Some((outcome, latency)) = sent else {
            return;
        };
        let webhook_id = payload::webhook_id(claimed.leased.message_id);
        if let Err(err) = self.record(&claimed, &outcome, latency).await {
            tracing::error!(error = ?err, webhook_id, "outbox: cannot record an attempt; it is sent again once its lease runs out");
        }
    }

    /// The signed POST; `None` when its body cannot be built now (it is sent once the lease runs out).
    async fn send_webhook(&self, claimed: &Claimed) -> Option<(Outcome, Duration)> {
        let leased = &claimed.leased;
        let webhook_id = payload::webhook_id(leased.message_id);
        let body = match self.body_of(claimed).await {
            Ok(body) => body,
            Err(err) => {
                tracing::error!(error = ?err, webhook_id, "outbox: cannot build the message; it is sent once its lease runs out");
                return None;
            }
        };
        let timestamp = Utc::now().timestamp();
        let signature = signing::signature_header(&self.keys, &webhook_id, timestamp, &body);
        let request = sender::Request {
            url: &leased.url,
            webhook_id: &webhook_id,
            timestamp,
            signature: &signature,
            body: &body,
        };
        let started = Instant::now();
        let answer = sender::send(&self.http, self.settings.send_timeout, &request).await;
        let latency = started.elapsed();
        tracing::debug!(webhook_id, url = %leased.url, ?answer, ?latency, "outbox: attempt made");
        Some((answer.into(), latency))
    }

    /// The exact bytes of the message: those the first attempt stored, else built now and stored.
    async fn body_of(&self, claimed: &Claimed) -> Result<String, sqlx::Error> {
        let leased = &claimed.leased;
        if let Some(body) = &leased.body {
            return Ok(body.clone());
        }
        let built = match leased.message_type {
            EventType::EntitlementsUpdated => self.holdings_body(&leased.user_id).await?,
            // The migration keeps each kind's messages to its own endpoints.
            EventType::OrderConfirmation => {
                return Err(sqlx::Error::Decode("an email message on a webhook endpoint".into()));
            }
            order_event => {
                let data: OrderData = leased
                    .data
                    .clone()
                    .and_then(|data| serde_json::from_value(data).ok())
                    .ok_or_else(|| sqlx::Error::Decode("an order message without its order's data".into()))?;
                payload::order_body(order_event, &leased.message_created_at, &data)
            }
        };
        db::retry_idempotent(&self.db, || {
            outbox_messages::fix_body(&self.db, leased.message_id, &built)
        })
        .await
    }

    /// `entitlements.updated` as of now: the version and the state read in one statement.
    async fn holdings_body(&self, user_id: &str) -> Result<String, sqlx::Error> {
        let rows = db::retry_idempotent(&self.db, || user_versions::holdings(&self.db, user_id)).await?;
        // To the microsecond, as the database's own times (an order event's) are written.
        let now = Utc::now().trunc_subsecs(6);
        let first = rows.first();
        let data = HoldingsData {
            user_id: user_id.to_owned(),
            version: first.map_or(0, |r| r.version),
            credits: Credits {
                available: first.map_or(0, |r| r.available),
                overdrawn: first.map_or(0, |r| r.overdrawn),
            },
            entitlements: rows
                .into_iter()
                .filter_map(|row| {
                    let held = Held {
                        key: row.key?,
                        status: row.status?,
                        current_period_end: row.current_period_end,
                        cancel_at_period_end: row.cancel_at_period_end.unwrap_or(false),
                    };
                    Some(EntitlementView::at(held, now, self.entitlement_grace))
                })
                .collect(),
        };
        Ok(payload::holdings_body(&now, &data))
    }

    /// One transaction: the attempt's result, then the delivery's and the endpoint's new state.
    async fn record(&self, claimed: &Claimed, outcome: &Outcome, latency: Duration) -> Result<(), sqlx::Error> {
        let leased = &claimed.leased;
        let (id, token) = (leased.delivery_id, claimed.lease_token);
        let latency_ms = i32::try_from(latency.as_millis()).unwrap_or(i32::MAX);
        let mut tx = db::begin(&self.db).await?;
        let finished = match outcome {
            Outcome::Delivered { status } => Finished {
                status: AttemptStatus::Delivered,
                latency_ms,
                response_status: Some(i32::from(*status)),
                error: None,
            },
            Outcome::Gone => Finished {
                status: AttemptStatus::Failed,
                latency_ms,
                response_status: Some(410),
                error: Some("answered 410 Gone"),
            },
            Outcome::Failed { status, error } => Finished {
                status: AttemptStatus::Failed,
                latency_ms,
                response_status: status.map(i32::from),
                error: Some(error),
            },
            Outcome::Refused { error, .. } => Finished {
                status: AttemptStatus::Failed,
                latency_ms,
                response_status: None,
                error: Some(error),
            },
        };
        outbox_attempts::finish(&mut tx, claimed.attempt_id, &finished).await?;
        let ours = match outcome {
            Outcome::Delivered { status } => {
                let ours = outbox_deliveries::mark_delivered(&mut tx, id, token, i32::from(*status)).await?;
                if ours && outbox_endpoints::record_success(&mut tx, leased.endpoint_id).await? {
                    tracing::info!(url = %leased.url, "outbox: the endpoint answers again");
                }
                ours
            }
            Outcome::Refused { reached, error } => {
                tracing::warn!(
                    webhook_id = payload::webhook_id(leased.message_id),
                    order_id = ?leased.order_id,
                    url = %leased.url,
                    error,
                    "outbox: a message was refused for good; given up on (entitle redeliver sends it again)"
                );
                let failure = Failure { response: None, error };
                let ours = outbox_deliveries::abandon(&mut tx, id, token, &failure).await?;
                // It refused this message, not every message: it is answering, so others still go.
                if ours && *reached && outbox_endpoints::record_success(&mut tx, leased.endpoint_id).await? {
                    tracing::info!(url = %leased.url, "outbox: the endpoint answers again");
                }
                ours
            }
            Outcome::Gone => {
                let failure = Failure {
                    response: Some(410),
                    error: "answered 410 Gone: the endpoint is disabled",
                };
                let ours = outbox_deliveries::abandon(&mut tx, id, token, &failure).await?;
                let reason = format!("answered 410 Gone at {}", Utc::now().format("%Y-%m-%d %H:%M:%S UTC"));
                self.disable(&mut tx, claimed, &reason).await?;
                ours
            }
            Outcome::Failed { status, error } => {
                let failure = Failure {
                    response: status.map(i32::from),
                    error,
                };
                self.record_failure(&mut tx, claimed, &failure).await?
            }
        };
        tx.commit().await?;
        if !ours {
            tracing::warn!(
                webhook_id = payload::webhook_id(leased.message_id),
                "outbox: the lease ran out before the result came back; another attempt may have been made"
            );
        }
        Ok(())
    }

    /// Backs the endpoint off (one failure per burst, see `record_failure`), and the delivery by
    /// its own attempts; gives up on an endpoint, or a message, failing for too long.
    async fn record_failure(
        &self,
        tx: &mut sqlx::PgConnection,
        claimed: &Claimed,
        failure: &Failure<'_>,
    ) -> Result<bool, sqlx::Error> {
        let leased = &claimed.leased;
        let settings = &self.settings;
        let seen = leased.endpoint_failures;
        let endpoint_wait = backoff::delay(
            seen.unsigned_abs() + 1,
            settings.retry_first,
            settings.retry_max,
            backoff::jitter(),
        );
        let health =
            outbox_endpoints::record_failure(tx, leased.endpoint_id, seen, endpoint_wait.as_secs_f64()).await?;
        let give_up = settings.give_up_after.as_secs_f64();
        if !health.disabled && health.failing_for_secs >= give_up {
            let ours = outbox_deliveries::abandon(tx, leased.delivery_id, claimed.lease_token, failure).await?;
            let reason = format!(
                "failing for {} ({} failed attempts in a row); last: {}",
                whole_duration(health.failing_for_secs),
                health.consecutive_failures,
                failure.error
            );
            self.disable(tx, claimed, &reason).await?;
            return Ok(ours);
        }
        if leased.queued_for_secs >= give_up {
            tracing::error!(
                webhook_id = payload::webhook_id(leased.message_id),
                url = %leased.url,
                attempts = leased.attempt,
                error = failure.error,
                "outbox: a message kept failing for APP_WEBHOOK_GIVE_UP_AFTER_SECS; given up (entitle redeliver sends it again)"
            );
            return outbox_deliveries::abandon(tx, leased.delivery_id, claimed.lease_token, failure).await;
        }
        let own_wait = backoff::delay(
            leased.attempt.unsigned_abs(),
            settings.retry_first,
            settings.retry_max,
            backoff::jitter(),
        );
        outbox_deliveries::retry_later(
            tx,
            leased.delivery_id,
            claimed.lease_token,
            own_wait.as_secs_f64(),
            failure,
        )
        .await
    }

    /// Disables the endpoint and gives up on everything pending for it, loudly: an operator must
    /// fix the receiver and `entitle redeliver`.
    async fn disable(&self, tx: &mut sqlx::PgConnection, claimed: &Claimed, reason: &str) -> Result<(), sqlx::Error> {
        let endpoint = claimed.leased.endpoint_id;
        if !outbox_endpoints::disable(tx, endpoint, reason).await? {
            return Ok(());
        }
        let abandoned =
            outbox_deliveries::abandon_pending_to(tx, endpoint, &format!("endpoint disabled: {reason}")).await?;
        tracing::error!(
            kind = claimed.leased.endpoint_kind.as_str(),
            url = %claimed.leased.url,
            reason,
            abandoned,
            "outbox: endpoint disabled; fix it, then `entitle redeliver --since <age>` sends what it missed and enables it"
        );
        Ok(())
    }
}

/// `3d 2h`, `5m 3s`: how long something has been going on, for an operator.
fn whole_duration(secs: f64) -> String {
    let secs = secs.max(0.0) as u64;
    let (days, hours, minutes, seconds) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60, secs % 60);
    match (days, hours, minutes) {
        (0, 0, 0) => format!("{seconds}s"),
        (0, 0, _) => format!("{minutes}m {seconds}s"),
        (0, _, _) => format!("{hours}h {minutes}m"),
        _ => format!("{days}d {hours}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::whole_duration;

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(whole_duration(4.9), "4s");
        assert_eq!(whole_duration(125.0), "2m 5s");
        assert_eq!(whole_duration(3.0 * 3600.0 + 60.0), "3h 1m");
        assert_eq!(whole_duration(3.0 * 86_400.0 + 7200.0), "3d 2h");
    }
}
