//! One delivery, from its lease to its result: the body (fixed by the first attempt), the signed
//! POST or the email, and what came of it does to the delivery and to its endpoint's health.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use chrono::{SubsecRound, Utc};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use uuid::Uuid;

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
        outbox_deliveries::{self, Arrived, Failure, Leased},
        outbox_endpoints::{self, EndpointKind},
        outbox_messages,
        user_versions::{self, HoldingsRow},
    },
};

/// What came of one attempt, whatever the endpoint's kind.
#[derive(Debug)]
pub(super) enum Outcome {
    /// Accepted: a webhook's 2xx, or the SMTP server's 250 for an email.
    Delivered { status: u16 },
    /// Not accepted.
    Setback(Setback),
}

/// An attempt that did not deliver.
#[derive(Debug)]
pub(super) enum Setback {
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
            Answer::Gone => Self::Setback(Setback::Gone),
            Answer::Failed { status, error } => Self::Setback(Setback::Failed { status, error }),
        }
    }
}

/// A delivery that arrived, waiting to be recorded with the others that arrived meanwhile. It
/// is held until then, so no more are claimed than can be recorded.
pub(super) struct Arrival {
    claimed: Claimed,
    status: u16,
    latency: Duration,
    _permit: OwnedSemaphorePermit,
}

/// The most arrivals recorded in one transaction.
const ARRIVALS_PER_RECORD: usize = 256;

impl Outbox {
    /// Sends one claimed delivery and records what came of it: an arrival by the batch recorder
    /// (`record_arrivals`), a setback at once. A database error leaves the lease to run out, after
    /// which the delivery is sent again: at least once, never lost.
    pub(super) async fn deliver(
        &self,
        claimed: Claimed,
        permit: OwnedSemaphorePermit,
        arrivals: &mpsc::UnboundedSender<Arrival>,
    ) {
        let sent = match self.sending.acquire().await {
            // Held past the point where an answer is sure to come within the lease (every sender
            // busy with slow endpoints): another attempt sends it once the lease runs out.
            Ok(_sending) if Instant::now() > claimed.send_by => {
                tracing::warn!(
                    webhook_id = payload::webhook_id(claimed.leased.message_id),
                    "outbox: no sender was free in time under this lease; it is sent once the lease runs out"
                );
                None
            }
            Ok(_sending) => match claimed.leased.endpoint_kind {
                EndpointKind::Webhook => self.send_webhook(&claimed).await,
                EndpointKind::Email => self.send_email(&claimed).await,
            },
            // Stopping.
            Err(_) => None,
        };
        let Some((outcome, latency)) = sent else {
            drop(permit);
            self.wake.notify_one();
            return;
        };
        let webhook_id = payload::webhook_id(claimed.leased.message_id);
        match outcome {
            Outcome::Delivered { status } => {
                let arrival = Arrival {
                    claimed,
                    status,
                    latency,
                    _permit: permit,
                };
                if arrivals.send(arrival).is_err() {
                    tracing::error!(
                        webhook_id,
                        "outbox: the recorder has stopped; this delivery is sent again once its lease runs out"
                    );
                }
            }
            Outcome::Setback(setback) => {
                if let Err(err) = self.record(&claimed, &setback, latency).await {
                    tracing::error!(error = ?err, webhook_id, "outbox: cannot record an attempt; it is sent again once its lease runs out");
                }
                drop(permit);
                self.wake.notify_one();
            }
        }
    }

    /// Records arrivals as they come, all those that arrived meanwhile in one transaction: under
    /// load, one commit for a batch instead of one per message. Runs until every sender is gone.
    pub(super) async fn record_arrivals(self, mut arrivals: mpsc::UnboundedReceiver<Arrival>) {
        let mut batch = Vec::with_capacity(ARRIVALS_PER_RECORD);
        while arrivals.recv_many(&mut batch, ARRIVALS_PER_RECORD).await > 0 {
            if let Err(err) = db::retry_idempotent(&self.db, || self.record_batch(&batch)).await {
                tracing::error!(error = ?err, deliveries = batch.len(), "outbox: cannot record deliveries that arrived; they are sent again once their lease runs out");
            }
            // Frees their senders' permits.
            batch.clear();
            self.wake.notify_one();
        }
    }

    /// One transaction: the attempts delivered, their deliveries (those still under the lease
    /// they were sent with), and their endpoints healthy again.
    async fn record_batch(&self, batch: &[Arrival]) -> Result<(), sqlx::Error> {
        let attempts: Vec<i64> = batch.iter().map(|a| a.claimed.attempt_id).collect();
        let latencies: Vec<i32> = batch
            .iter()
            .map(|a| i32::try_from(a.latency.as_millis()).unwrap_or(i32::MAX))
            .collect();
        let statuses: Vec<i32> = batch.iter().map(|a| i32::from(a.status)).collect();
        let arrived: Vec<Arrived> = batch
            .iter()
            .map(|a| Arrived {
                id: a.claimed.leased.delivery_id,
                token: a.claimed.lease_token,
                status: i32::from(a.status),
            })
            .collect();
        let mut tx = db::begin(&self.db).await?;
        outbox_attempts::finish_delivered(&mut tx, &attempts, &latencies, &statuses).await?;
        let ours: HashSet<Uuid> = outbox_deliveries::mark_delivered(&mut tx, &arrived)
            .await?
            .into_iter()
            .collect();
        let mut endpoints: Vec<Uuid> = batch
            .iter()
            .filter(|a| ours.contains(&a.claimed.leased.delivery_id))
            .map(|a| a.claimed.leased.endpoint_id)
            .collect();
        endpoints.sort_unstable();
        endpoints.dedup();
        let recovered = outbox_endpoints::record_success(&mut tx, &endpoints).await?;
        tx.commit().await?;
        for url in recovered {
            tracing::info!(url, "outbox: the endpoint answers again");
        }
        for lost in batch.iter().filter(|a| !ours.contains(&a.claimed.leased.delivery_id)) {
            tracing::warn!(
                webhook_id = payload::webhook_id(lost.claimed.leased.message_id),
                "outbox: the lease ran out before the result came back; another attempt may have been made"
            );
        }
        Ok(())
    }

    /// The signed POST of the body `prepare_bodies` fixed; `None` when it could not (it is sent
    /// once the lease runs out).
    async fn send_webhook(&self, claimed: &Claimed) -> Option<(Outcome, Duration)> {
        let leased = &claimed.leased;
        let webhook_id = payload::webhook_id(leased.message_id);
        let Some(body) = &leased.body else {
            tracing::error!(
                webhook_id,
                "outbox: the message has no body; it is sent once its lease runs out"
            );
            return None;
        };
        let timestamp = Utc::now().timestamp();
        let signature = signing::signature_header(&self.keys, &webhook_id, timestamp, body);
        let request = sender::Request {
            url: &leased.url,
            webhook_id: &webhook_id,
            timestamp,
            signature: &signature,
            body,
        };
        let started = Instant::now();
        let answer = sender::send(&self.http, self.settings.send_timeout, &request).await;
        let latency = started.elapsed();
        tracing::debug!(webhook_id, url = %leased.url, ?answer, ?latency, "outbox: attempt made");
        Some((answer.into(), latency))
    }

    /// Fixes the body of every claimed webhook that has none yet (its first attempt): the exact
    /// bytes every attempt and endpoint then sends. For the whole batch at once: one read of the
    /// holdings of every user with an `entitlements.updated`, and one write of the bodies. A
    /// message left without one (a database error, an order message without its data) is logged
    /// by `send_webhook` and sent once its lease runs out.
    pub(super) async fn prepare_bodies(&self, claimed: &mut [Claimed]) {
        let unbuilt = |c: &&mut Claimed| c.leased.endpoint_kind == EndpointKind::Webhook && c.leased.body.is_none();
        let mut messages: Vec<&Leased> = claimed.iter_mut().filter(unbuilt).map(|c| &c.leased).collect();
        if messages.is_empty() {
            return;
        }
        messages.sort_unstable_by_key(|m| m.message_id);
        messages.dedup_by_key(|m| m.message_id);
        match self.build_bodies(&messages).await {
            Ok(stored) => {
                for c in claimed.iter_mut() {
                    if c.leased.endpoint_kind == EndpointKind::Webhook && c.leased.body.is_none() {
                        c.leased.body = stored.get(&c.leased.message_id).cloned();
                    }
                }
            }
            Err(err) => {
                tracing::error!(error = ?err, messages = messages.len(), "outbox: cannot build messages; they are sent once their lease runs out")
            }
        }
    }

    /// Builds and stores the messages' bodies; returns those stored by message id.
    async fn build_bodies(&self, messages: &[&Leased]) -> Result<HashMap<Uuid, String>, sqlx::Error> {
        let mut users: Vec<String> = messages
            .iter()
            .filter(|m| m.message_type == EventType::EntitlementsUpdated)
            .map(|m| m.user_id.clone())
            .collect();
        users.sort_unstable();
        users.dedup();
        let holdings = if users.is_empty() {
            HashMap::new()
        } else {
            let rows = db::retry_idempotent(&self.db, || user_versions::holdings_of(&self.db, &users)).await?;
            self.holdings_by_user(rows)
        };
        let (mut ids, mut bodies) = (Vec::new(), Vec::new());
        for message in messages {
            let body = match message.message_type {
                EventType::EntitlementsUpdated => holdings.get(&message.user_id).cloned(),
                // The migration keeps each kind's messages to its own endpoints.
                EventType::OrderConfirmation => None,
                order_event => message
                    .data
                    .clone()
                    .and_then(|data| serde_json::from_value::<OrderData>(data).ok())
                    .map(|data| payload::order_body(order_event, &message.message_created_at, &data)),
            };
            match body {
                Some(body) => {
                    ids.push(message.message_id);
                    bodies.push(body);
                }
                None => tracing::error!(
                    webhook_id = payload::webhook_id(message.message_id),
                    message_type = message.message_type.as_str(),
                    "outbox: a message whose body cannot be built from what it holds"
                ),
            }
        }
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let stored = db::retry_idempotent(&self.db, || outbox_messages::fix_bodies(&self.db, &ids, &bodies)).await?;
        Ok(stored.into_iter().collect())
    }

    /// `entitlements.updated` for each user as of now, the version and the state from one snapshot.
    fn holdings_by_user(&self, rows: Vec<HoldingsRow>) -> HashMap<String, String> {
        // To the microsecond, as the database's own times (an order event's) are written.
        let now = Utc::now().trunc_subsecs(6);
        let mut by_user: HashMap<String, HoldingsData> = HashMap::new();
        for row in rows {
            let data = by_user.entry(row.user_id.clone()).or_insert_with(|| HoldingsData {
                user_id: row.user_id.clone(),
                version: row.version,
                credits: Credits {
                    available: row.available,
                    overdrawn: row.overdrawn,
                },
                entitlements: Vec::new(),
            });
            if let (Some(key), Some(status)) = (row.key, row.status) {
                let held = Held {
                    key,
                    status,
                    current_period_end: row.current_period_end,
                    cancel_at_period_end: row.cancel_at_period_end.unwrap_or(false),
                };
                data.entitlements
                    .push(EntitlementView::at(held, now, self.entitlement_grace));
            }
        }
        by_user
            .into_iter()
            .map(|(user, data)| (user, payload::holdings_body(&now, &data)))
            .collect()
    }

    /// One transaction: the failed attempt, then the delivery's and the endpoint's new state.
    async fn record(&self, claimed: &Claimed, setback: &Setback, latency: Duration) -> Result<(), sqlx::Error> {
        let leased = &claimed.leased;
        let (id, token) = (leased.delivery_id, claimed.lease_token);
        let latency_ms = i32::try_from(latency.as_millis()).unwrap_or(i32::MAX);
        let mut tx = db::begin(&self.db).await?;
        let finished = match setback {
            Setback::Gone => Finished {
                status: AttemptStatus::Failed,
                latency_ms,
                response_status: Some(410),
                error: Some("answered 410 Gone"),
            },
            Setback::Failed { status, error } => Finished {
                status: AttemptStatus::Failed,
                latency_ms,
                response_status: status.map(i32::from),
                error: Some(error),
            },
            Setback::Refused { error, .. } => Finished {
                status: AttemptStatus::Failed,
                latency_ms,
                response_status: None,
                error: Some(error),
            },
        };
        outbox_attempts::finish(&mut tx, claimed.attempt_id, &finished).await?;
        let ours = match setback {
            Setback::Refused { reached, error } => {
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
                if ours
                    && *reached
                    && !outbox_endpoints::record_success(&mut tx, &[leased.endpoint_id])
                        .await?
                        .is_empty()
                {
                    tracing::info!(url = %leased.url, "outbox: the endpoint answers again");
                }
                ours
            }
            Setback::Gone => {
                let failure = Failure {
                    response: Some(410),
                    error: "answered 410 Gone: the endpoint is disabled",
                };
                let ours = outbox_deliveries::abandon(&mut tx, id, token, &failure).await?;
                let reason = format!("answered 410 Gone at {}", Utc::now().format("%Y-%m-%d %H:%M:%S UTC"));
                self.disable(&mut tx, claimed, &reason).await?;
                ours
            }
            Setback::Failed { status, error } => {
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
