//! The periodic jobs (missed-event reconciler, credit expiry sweep, drift check) and how several instances share
//! them: every instance ticks, and a tick runs the job only under the job's advisory lock and only
//! when no run (on any instance) started within the last interval. So the fleet runs each job once
//! per interval, one run at a time, and carries on when any instance dies. Each run is recorded in
//! `job_runs`.

use std::{future::Future, time::Duration};

use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

use crate::store::{job_locks, job_runs};

/// The advisory lock keys, one per job. Fixed forever: an instance of an older release must still
/// take the same lock as a newer one beside it. Chosen far from small integers another tool on the
/// same database might use ("ENTI" in the high bytes).
pub const RECONCILE_LOCK_KEY: i64 = 0x454e_5449_0000_0001;
pub const CREDIT_SWEEP_LOCK_KEY: i64 = 0x454e_5449_0000_0002;
pub const VERIFY_LOCK_KEY: i64 = 0x454e_5449_0000_0003;

/// A tick comes this close to the interval after the last run and still counts as due, so timer
/// jitter does not make an instance skip a run that is in fact due.
const DUE_SLACK: f64 = 0.9;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Job {
    Reconcile,
    CreditSweep,
    Verify,
}

impl Job {
    /// As `job_runs.job` records it.
    pub const fn name(self) -> &'static str {
        match self {
            Job::Reconcile => "reconcile",
            Job::CreditSweep => "credit_sweep",
            Job::Verify => "verify",
        }
    }

    pub const fn lock_key(self) -> i64 {
        match self {
            Job::Reconcile => RECONCILE_LOCK_KEY,
            Job::CreditSweep => CREDIT_SWEEP_LOCK_KEY,
            Job::Verify => VERIFY_LOCK_KEY,
        }
    }
}

/// What one tick did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tick {
    /// Ran the job; whether it succeeded.
    Ran { ok: bool },
    /// Another instance holds the lock: its run is in progress.
    Locked,
    /// A run started within the interval, here or elsewhere.
    NotDue,
}

/// Runs `job` every `every` for as long as the process lives, on this instance when it is this
/// instance's turn. `run` returns whether the run succeeded (it logs its own failures).
pub async fn run_every<F, Fut>(db: PgPool, instance: Uuid, job: Job, every: Duration, mut run: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match tick(&db, instance, job, every, &mut run).await {
            Ok(Tick::Ran { .. }) => {}
            Ok(skipped) => tracing::debug!(job = job.name(), ?skipped, "job run skipped"),
            Err(err) => tracing::error!(job = job.name(), error = ?err, "cannot schedule the job's run"),
        }
    }
}

/// One tick: takes the lock on a connection of its own (see `store::job_locks`), checks the job is
/// due, runs it and records the run, then lets the lock go with the connection.
pub async fn tick<F, Fut>(db: &PgPool, instance: Uuid, job: Job, every: Duration, run: F) -> Result<Tick, sqlx::Error>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = bool>,
{
    let mut conn = PgConnection::connect_with(&db.connect_options()).await?;
    if !job_locks::try_lock(&mut conn, job.lock_key()).await? {
        return Ok(Tick::Locked);
    }
    let outcome = under_lock(&mut conn, instance, job, every, run).await;
    // Closing the connection would release the lock too; unlocking first says so at once.
    let _ = job_locks::unlock(&mut conn, job.lock_key()).await;
    let _ = conn.close().await;
    outcome
}

async fn under_lock<F, Fut>(
    conn: &mut PgConnection,
    instance: Uuid,
    job: Job,
    every: Duration,
    run: F,
) -> Result<Tick, sqlx::Error>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = bool>,
{
    if job_runs::started_within(conn, job.name(), every.as_secs_f64() * DUE_SLACK).await? {
        return Ok(Tick::NotDue);
    }
    let id = job_runs::start(conn, job.name(), instance).await?;
    let ok = run().await;
    job_runs::finish(conn, id, if ok { "ok" } else { "failed" }).await?;
    Ok(Tick::Ran { ok })
}
