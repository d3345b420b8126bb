//! The connection pool, and how a request survives a connection that died while it sat in it.
//!
//! sqlx pings every connection before handing it out: one extra round trip in every request, a
//! ninth of a first webhook delivery and a fifth of a duplicate (docs/performance.md). Here only a
//! connection that sat idle for a while is pinged; under load none does. A connection that died
//! moments ago (the database restarted, or an operator ended its session) shows up instead as an
//! error on the first statement sent on it, before anything was done, so that statement is simply
//! sent again on another connection: `begin` for transactions, `retry_idempotent` for single
//! statements that are safe to send twice.

use std::{
    future::Future,
    time::{Duration, Instant},
};

use sqlx::{
    PgPool, Postgres, Transaction,
    pool::PoolConnectionMetadata,
    postgres::{PgConnection, PgDatabaseError, PgPoolOptions, PgSeverity},
};

/// Connections idle at least this long are pinged before use: they may have been closed by the
/// server or by something in between while nobody watched.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(5);
/// Retries stop after this long: a database that keeps failing is down, and the caller answers 503.
const RETRY_FOR: Duration = Duration::from_secs(2);

pub fn pool_options(max_connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        // A request waiting longer than this for a connection gets a 503 rather than hanging.
        .acquire_timeout(Duration::from_secs(5))
        .test_before_acquire(false)
        .before_acquire(|conn: &mut PgConnection, meta: PoolConnectionMetadata| {
            Box::pin(async move {
                if meta.idle_for >= PING_IF_IDLE_FOR {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
}

/// Begins a transaction, on another connection when the first one handed out turns out dead.
/// `BEGIN` changes nothing, so sending it again is always safe.
pub async fn begin(pool: &PgPool) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    retry_idempotent(pool, || pool.begin()).await
}

/// `BEGIN` for a transaction whose caller sends its wake-ups after the commit
/// (`crate::wakeups`): the SQL's own `pg_notify` calls stand down for it. One round trip, as
/// `BEGIN` alone; the setting ends with the transaction.
const BEGIN_WAKING_AFTER_COMMIT: &str = "BEGIN; SET LOCAL entitle.wake_after_commit = 'on'";

/// As `begin`, for a transaction that notifies nobody itself: its caller hands what it changed
/// to `Wakeups::after_commit` once it has committed.
pub async fn begin_waking_after_commit(pool: &PgPool) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    retry_idempotent(pool, || pool.begin_with(BEGIN_WAKING_AFTER_COMMIT)).await
}

/// Runs a statement that is safe to send twice (a read, `BEGIN`, or a write that sets a value and
/// so does nothing more if it did land before the connection broke), again on another connection
/// while the error says the connection was lost. A dead connection fails at once, so a
/// pool full of them is worked through quickly; a database that is down still fails, after
/// `RETRY_FOR` or the pool's size in attempts.
pub async fn retry_idempotent<T, F, Fut>(pool: &PgPool, mut attempt: F) -> Result<T, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, sqlx::Error>>,
{
    let started = Instant::now();
    let mut attempts_left = pool.options().get_max_connections() + 1;
    loop {
        match attempt().await {
            Err(err) if connection_lost(&err) && attempts_left > 1 && started.elapsed() < RETRY_FOR => {
                tracing::debug!(error = %err, "a pooled connection was dead; trying another");
                attempts_left -= 1;
            }
            result => return result,
        }
    }
}

/// The connection broke, or the server ended the session (a FATAL error such as an administrator
/// shutdown). Not a pool timeout: that one already waited, and waiting again only doubles it.
pub fn connection_lost(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_) => true,
        sqlx::Error::Database(db_err) => {
            let fatal = db_err
                .try_downcast_ref::<PgDatabaseError>()
                .is_some_and(|pg| matches!(pg.severity(), PgSeverity::Fatal | PgSeverity::Panic));
            let code = db_err.code().unwrap_or_default();
            fatal || code.starts_with("08") || code.starts_with("57P")
        }
        _ => false,
    }
}
