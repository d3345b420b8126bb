//! The senders of one process: a loop that claims due deliveries of the kinds this process can
//! send (webhooks when it has their signing keys, emails when it has a mailer), and sends each on
//! its own task, at most `OUTBOX_CONCURRENCY` at once. A claim is one short transaction (lock the
//! due rows with `skip locked`, lease them, start their attempts) committed before anything is
//! sent, so a delivery is only ever in one sender's hands and a request never holds a database lock.
//!
//! A few times more deliveries are held (claimed, sending, or sent and waiting for the batch
//! recorder) than are sent at once: a sender is free again as soon as its answer is in, and the
//! claims and records are larger batches, so the database sees fewer statements per message.

use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use sqlx::PgPool;
use tokio::sync::{Notify, Semaphore, mpsc};
use uuid::Uuid;

use super::{sender, signing::SigningKey};
use crate::{
    config::{Config, EmailDelivery, OutboxSettings},
    db,
    mail::Mailer,
    store::{outbox_attempts, outbox_deliveries, outbox_endpoints, outbox_endpoints::EndpointKind},
};

/// This process's senders; cheap to clone.
#[derive(Clone)]
pub struct Outbox(Arc<Inner>);

pub struct Inner {
    pub(super) db: PgPool,
    pub(super) http: reqwest::Client,
    pub(super) keys: Vec<SigningKey>,
    /// Sends the confirmation emails; `None` when this process sends none.
    pub(super) mailer: Option<Mailer>,
    /// The endpoint kinds this process claims deliveries of.
    kinds: Vec<String>,
    pub(super) settings: OutboxSettings,
    pub(super) entitlement_grace: Duration,
    /// Names this process in `outbox_attempts.sender`.
    pub(super) sender: String,
    pub(super) wake: Arc<Notify>,
    /// One permit per delivery held, from its claim until its result is recorded: bounds what
    /// is claimed to what can be sent and recorded well within the lease.
    held: Arc<Semaphore>,
    /// One permit per request (or email) in flight: `OUTBOX_CONCURRENCY`.
    pub(super) sending: Arc<Semaphore>,
    /// A send starts only while at least this much of its lease is left, so its answer (or its
    /// timeout) always comes before the lease runs out.
    send_window: Duration,
    stopping: AtomicBool,
}

impl std::ops::Deref for Outbox {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// A delivery this process has leased and is about to send.
pub(super) struct Claimed {
    pub leased: outbox_deliveries::Leased,
    pub lease_token: Uuid,
    pub attempt_id: i64,
    /// The last moment a send of it may start under this lease (see `send_window`).
    pub send_by: Instant,
}

impl Outbox {
    /// `wake` is what the outbox listener notifies (see `wake::listen`). Webhooks are sent when
    /// `APP_WEBHOOK_URL` is set, emails when there is a `mailer`.
    pub fn new(db: PgPool, config: &Config, wake: Arc<Notify>, mailer: Option<Mailer>) -> Self {
        let settings = config.outbox.clone();
        let sender = format!(
            "pid {} ({})",
            std::process::id(),
            &Uuid::new_v4().simple().to_string()[..8]
        );
        let mut kinds = Vec::new();
        if !config.app_webhooks.urls.is_empty() {
            kinds.push(EndpointKind::Webhook.as_str().to_owned());
        }
        if mailer.is_some() {
            kinds.push(EndpointKind::Email.as_str().to_owned());
        }
        Self(Arc::new(Inner {
            db,
            mailer,
            kinds,
            http: sender::http_client(settings.send_timeout),
            keys: config.app_webhooks.keys.clone(),
            entitlement_grace: config.entitlement_grace,
            sender,
            wake,
            held: Arc::new(Semaphore::new(held_at_most(settings.concurrency))),
            sending: Arc::new(Semaphore::new(settings.concurrency as usize)),
            send_window: send_window(config),
            stopping: AtomicBool::new(false),
            settings,
        }))
    }

    /// Claims and sends until `stop`: woken by each commit that wrote a delivery and by each
    /// delivery finished, and every `sweep` in any case.
    pub async fn run(self) {
        tracing::info!(sender = %self.sender, concurrency = self.settings.concurrency, kinds = ?self.kinds, "outbox senders started");
        let (arrivals, recorded) = mpsc::unbounded_channel();
        tokio::spawn(self.clone().record_arrivals(recorded));
        while !self.stopping.load(Ordering::SeqCst) {
            let Ok(first) = self.held.clone().acquire_owned().await else {
                return;
            };
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
            let mut permits = vec![first];
            while let Ok(permit) = self.held.clone().try_acquire_owned() {
                permits.push(permit);
            }
            match self.claim(permits.len()).await {
                Ok((mut claimed, more)) => {
                    self.prepare_bodies(&mut claimed).await;
                    for (claimed, permit) in claimed.into_iter().zip(permits) {
                        let (outbox, arrivals) = (self.clone(), arrivals.clone());
                        // A delivery is held until its result is recorded (an arrival by the
                        // recorder, which wakes this loop then).
                        tokio::spawn(async move { outbox.deliver(claimed, permit, &arrivals).await });
                    }
                    if more {
                        continue;
                    }
                }
                Err(err) => tracing::error!(error = ?err, "outbox: cannot claim deliveries; trying again"),
            }
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.settings.sweep) => {}
            }
        }
    }

    /// Claims nothing more, and waits up to `grace` for the deliveries in flight to be recorded
    /// (what is still in flight after it is sent again once its lease runs out).
    pub async fn stop(&self, grace: Duration) {
        self.stopping.store(true, Ordering::SeqCst);
        self.wake.notify_one();
        let all = held_at_most(self.settings.concurrency) as u32;
        if tokio::time::timeout(grace, self.held.acquire_many(all)).await.is_err() {
            tracing::warn!(
                "outbox: deliveries still in flight at shutdown; they are sent again once their lease runs out"
            );
        }
        self.held.close();
        self.sending.close();
    }

    /// Leases up to `limit` due deliveries; `more` says others may be due now.
    async fn claim(&self, limit: usize) -> Result<(Vec<Claimed>, bool), sqlx::Error> {
        // Before the lease is taken, so the deadline errs early.
        let send_by = Instant::now() + self.settings.lease.saturating_sub(self.send_window);
        let mut tx = db::begin(&self.db).await?;
        let due = outbox_deliveries::lock_due(&mut tx, &self.kinds, limit as i64).await?;
        let more = due.len() == limit;
        // An endpoint that is failing gets one attempt at a time (a probe), not one per message
        // waiting for it; the others wait for its answer.
        let mut probed = HashSet::new();
        let chosen: Vec<&outbox_deliveries::Due> = due
            .iter()
            .filter(|d| d.endpoint_failures == 0 || probed.insert(d.endpoint_id))
            .collect();
        if chosen.is_empty() {
            tx.commit().await?;
            return Ok((Vec::new(), more));
        }
        let ids: Vec<Uuid> = chosen.iter().map(|d| d.id).collect();
        let token = Uuid::new_v4();
        // Only a delivery leased before can have an attempt left `sending`; most have none, and
        // the statement is saved.
        let leased_before: Vec<Uuid> = chosen.iter().filter(|d| d.leased_before).map(|d| d.id).collect();
        if !leased_before.is_empty() {
            outbox_attempts::interrupt_unfinished(&mut tx, &leased_before).await?;
        }
        let leased = outbox_deliveries::lease(&mut tx, &ids, token, self.settings.lease.as_secs_f64()).await?;
        let started = outbox_attempts::start(&mut tx, &ids, token, &self.sender).await?;
        let probes: Vec<Uuid> = probed.into_iter().collect();
        if !probes.is_empty() {
            outbox_endpoints::hold_for_probe(&mut tx, &probes, self.settings.lease.as_secs_f64()).await?;
        }
        tx.commit().await?;
        let claimed = leased
            .into_iter()
            .filter_map(|leased| {
                let attempt = started.iter().find(|s| s.delivery_id == leased.delivery_id)?;
                Some(Claimed {
                    send_by,
                    attempt_id: attempt.id,
                    lease_token: token,
                    leased,
                })
            })
            .collect();
        Ok((claimed, more))
    }
}

/// How many deliveries one process holds at most: four per sender. With the default lease (60 s)
/// even four rounds of sends that each time out (10 s) end within it.
fn held_at_most(concurrency: u32) -> usize {
    concurrency as usize * 4
}

/// The longest one send may take, whatever its kind (the configuration keeps the lease longer).
fn send_window(config: &Config) -> Duration {
    let email = match &config.email {
        EmailDelivery::Smtp { server, .. } => server.timeout,
        EmailDelivery::Off | EmailDelivery::DevMailbox { .. } => Duration::ZERO,
    };
    config.outbox.send_timeout.max(email)
}
